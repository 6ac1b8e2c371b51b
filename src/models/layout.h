/* How a model's diffusers linears are stored in a checkpoint, for code that reads the checkpoint layer by
 * layer without running the model (`qdit convert dequantize`). Most modules are stored under their own
 * diffusers name and need no entry; a layout lists the others, next to the model that loads them
 * (flux.c, zimage.c), as groups:
 *   parts    the checkpoint modules of the group, with the logical sizes the model needs (an SVDQuant
 *            layer may be stored padded to multiples of 128) and the rules the model binds them by
 *            (AWQ modulation chunks, unsigned activations after GELU; formats.md §5.4, §5.6);
 *   targets  the diffusers modules the group makes, with their shapes;
 *   pieces   which rows of a part's logical block go where in a target: fused layers split by rows
 *            (Nunchaku qkv_proj → to_q, to_k, to_v), split layers joined by columns (FLUX single-block
 *            out_proj + mlp_fc2 → proj_out: the target's bias is the sum of the parts' biases, since
 *            proj_out(cat(a, m)) = out_proj(a) + mlp_fc2(m)).
 * Renames map non-linear tensors stored under other names (Nunchaku's block-level norm_q) to theirs. */
#ifndef QD_MODELS_LAYOUT_H
#define QD_MODELS_LAYOUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "models/model.h"

#define QD_LAYOUT_NAME 192
#define QD_LAYOUT_MAX 4

typedef struct {
    char module[QD_LAYOUT_NAME]; /* the checkpoint module */
    int64_t in, out;             /* the logical sizes */
    bool padded;                 /* an SVDQuant part may be stored wider (N, K padded to 128) */
    bool after_gelu;             /* SVDQuant int4 fc2: activations quantized unsigned, shift in the bias */
    int chunks;                  /* > 0: AWQ modulation layer, rows interleaved over that many chunks */
} qd_layout_part;

typedef struct {
    char name[QD_LAYOUT_NAME]; /* the diffusers module */
    int64_t in, out;
} qd_layout_target;

typedef struct {
    int part, target;
    int64_t part_row0, rows;          /* rows [part_row0, +rows) of the part, all its logical columns */
    int64_t target_row0, target_col0; /* land at this corner of the target */
} qd_layout_piece;

typedef struct {
    int n_parts, n_targets, n_pieces;
    qd_layout_part parts[QD_LAYOUT_MAX];
    qd_layout_target targets[QD_LAYOUT_MAX];
    qd_layout_piece pieces[QD_LAYOUT_MAX];
} qd_layout_group;

typedef struct {
    char from[QD_LAYOUT_NAME], to[QD_LAYOUT_NAME];
} qd_layout_rename;

typedef struct qd_layout {
    qd_layout_group *groups;
    size_t n_groups, cap_groups;
    qd_layout_rename *renames;
    size_t n_renames, cap_renames;
} qd_layout;

/* The layout of the transformer `class_name` (config.json `_class_name`) over ctx's checkpoint. A class
 * without a layout function gets an empty layout (every module under its own name). */
qd_status qd_dit_layout(const qd_model_ctx *ctx, const char *class_name, const json_t *cfg, const char *label, qd_layout *out);
void qd_layout_free(qd_layout *l);

/* Builders for the layout functions: a new group, a part / target of it (returns its index), a piece,
 * a rename. Names are printf formats. */
qd_status qd_layout_group_new(qd_layout *l, qd_layout_group **g);
int qd_layout_add_part(qd_layout_group *g, int64_t in, int64_t out, bool padded, bool after_gelu, int chunks,
                       const char *fmt, ...) QD_PRINTF(7, 8);
int qd_layout_add_target(qd_layout_group *g, int64_t in, int64_t out, const char *fmt, ...) QD_PRINTF(4, 5);
void qd_layout_add_piece(qd_layout_group *g, int part, int target, int64_t part_row0, int64_t rows, int64_t target_row0,
                         int64_t target_col0);
qd_status qd_layout_add_rename(qd_layout *l, const char *from, const char *to);

/* Bind a part the way the model does (no backend preparation): shape checked against its logical
 * sizes (at least those for a padded SVDQuant layer), unsigned activations set, an AWQ modulation
 * layer brought to the diffusers row order with the +1 of its scale chunks' bias taken out. */
qd_status qd_model_bind_part(const qd_model_ctx *ctx, const qd_layout_part *p, qd_linear *l);

#endif
