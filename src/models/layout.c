/* Checkpoint layouts of the transformers (see layout.h): builders, the model-side binding rules of
 * layout parts, and the dispatch by class. */
#include "models/layout.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "models/dit/flux.h"
#include "models/dit/zimage.h"
#include "quant/packing.h"

qd_status qd_layout_group_new(qd_layout *l, qd_layout_group **g) {
    if (l->n_groups == l->cap_groups) {
        size_t cap = l->cap_groups ? 2 * l->cap_groups : 64;
        qd_layout_group *ng = realloc(l->groups, cap * sizeof *ng);
        if (!ng) return qd_fail(QD_ENOMEM, "cannot allocate the checkpoint layout");
        l->groups = ng, l->cap_groups = cap;
    }
    *g = &l->groups[l->n_groups++];
    memset(*g, 0, sizeof **g);
    return QD_OK;
}

int qd_layout_add_part(qd_layout_group *g, int64_t in, int64_t out, bool padded, bool after_gelu, int chunks, const char *fmt, ...) {
    if (g->n_parts == QD_LAYOUT_MAX) return -1;
    qd_layout_part *p = &g->parts[g->n_parts];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->module, sizeof p->module, fmt, ap);
    va_end(ap);
    p->in = in, p->out = out, p->padded = padded, p->after_gelu = after_gelu, p->chunks = chunks;
    return g->n_parts++;
}

int qd_layout_add_target(qd_layout_group *g, int64_t in, int64_t out, const char *fmt, ...) {
    if (g->n_targets == QD_LAYOUT_MAX) return -1;
    qd_layout_target *t = &g->targets[g->n_targets];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->in = in, t->out = out;
    return g->n_targets++;
}

void qd_layout_add_piece(qd_layout_group *g, int part, int target, int64_t part_row0, int64_t rows, int64_t target_row0,
                         int64_t target_col0) {
    if (g->n_pieces == QD_LAYOUT_MAX || part < 0 || target < 0) return;
    g->pieces[g->n_pieces++] = (qd_layout_piece){.part = part, .target = target, .part_row0 = part_row0, .rows = rows,
                                                 .target_row0 = target_row0, .target_col0 = target_col0};
}

qd_status qd_layout_add_rename(qd_layout *l, const char *from, const char *to) {
    if (l->n_renames == l->cap_renames) {
        size_t cap = l->cap_renames ? 2 * l->cap_renames : 64;
        qd_layout_rename *nr = realloc(l->renames, cap * sizeof *nr);
        if (!nr) return qd_fail(QD_ENOMEM, "cannot allocate the checkpoint layout");
        l->renames = nr, l->cap_renames = cap;
    }
    qd_layout_rename *r = &l->renames[l->n_renames++];
    snprintf(r->from, sizeof r->from, "%s", from);
    snprintf(r->to, sizeof r->to, "%s", to);
    return QD_OK;
}

void qd_layout_free(qd_layout *l) {
    free(l->groups);
    free(l->renames);
    memset(l, 0, sizeof *l);
}

qd_status qd_dit_layout(const qd_model_ctx *ctx, const char *class_name, const json_t *cfg, const char *label, qd_layout *out) {
    memset(out, 0, sizeof *out);
    qd_status s = QD_OK;
    if (class_name && !strcmp(class_name, "FluxTransformer2DModel")) {
        qd_flux_config c;
        s = qd_flux_config_parse(label, cfg, &c);
        if (!s) s = qd_flux_layout(ctx, &c, out);
    } else if (class_name && !strcmp(class_name, "ZImageTransformer2DModel")) {
        qd_zimage_config c;
        s = qd_zimage_config_parse(label, cfg, &c);
        if (!s) s = qd_zimage_layout(ctx, &c, out);
    }
    if (s) qd_layout_free(out);
    return s;
}

/* ---- binding a part ---- */

/* A copy of view v with its N rows (v viewed as [N][row bytes]) de-interleaved from the AWQ modulation
 * order (stored row i·C + c = logical row c·(N/C) + i, formats.md §5.6). */
static qd_status view_deinterleave(const char *layer, qd_view *v, int64_t n, int64_t chunks) {
    if (!v->data) return QD_OK;
    const int64_t el = qd_view_elements(v);
    const size_t row = (size_t)(el / n) * (size_t)qd_dtype_bits(v->dtype) / 8;
    if (el % n || !row) return qd_fail(QD_EFORMAT, "layer '%s': a %lld-element tensor does not split into %lld rows", layer, (long long)el, (long long)n);
    void *buf = malloc(row * (size_t)n);
    if (!buf) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its de-interleaved rows", layer);
    qd_status s = qd_awq_mod_deinterleave(v->data, 1, n, row, chunks, buf);
    if (s) {
        free(buf);
        return qd_fail_context(s, "layer '%s'", layer);
    }
    qd_view nv = *v;
    nv.data = nv.owned = buf;
    qd_view_free(v);
    *v = nv;
    return QD_OK;
}

/* An AWQ W4A16 modulation linear (FLUX norm1.linear: 6 chunks, single norm.linear: 3) brought to the
 * diffusers row order, with the +1 that the converter baked into the bias of the scale chunks (c = 1 and
 * c = C − 2) taken out again: afterwards it computes exactly the diffusers layer's function. */
static qd_status awq_mod_to_logical(qd_linear *l, int64_t chunks) {
    const char *name = l->name ? l->name : "?";
    const int64_t n = l->out_features;
    if (n % chunks) return qd_fail(QD_EFORMAT, "layer '%s': %lld output rows do not split into %lld modulation chunks", name, (long long)n, (long long)chunks);
    qd_status s = QD_OK;
    if (!s) s = view_deinterleave(name, &l->weight, n, chunks);
    if (!s) s = view_deinterleave(name, &l->scale, n, chunks);
    if (!s) s = view_deinterleave(name, &l->zeros, n, chunks);
    if (!s && !l->bias.data) {
        return qd_fail(QD_EFORMAT, "layer '%s': a Nunchaku AWQ modulation layer carries a bias (with +1 on its scale chunks); "
                       "'%s.bias' is missing", name, name);
    }
    if (!s) s = view_deinterleave(name, &l->bias, n, chunks);
    if (s) return s;
    float *b = malloc(sizeof *b * (size_t)n);
    if (!b) return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its bias", name);
    const int64_t per = n / chunks;
    for (int64_t j = 0; j < n; j++) {
        const int64_t c = j / per;
        b[j] = qd_view_get(&l->bias, j, 0) - ((c == 1 || c == chunks - 2) ? 1.0f : 0.0f);
    }
    qd_view_free(&l->bias);
    l->bias = (qd_view){.dtype = QD_DTYPE_F32, .rank = 1, .shape = {n}, .data = b, .owned = b};
    return QD_OK;
}

qd_status qd_model_bind_part(const qd_model_ctx *ctx, const qd_layout_part *p, qd_linear *l) {
    qd_status s = qd_model_bind(ctx, p->module, p->in, p->out, l);
    if (s) return s;
    const bool svdq = l->scheme == QD_SCHEME_SVDQ_INT4 || l->scheme == QD_SCHEME_SVDQ_NVFP4;
    const bool wide = svdq && p->padded;
    const bool fits = wide ? l->in_features >= p->in && l->out_features >= p->out : l->in_features == p->in && l->out_features == p->out;
    if (!fits) {
        s = qd_fail(QD_EFORMAT, "layer '%s' (%s) is %lld → %lld; the config needs %lld → %lld%s", p->module, l->scheme_name,
                    (long long)l->in_features, (long long)l->out_features, (long long)p->in, (long long)p->out,
                    wide ? " (or larger: SVDQuant pads to multiples of 128)" : "");
    }
    if (!s && svdq) l->act_unsigned = p->after_gelu && l->scheme == QD_SCHEME_SVDQ_INT4;
    if (!s && p->chunks > 0 && l->scheme == QD_SCHEME_AWQ_W4A16) s = awq_mod_to_logical(l, p->chunks);
    if (s) qd_linear_free(l);
    return s;
}
