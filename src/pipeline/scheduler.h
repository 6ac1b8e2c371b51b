/* FlowMatchEulerDiscreteScheduler, as the FLUX.1 and Z-Image pipelines drive it
 * (../shared/spec/models.md §2.5, §3.4, §11.11): sigmas linspace(1, 1/n, n), cast to f32, shifted —
 * exponentially with mu from the sequence length (use_dynamic_shifting) or statically
 * (kσ/(1+(k−1)σ)) — optionally stretched so the last sigma is shift_terminal, then a terminal 0.
 * The arithmetic follows PyTorch's f32 tensor ops in the same order, so the tables match diffusers to
 * the last digit or one ulp. */
#ifndef QD_PIPELINE_SCHEDULER_H
#define QD_PIPELINE_SCHEDULER_H

#include <jansson.h>
#include <stdbool.h>

#include "qdit.h"

typedef struct {
    int num_train_timesteps;   /* 1000 */
    double shift;              /* static shift k (3.0) */
    bool use_dynamic_shifting; /* FLUX.1: mu from the image sequence length */
    double base_shift, max_shift;
    int base_image_seq_len, max_image_seq_len;
    double shift_terminal;     /* 0: off */
} qd_flow_match_config;

typedef struct {
    int n;           /* steps */
    float *sigmas;   /* n + 1 values, the last 0 */
    float *timesteps; /* n values, σ·num_train_timesteps */
} qd_flow_match_schedule;

/* Defaults of diffusers' FlowMatchEulerDiscreteScheduler. */
void qd_flow_match_config_init(qd_flow_match_config *c);
/* Read a scheduler_config.json object (unknown keys ignored; wrong types are errors naming the key). */
qd_status qd_flow_match_config_parse(const char *label, const json_t *obj, qd_flow_match_config *c);

/* FLUX's calculate_shift: mu = N·m + b on the line through (base_len, base_shift), (max_len, max_shift). */
double qd_flow_match_mu(const qd_flow_match_config *c, int64_t image_seq_len);

/* The schedule for n steps; mu is used only with dynamic shifting. */
qd_status qd_flow_match_schedule_make(const qd_flow_match_config *c, int n, double mu, qd_flow_match_schedule *out);
void qd_flow_match_schedule_free(qd_flow_match_schedule *s);

/* One Euler step in f32: x ← x + (σ[i+1] − σ[i])·v. */
void qd_flow_match_step(const qd_flow_match_schedule *s, int i, const float *v, float *x, int64_t n);

#endif
