/* Text-to-image pipelines (see generate.h). */
#include "pipeline/generate.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/codec.h"
#include "core/log.h"
#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"
#include "io/png.h"
#include "load/repo.h"
#include "models/component.h"
#include "models/dit/flux.h"
#include "models/dit/zimage.h"
#include "models/offload.h"
#include "models/te/clip.h"
#include "models/te/llm.h"
#include "models/te/t5.h"
#include "models/vae/kl.h"
#include "pipeline/scheduler.h"
#include "pipeline/torch_randn.h"
#include "tokenize/tokenizer.h"

#define PROMPT_LIMIT 512 /* FLUX's T5 max_sequence_length, Z-Image's max_sequence_length */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static float bf16_round(float x) { return qd_bf16_to_f32(qd_f32_to_bf16(x)); }

qd_status qd_generate_noise(uint64_t seed, bool bf16, int64_t n, float *out) {
    qd_torch_generator g;
    qd_torch_generator_seed(&g, seed);
    if (!bf16) {
        qd_torch_randn_f32(&g, out, n);
        return QD_OK;
    }
    uint16_t *b = malloc(sizeof *b * (size_t)n + 2);
    if (!b) return qd_fail(QD_ENOMEM, "cannot allocate the initial latents");
    qd_status s = qd_torch_randn_bf16(&g, b, n);
    for (int64_t i = 0; !s && i < n; i++) out[i] = qd_bf16_to_f32(b[i]);
    free(b);
    return s;
}

void qd_flux_pack_latents(const float *x, int64_t C, int64_t h, int64_t w, float *out) {
    const int64_t h2 = h / 2, w2 = w / 2;
    for (int64_t i = 0; i < h2; i++)
        for (int64_t j = 0; j < w2; j++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t ph = 0; ph < 2; ph++)
                    for (int64_t pw = 0; pw < 2; pw++)
                        out[(i * w2 + j) * 4 * C + c * 4 + ph * 2 + pw] = x[(c * h + 2 * i + ph) * w + 2 * j + pw];
}

void qd_flux_unpack_latents(const float *packed, int64_t C, int64_t h, int64_t w, float *out) {
    const int64_t h2 = h / 2, w2 = w / 2;
    for (int64_t i = 0; i < h2; i++)
        for (int64_t j = 0; j < w2; j++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t ph = 0; ph < 2; ph++)
                    for (int64_t pw = 0; pw < 2; pw++)
                        out[(c * h + 2 * i + ph) * w + 2 * j + pw] = packed[(i * w2 + j) * 4 * C + c * 4 + ph * 2 + pw];
}

void qd_image_to_rgb8(const float *chw, int64_t h, int64_t w, bool bf16, uint8_t *rgb) {
    for (int64_t c = 0; c < 3; c++)
        for (int64_t p = 0; p < h * w; p++) {
            /* (x / 2 + 0.5).clamp(0, 1) in the image's dtype, then numpy's (x·255).round() in f32 */
            float v = chw[c * h * w + p] / 2.0f;
            if (bf16) v = bf16_round(v);
            v = v + 0.5f;
            if (bf16) v = bf16_round(v);
            v = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; /* NaN → 1 as well: fmin/fmax would pass it on */
            if (!(v >= 0.0f)) v = 0.0f;
            rgb[p * 3 + c] = (uint8_t)nearbyintf(v * 255.0f);
        }
}

/* ---- host ↔ device ---- */

static qd_status to_device(qd_backend *be, qd_dtype act, const float *host, int rank, const int64_t *shape, qd_tensor *t) {
    qd_tensor f = {0};
    memset(t, 0, sizeof *t);
    qd_status s = qd_tensor_new(be, &f, QD_DTYPE_F32, rank, shape);
    if (!s) s = be->ops->upload(be, &f, host);
    if (!s) s = qd_tensor_new(be, t, act, rank, shape);
    if (!s) s = be->ops->copy(be, &f, t);
    qd_tensor_free(&f);
    if (s) qd_tensor_free(t);
    return s;
}

static qd_status to_host(qd_backend *be, const qd_tensor *t, float *host) {
    qd_tensor f = {0};
    qd_status s = qd_tensor_new(be, &f, QD_DTYPE_F32, t->rank, t->shape);
    if (!s) s = be->ops->copy(be, t, &f);
    if (!s) s = be->ops->download(be, &f, host);
    qd_tensor_free(&f);
    return s;
}

/* ---- the pipeline folder ---- */

typedef enum { PIPE_FLUX, PIPE_ZIMAGE } pipe_kind;

typedef struct {
    const qd_options *o;
    const qd_generate_args *a;
    qd_repo *repo;
    pipe_kind kind;
    qd_backend *be;
    qd_dtype act;
    qd_options plain; /* o without the quantization flags: text encoders and VAE load as stored */
    qd_flow_match_config sched;
    int64_t H, W;
    int steps;
    double guidance;
    bool cfg;              /* Z-Image: a negative pass */
    char quant_desc[160];  /* the transformer's quantization, for the PNG's parameters */
    double loop_s;         /* the denoising loop alone (reported beside the stage time, which includes loading) */
} gen;

static const char *override_of(const qd_options *o, const char *name) {
    for (size_t i = 0; i < o->n_component_paths; i++)
        if (!strcmp(o->component_paths[i].component, name)) return o->component_paths[i].path;
    return NULL;
}

/* The pipeline's folder for a component (NULL when only a --<name>-path gives it), or an error naming
 * the missing component and the flag that would supply it. */
static qd_status component_dir(const gen *g, const char *name, const char **dir) {
    *dir = NULL;
    for (size_t i = 0; i < g->repo->n_components; i++)
        if (!strcmp(g->repo->components[i].name, name)) *dir = g->repo->components[i].dir;
    if (*dir && !qd_is_dir(*dir)) *dir = NULL;
    if (*dir || override_of(g->o, name)) return QD_OK;
    char flag[64];
    snprintf(flag, sizeof flag, "--%s-path", name);
    for (char *p = flag + 2; *p; p++)
        if (*p == '_') *p = '-';
    return qd_fail(QD_ENOTFOUND, "%s: the %s pipeline has no '%s' component (no %s/ folder from model_index.json), and no %s was given",
                   g->repo->root, g->repo->pipeline_class, name, name, flag);
}

/* A tokenizer or scheduler folder: the override when given, else the pipeline's. */
static qd_status plain_dir(const gen *g, const char *name, const char **dir) {
    qd_status s = component_dir(g, name, dir);
    const char *ov = override_of(g->o, name);
    if (!s && ov) *dir = ov;
    return s;
}

static qd_status check_components(const gen *g) {
    static const char *const flux[] = {"scheduler", "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "transformer", "vae"};
    static const char *const zimage[] = {"scheduler", "tokenizer", "text_encoder", "transformer", "vae"};
    const char *const *names = g->kind == PIPE_FLUX ? flux : zimage;
    size_t n = g->kind == PIPE_FLUX ? sizeof flux / sizeof *flux : sizeof zimage / sizeof *zimage;
    for (size_t i = 0; i < n; i++) {
        const char *dir;
        qd_status s = component_dir(g, names[i], &dir);
        if (s) return s;
    }
    return QD_OK;
}

static qd_status load_scheduler(gen *g) {
    const char *dir;
    qd_status s = plain_dir(g, "scheduler", &dir);
    if (s) return s;
    char *path = qd_path_join(dir, "scheduler_config.json");
    json_t *cfg = NULL;
    s = path ? qd_json_load_object(path, &cfg) : qd_fail(QD_ENOMEM, "cannot allocate");
    const char *cls = s ? NULL : qd_json_string(cfg, "_class_name");
    if (!s && cls && strcmp(cls, "FlowMatchEulerDiscreteScheduler")) {
        s = qd_fail(QD_EUNSUPPORTED, "%s: scheduler %s (qdit runs FlowMatchEulerDiscreteScheduler)", path, cls);
    }
    if (!s) s = qd_flow_match_config_parse(path, cfg, &g->sched);
    json_decref(cfg);
    free(path);
    return s;
}

/* Tokenize a prompt in a style; an error when it needs more than `limit` tokens (0: truncate silently). */
static qd_status tokenize(const gen *g, const char *component, qd_prompt_style style, const char *prompt, const char *flag,
                          size_t limit, bool pad, qd_token_ids *out) {
    const char *dir;
    qd_tokenizer *t = NULL;
    qd_status s = plain_dir(g, component, &dir);
    if (!s) s = qd_tokenizer_open(dir, &t);
    qd_prompt_opts po = qd_prompt_defaults(style);
    if (!s && limit) {
        qd_prompt_opts count = po;
        count.max_length = (size_t)1 << 30;
        count.pad = false;
        qd_token_ids all;
        s = qd_tokenize_prompt(t, &count, prompt, &all);
        if (!s && all.n > limit) {
            s = qd_fail(QD_EINVAL, "%s: the prompt is %zu tokens for %s (%s), more than the pipeline's limit of %zu; shorten it", flag,
                        all.n, component, style == QD_PROMPT_T5 ? "T5, with </s>" : "Qwen3, with its chat template", limit);
        }
        qd_token_ids_free(&all);
    }
    po.pad = pad;
    if (!s) s = qd_tokenize_prompt(t, &po, prompt, out);
    qd_tokenizer_close(t);
    return s ? qd_fail_context(s, "%s", component) : QD_OK;
}

static qd_model_ctx ctx_of(const gen *g, const qd_component_load *c) {
    return (qd_model_ctx){.backend = g->be, .ck = c->ck, .quant = &c->quant, .act = g->act, .scalars = QD_SCALARS_AS_ACTIVATIONS,
                          .random_weights = g->a->random_weights, .random_seed = g->a->random_seed};
}

/* Open a component after checking its class. */
static qd_status open_component(const gen *g, const char *name, bool quantized, const char *const *classes, size_t n_classes,
                                qd_component_load *c) {
    const char *dir;
    qd_status s = component_dir(g, name, &dir);
    if (!s) s = qd_component_load_open(quantized ? g->o : &g->plain, name, dir, g->a->random_weights, c);
    if (s) return s;
    for (size_t i = 0; i < n_classes; i++)
        if (!strcmp(c->cls, classes[i])) return QD_OK;
    s = qd_fail(QD_EUNSUPPORTED, "%s: %s is %s; the %s pipeline needs %s", c->cfg_path, name, c->cls, g->repo->pipeline_class, classes[0]);
    qd_component_load_close(c);
    return s;
}

/* The transformer (under the quantization flags), its quantization noted for the PNG's parameters. */
static qd_status open_transformer(gen *g, const char *cls, qd_component_load *c) {
    const char *const classes[] = {cls};
    qd_status s = open_component(g, "transformer", true, classes, 1, c);
    if (!s)
        snprintf(g->quant_desc, sizeof g->quant_desc, "%s", c->quant.method == QD_QM_NONE ? "none" : qd_quant_method_name(c->quant.method));
    return s;
}

/* ---- FLUX.1 ---- */

typedef struct {
    qd_tensor pooled, enc; /* [1, clip hidden], [1, 512, t5 d_model] */
    int64_t T;
} flux_text;

static qd_status flux_encode(gen *g, flux_text *out) {
    qd_token_ids clip_ids = {0}, t5_ids = {0};
    qd_status s = tokenize(g, "tokenizer", QD_PROMPT_CLIP, g->a->prompt, "--prompt", 0, true, &clip_ids);
    if (!s) s = tokenize(g, "tokenizer_2", QD_PROMPT_T5, g->a->prompt, "--prompt", PROMPT_LIMIT, true, &t5_ids);
    int64_t *ids = NULL;
    size_t n_ids = clip_ids.n > t5_ids.n ? clip_ids.n : t5_ids.n;
    if (!s && !(ids = malloc(sizeof *ids * (n_ids + 1)))) s = qd_fail(QD_ENOMEM, "cannot allocate");
    /* CLIP: pooler_output of the 77 padded ids, no mask (the pipeline passes none) */
    static const char *const clip_cls[] = {"CLIPTextModel"};
    qd_component_load c = {0};
    if (!s) s = open_component(g, "text_encoder", false, clip_cls, 1, &c);
    if (!s) {
        qd_model_ctx ctx = ctx_of(g, &c);
        qd_clip_config cc;
        qd_clip *m = NULL;
        for (size_t i = 0; i < clip_ids.n; i++) ids[i] = clip_ids.ids[i];
        s = qd_clip_config_parse(c.cfg_path, c.cfg, &cc);
        for (size_t i = 0; !s && i < clip_ids.n; i++)
            if (ids[i] >= cc.vocab) s = qd_fail(QD_EFORMAT, "%s: token id %lld is past the text encoder's vocab_size %lld", c.cfg_path, (long long)ids[i], (long long)cc.vocab);
        if (!s) s = qd_clip_load(&ctx, &cc, &m);
        if (!s) s = qd_tensor_new(g->be, &out->pooled, g->act, 2, (int64_t[]){1, cc.hidden});
        if (!s) s = qd_clip_forward(m, ids, NULL, 1, (int64_t)clip_ids.n, NULL, &out->pooled);
        qd_clip_free(m);
        if (s) s = qd_fail_context(s, "text_encoder");
    }
    qd_component_load_close(&c);
    /* T5: last_hidden_state of the 512 padded ids, no mask */
    static const char *const t5_cls[] = {"T5EncoderModel"};
    if (!s) s = open_component(g, "text_encoder_2", false, t5_cls, 1, &c);
    if (!s) {
        qd_model_ctx ctx = ctx_of(g, &c);
        qd_t5_config tc;
        qd_t5 *m = NULL;
        for (size_t i = 0; i < t5_ids.n; i++) ids[i] = t5_ids.ids[i];
        out->T = (int64_t)t5_ids.n;
        s = qd_t5_config_parse(c.cfg_path, c.cfg, &tc);
        for (size_t i = 0; !s && i < t5_ids.n; i++)
            if (ids[i] >= tc.vocab) s = qd_fail(QD_EFORMAT, "%s: token id %lld is past the text encoder's vocab_size %lld", c.cfg_path, (long long)ids[i], (long long)tc.vocab);
        if (!s) s = qd_t5_load(&ctx, &tc, &m);
        if (!s) s = qd_tensor_new(g->be, &out->enc, g->act, 3, (int64_t[]){1, out->T, tc.d_model});
        if (!s) s = qd_t5_forward(m, ids, NULL, 1, out->T, &out->enc);
        qd_t5_free(m);
        if (s) s = qd_fail_context(s, "text_encoder_2");
    }
    qd_component_load_close(&c);
    free(ids);
    qd_token_ids_free(&clip_ids), qd_token_ids_free(&t5_ids);
    return s;
}

/* Denoise: latents [1, 16, h, w] (host, initial noise in) → the final latents. */
static qd_status flux_denoise(gen *g, const flux_text *txt, float *latents, int64_t h, int64_t w) {
    qd_component_load c = {0};
    qd_status s = open_transformer(g, "FluxTransformer2DModel", &c);
    if (s) return s;
    qd_model_ctx ctx = ctx_of(g, &c);
    ctx.observe = g->a->observe, ctx.observe_user = g->a->observe_user;
    ctx.offload = qd_offload_resolve(g->o, c.ck, &c.quant, g->be);
    ctx.offload_budget = (uint64_t)(g->o->dit_offload_budget_mib > 0 ? g->o->dit_offload_budget_mib : 0) << 20;
    qd_flux_config fc;
    qd_flux *m = NULL;
    const int64_t C = 16, N = (h / 2) * (w / 2), T = txt->T;
    s = qd_flux_config_parse(c.cfg_path, c.cfg, &fc);
    if (!s && (fc.in_channels != 4 * C || fc.out_channels != 4 * C || fc.joint_attention_dim != txt->enc.shape[2] ||
               fc.pooled_projection_dim != txt->pooled.shape[1])) {
        s = qd_fail(QD_EFORMAT, "%s: in/out_channels %lld/%lld, joint_attention_dim %lld, pooled_projection_dim %lld do not fit the "
                    "pipeline (64, 64, T5 d_model %lld, CLIP hidden %lld)", c.cfg_path, (long long)fc.in_channels, (long long)fc.out_channels,
                    (long long)fc.joint_attention_dim, (long long)fc.pooled_projection_dim, (long long)txt->enc.shape[2], (long long)txt->pooled.shape[1]);
    }
    if (!s) s = qd_flux_load(&ctx, &fc, &m);
    float *packed = malloc(sizeof *packed * (size_t)(N * 4 * C)), *v = malloc(sizeof *v * (size_t)(N * 4 * C));
    float *img_ids = malloc(sizeof *img_ids * (size_t)(N * 3)), *txt_ids = calloc((size_t)(T * 3), sizeof *txt_ids);
    if (!s && (!packed || !v || !img_ids || !txt_ids)) s = qd_fail(QD_ENOMEM, "cannot allocate the latents");
    qd_flow_match_schedule sch = {0};
    if (!s) {
        qd_flux_pack_latents(latents, C, h, w, packed);
        for (int64_t i = 0; i < h / 2; i++)
            for (int64_t j = 0; j < w / 2; j++) {
                float *id = img_ids + (i * (w / 2) + j) * 3;
                id[0] = 0.0f, id[1] = (float)i, id[2] = (float)j;
            }
        s = qd_flow_match_schedule_make(&g->sched, g->steps, qd_flow_match_mu(&g->sched, N), &sch);
    }
    const bool bf16 = g->act == QD_DTYPE_BF16;
    const float guidance = (float)g->guidance;
    double t0 = now_s();
    for (int i = 0; !s && i < sch.n; i++) {
        /* the pipeline passes timestep.to(latents.dtype) / 1000 */
        float t = bf16 ? bf16_round(sch.timesteps[i]) : sch.timesteps[i];
        float sigma = bf16 ? bf16_round(t / 1000.0f) : t / 1000.0f;
        qd_tensor x = {0}, y = {0};
        s = to_device(g->be, g->act, packed, 3, (int64_t[]){1, N, 4 * C}, &x);
        if (!s) s = qd_tensor_new(g->be, &y, g->act, 3, (int64_t[]){1, N, fc.out_channels});
        qd_flux_inputs in = {.hidden = &x, .encoder = &txt->enc, .pooled = &txt->pooled, .timestep = &sigma,
                             .guidance = fc.guidance_embeds ? &guidance : NULL, .img_ids = img_ids, .txt_ids = txt_ids};
        if (!s) s = qd_flux_forward(m, &in, &y);
        if (!s) s = to_host(g->be, &y, v);
        qd_tensor_free(&x), qd_tensor_free(&y);
        if (s) break;
        qd_flow_match_step(&sch, i, v, packed, N * 4 * C);
        if (bf16)
            for (int64_t k = 0; k < N * 4 * C; k++) packed[k] = bf16_round(packed[k]);
        if (g->a->progress) g->a->progress(g->a->progress_user, i + 1, sch.n, now_s() - t0);
    }
    g->loop_s = now_s() - t0;
    if (m) {
        qd_status e = qd_flux_offload_end(m); /* the device copies go before the VAE runs */
        if (!s) s = e;
    }
    if (!s) qd_flux_unpack_latents(packed, C, h, w, latents);
    qd_flow_match_schedule_free(&sch);
    free(packed), free(v), free(img_ids), free(txt_ids);
    qd_flux_free(m);
    qd_component_load_close(&c);
    return s ? qd_fail_context(s, "transformer") : QD_OK;
}

/* ---- Z-Image ---- */

/* hidden_states[-2] of the valid tokens of the chat-templated prompt: [L, hidden] */
static qd_status zimage_features(gen *g, const qd_llm_config *lc, qd_llm *m, const qd_token_ids *t, qd_tensor *out) {
    int64_t *ids = malloc(sizeof *ids * (t->n + 1));
    qd_status s = ids ? QD_OK : qd_fail(QD_ENOMEM, "cannot allocate");
    for (size_t i = 0; !s && i < t->n; i++) {
        ids[i] = t->ids[i];
        if (ids[i] >= lc->vocab) s = qd_fail(QD_EFORMAT, "token id %lld is past the text encoder's vocab_size %lld", (long long)ids[i], (long long)lc->vocab);
    }
    const int64_t L = (int64_t)t->n;
    if (!s) s = qd_tensor_new(g->be, out, g->act, 3, (int64_t[]){1, L, lc->hidden});
    if (!s) s = qd_llm_forward(m, ids, NULL, 1, L, 1, (const int[]){-2}, out);
    if (!s) qd_tensor_shape(out, out->dtype, 2, (int64_t[]){L, lc->hidden});
    free(ids);
    return s;
}

static qd_status zimage_encode(gen *g, qd_tensor *pos, qd_tensor *neg) {
    /* tokenized first, so a prompt past the limit fails before the encoder loads; unpadded: with right
       padding and causal attention the valid positions never see the pad */
    qd_token_ids tp = {0}, tn = {0};
    qd_status s = tokenize(g, "tokenizer", QD_PROMPT_QWEN3_CHAT, g->a->prompt, "--prompt", PROMPT_LIMIT, false, &tp);
    if (!s && g->cfg) {
        s = tokenize(g, "tokenizer", QD_PROMPT_QWEN3_CHAT, g->a->negative_prompt ? g->a->negative_prompt : "", "--negative-prompt",
                     PROMPT_LIMIT, false, &tn);
    }
    static const char *const cls[] = {"Qwen3Model", "Qwen3ForCausalLM"};
    qd_component_load c = {0};
    if (!s) s = open_component(g, "text_encoder", false, cls, 2, &c);
    qd_llm *m = NULL;
    if (!s) {
        qd_model_ctx ctx = ctx_of(g, &c);
        qd_llm_config lc;
        s = qd_llm_config_parse(c.cfg_path, c.cfg, &lc);
        if (!s && lc.layers < 1) s = qd_fail(QD_EFORMAT, "%s: hidden_states[-2] needs at least one layer", c.cfg_path);
        if (!s) s = qd_llm_load(&ctx, &lc, lc.layers - 1, &m);
        if (!s) s = zimage_features(g, &lc, m, &tp, pos);
        if (!s && g->cfg) s = zimage_features(g, &lc, m, &tn, neg);
        if (s) s = qd_fail_context(s, "text_encoder");
    }
    qd_llm_free(m);
    qd_component_load_close(&c);
    qd_token_ids_free(&tp), qd_token_ids_free(&tn);
    return s;
}

static qd_status zimage_denoise(gen *g, const qd_tensor *pos, const qd_tensor *neg, float *latents, int64_t h, int64_t w) {
    qd_component_load c = {0};
    qd_status s = open_transformer(g, "ZImageTransformer2DModel", &c);
    if (s) return s;
    qd_model_ctx ctx = ctx_of(g, &c);
    ctx.observe = g->a->observe, ctx.observe_user = g->a->observe_user;
    ctx.offload = qd_offload_resolve(g->o, c.ck, &c.quant, g->be);
    ctx.offload_budget = (uint64_t)(g->o->dit_offload_budget_mib > 0 ? g->o->dit_offload_budget_mib : 0) << 20;
    qd_zimage_config zc;
    qd_zimage *m = NULL;
    const int64_t C = 16, n = C * h * w;
    s = qd_zimage_config_parse(c.cfg_path, c.cfg, &zc);
    if (!s && (zc.in_channels != C || zc.cap_feat_dim != pos->shape[1])) {
        s = qd_fail(QD_EFORMAT, "%s: in_channels %lld and cap_feat_dim %lld do not fit the pipeline (16, text encoder hidden %lld)",
                    c.cfg_path, (long long)zc.in_channels, (long long)zc.cap_feat_dim, (long long)pos->shape[1]);
    }
    if (!s) s = qd_zimage_load(&ctx, &zc, &m);
    float *v = malloc(sizeof *v * (size_t)n), *vn = malloc(sizeof *vn * (size_t)n);
    if (!s && (!v || !vn)) s = qd_fail(QD_ENOMEM, "cannot allocate the latents");
    qd_flow_match_schedule sch = {0};
    /* the pipeline computes mu too, but a static-shift scheduler ignores it */
    if (!s) s = qd_flow_match_schedule_make(&g->sched, g->steps, qd_flow_match_mu(&g->sched, (h / 2) * (w / 2)), &sch);
    const float scale = (float)g->guidance;
    double t0 = now_s();
    for (int i = 0; !s && i < sch.n; i++) {
        /* the model sees (1000 − t)/1000, its input cast to the transformer's dtype */
        float t = (1000.0f - sch.timesteps[i]) / 1000.0f;
        qd_tensor x = {0}, y = {0};
        s = to_device(g->be, g->act, latents, 4, (int64_t[]){C, 1, h, w}, &x);
        if (!s) s = qd_tensor_new(g->be, &y, g->act, 4, x.shape);
        if (!s) s = qd_zimage_forward(m, &x, t, pos, &y);
        if (!s) s = to_host(g->be, &y, v);
        if (!s && g->cfg) s = qd_zimage_forward(m, &x, t, neg, &y);
        if (!s && g->cfg) s = to_host(g->be, &y, vn);
        qd_tensor_free(&x), qd_tensor_free(&y);
        if (s) break;
        /* pred = pos + s·(pos − neg), negated: the model predicts −velocity */
        for (int64_t k = 0; k < n; k++) v[k] = -(g->cfg ? v[k] + scale * (v[k] - vn[k]) : v[k]);
        qd_flow_match_step(&sch, i, v, latents, n);
        if (g->a->progress) g->a->progress(g->a->progress_user, i + 1, sch.n, now_s() - t0);
    }
    g->loop_s = now_s() - t0;
    if (m) {
        qd_status e = qd_zimage_offload_end(m); /* the device copies go before the VAE runs */
        if (!s) s = e;
    }
    qd_flow_match_schedule_free(&sch);
    free(v), free(vn);
    qd_zimage_free(m);
    qd_component_load_close(&c);
    return s ? qd_fail_context(s, "transformer") : QD_OK;
}

/* ---- decode and write ---- */

static qd_status decode(gen *g, float *latents, int64_t h, int64_t w, uint8_t *rgb) {
    static const char *const cls[] = {"AutoencoderKL"};
    qd_component_load c = {0};
    qd_status s = open_component(g, "vae", false, cls, 1, &c);
    if (s) return s;
    qd_model_ctx ctx = ctx_of(g, &c);
    qd_vae_kl_config vc;
    qd_vae_kl *m = NULL;
    s = qd_vae_kl_config_parse(c.cfg_path, c.cfg, &vc);
    if (!s && (vc.latent_channels != 16 || vc.out_channels != 3 || ((int64_t)1 << (vc.n_blocks - 1)) * h != g->H ||
               ((int64_t)1 << (vc.n_blocks - 1)) * w != g->W)) {
        s = qd_fail(QD_EFORMAT, "%s: the pipeline needs a VAE with 16 latent channels, 3 outputs and 8× upsampling (4 blocks)", c.cfg_path);
    }
    if (!s) s = qd_vae_kl_load(&ctx, &vc, &m);
    const bool bf16 = g->act == QD_DTYPE_BF16;
    const int64_t n = 16 * h * w;
    /* latents.to(vae dtype) / scaling_factor + shift_factor, each op in the VAE's dtype */
    for (int64_t k = 0; !s && k < n; k++) {
        float z = (bf16 ? bf16_round(latents[k]) : latents[k]) / (float)vc.scaling_factor;
        if (bf16) z = bf16_round(z);
        z = z + (float)vc.shift_factor;
        latents[k] = bf16 ? bf16_round(z) : z;
    }
    float *img = malloc(sizeof *img * (size_t)(3 * g->H * g->W));
    if (!s && !img) s = qd_fail(QD_ENOMEM, "cannot allocate the image");
    qd_tensor z = {0}, y = {0};
    if (!s) s = to_device(g->be, g->act, latents, 4, (int64_t[]){1, 16, h, w}, &z);
    if (!s) s = qd_tensor_new(g->be, &y, g->act, 4, (int64_t[]){1, 3, g->H, g->W});
    if (!s) s = qd_vae_kl_decode(m, &z, &y);
    if (!s) s = to_host(g->be, &y, img);
    if (!s) qd_image_to_rgb8(img, g->H, g->W, bf16, rgb);
    qd_tensor_free(&z), qd_tensor_free(&y);
    free(img);
    qd_vae_kl_free(m);
    qd_component_load_close(&c);
    return s ? qd_fail_context(s, "vae") : QD_OK;
}

static qd_status write_image(const gen *g, const uint8_t *rgb) {
    const qd_generate_args *a = g->a;
    const char *neg = a->negative_prompt && g->cfg ? a->negative_prompt : NULL;
    size_t len = strlen(a->prompt) + (neg ? strlen(neg) : 0) + strlen(g->repo->path) + 1024;
    char *text = malloc(len);
    if (!text) return qd_fail(QD_ENOMEM, "cannot allocate");
    int k = snprintf(text, len, "prompt: %s\n", a->prompt);
    if (neg) k += snprintf(text + k, len - (size_t)k, "negative_prompt: %s\n", neg);
    snprintf(text + k, len - (size_t)k,
             "seed: %llu\nsteps: %d\nguidance_scale: %g\nsize: %lldx%lld\nmodel: %s\npipeline: %s\nquantization: %s\nprecision: %s\n"
             "generator: qdit %s",
             (unsigned long long)a->seed, g->steps, g->guidance, (long long)g->W, (long long)g->H, g->repo->path, g->repo->pipeline_class,
             g->quant_desc, g->act == QD_DTYPE_BF16 ? "bf16" : "f32", QDIT_VERSION);
    qd_png_text t = {"parameters", text};
    qd_status s = qd_png_write_rgb8(a->output, g->W, g->H, rgb, &t, 1);
    free(text);
    return s;
}

/* ---- the run ---- */

static qd_status check_args(const qd_generate_args *a, int64_t H, int64_t W) {
    if (!a->prompt) return qd_fail(QD_EINVAL, "--prompt is required");
    if (!a->no_image && (!a->output || !*a->output)) return qd_fail(QD_EINVAL, "--output FILE.png is required");
    const char *names[2] = {"--height", "--width"};
    const int64_t v[2] = {H, W};
    for (int i = 0; i < 2; i++) {
        if (v[i] < 16) return qd_fail(QD_EINVAL, "%s %lld: the image side must be at least 16 pixels", names[i], (long long)v[i]);
        if (v[i] > QD_GENERATE_MAX_SIDE) {
            return qd_fail(QD_EINVAL, "%s %lld: larger than qdit's limit of %d pixels per side", names[i], (long long)v[i], QD_GENERATE_MAX_SIDE);
        }
        if (v[i] % 16) {
            return qd_fail(QD_EINVAL, "%s %lld: must be a multiple of 16 (8× VAE, then 2×2 latent patches), e.g. %lld", names[i],
                           (long long)v[i], (long long)(v[i] / 16 * 16));
        }
    }
    if (a->steps < 0 || a->steps > QD_GENERATE_MAX_STEPS) {
        return qd_fail(QD_EINVAL, "--num-inference-steps %d: expected 1 to %d", a->steps, QD_GENERATE_MAX_STEPS);
    }
    if (a->guidance >= 0 && !(a->guidance <= 100.0)) return qd_fail(QD_EINVAL, "--guidance-scale %g: expected 0 to 100", a->guidance);
    return QD_OK;
}

qd_status qd_generate_run(const qd_options *o, const qd_generate_args *a, qd_generate_report *report) {
    memset(report, 0, sizeof *report);
    gen G = {.o = o, .a = a, .H = a->height ? a->height : 1024, .W = a->width ? a->width : 1024}, *g = &G;
    qd_status s = check_args(a, g->H, g->W);
    if (!s && a->precision && strcmp(a->precision, "bf16") && strcmp(a->precision, "f32")) {
        s = qd_fail(QD_EINVAL, "--precision %s: expected bf16 or f32", a->precision);
    }
    g->act = a->precision && !strcmp(a->precision, "f32") ? QD_DTYPE_F32 : QD_DTYPE_BF16;
    int cuda_index;
    if (!s) s = qd_device_parse(a->device, &cuda_index);
    if (!s && !o->model_path) s = qd_fail(QD_EINVAL, "--model-path is required (a diffusers pipeline folder or a cached hub repo id)");
    if (!s) s = a->random_weights ? qd_repo_open_configs(o->model_path, &g->repo) : qd_repo_open(o->model_path, &g->repo);
    if (!s && (g->repo->layout != QD_LAYOUT_PIPELINE || !g->repo->pipeline_class)) {
        s = qd_fail(QD_EINVAL, "--model-path %s: not a diffusers pipeline (no model_index.json)", o->model_path);
    }
    if (!s) {
        if (!strcmp(g->repo->pipeline_class, "FluxPipeline")) g->kind = PIPE_FLUX;
        else if (!strcmp(g->repo->pipeline_class, "ZImagePipeline")) g->kind = PIPE_ZIMAGE;
        else s = qd_fail(QD_EUNSUPPORTED, "%s: qdit generate runs FluxPipeline and ZImagePipeline, not %s", o->model_path, g->repo->pipeline_class);
    }
    if (!s) {
        g->steps = a->steps ? a->steps : g->kind == PIPE_FLUX ? 28 : 8;
        g->guidance = a->guidance >= 0 ? a->guidance : g->kind == PIPE_FLUX ? 3.5 : 0.0;
        g->cfg = g->kind == PIPE_ZIMAGE && g->guidance > 0;
        if (a->negative_prompt && g->kind == PIPE_FLUX) {
            s = qd_fail(QD_EINVAL, "--negative-prompt: FluxPipeline embeds the guidance scale and takes no negative prompt (its true CFG is not supported)");
        } else if (a->negative_prompt && !g->cfg) {
            s = qd_fail(QD_EINVAL, "--negative-prompt: Z-Image uses it only with classifier-free guidance; give --guidance-scale > 0");
        }
    }
    g->plain = *o;
    g->plain.transformer_weights_path = NULL, g->plain.quantization = NULL, g->plain.n_ignored_layers = 0;
    g->plain.enable_svdquant = 0, g->plain.quantization_precision = NULL, g->plain.quantization_rank = 0;
    g->plain.quantization_act_unsigned = 0;
    if (!s) s = check_components(g);
    if (!s) s = load_scheduler(g);
    if (!s && g->kind == PIPE_FLUX && !g->sched.use_dynamic_shifting) {
        qd_log(QD_LOG_WARN, "FluxPipeline with a static-shift scheduler: sigmas shifted by %g", g->sched.shift);
    }
    if (!s) s = qd_device_backend(a->device, &g->be);

    const int64_t h = g->H / 8, w = g->W / 8, n = 16 * h * w;
    float *latents = s ? NULL : malloc(sizeof *latents * (size_t)n);
    uint8_t *rgb = s ? NULL : malloc((size_t)(3 * g->H * g->W));
    if (!s && (!latents || !rgb)) s = qd_fail(QD_ENOMEM, "cannot allocate a %lld x %lld image", (long long)g->W, (long long)g->H);
    flux_text ft = {0};
    qd_tensor pos = {0}, neg = {0};
    double t0 = now_s();
    if (!s) s = g->kind == PIPE_FLUX ? flux_encode(g, &ft) : zimage_encode(g, &pos, &neg);
    double t1 = now_s();
    /* diffusers draws the latents in prompt_embeds' dtype for FLUX, always float32 for Z-Image */
    if (!s) s = qd_generate_noise(a->seed, g->kind == PIPE_FLUX && g->act == QD_DTYPE_BF16, n, latents);
    if (!s) s = g->kind == PIPE_FLUX ? flux_denoise(g, &ft, latents, h, w) : zimage_denoise(g, &pos, &neg, latents, h, w);
    qd_tensor_free(&ft.pooled), qd_tensor_free(&ft.enc), qd_tensor_free(&pos), qd_tensor_free(&neg);
    double t2 = now_s();
    if (!s && !a->no_image) s = decode(g, latents, h, w, rgb);
    if (!s && !a->no_image) s = write_image(g, rgb);
    double t3 = now_s();
    if (!s) *report = (qd_generate_report){.encode_s = t1 - t0, .denoise_s = t2 - t1, .loop_s = g->loop_s, .decode_s = t3 - t2, .steps = g->steps,
                                           .height = g->H, .width = g->W};
    free(latents), free(rgb);
    if (g->be) g->be->ops->destroy(g->be);
    qd_repo_close(g->repo);
    return s;
}
