/* Transformer weight offload: the mode and the model glue (see offload.h). */
#include "models/offload.h"

#include <stdio.h>
#include <stdlib.h>

#include "core/log.h"
#include "core/status.h"

static double gib(uint64_t b) { return (double)b / 1073741824.0; }

qd_offload_mode qd_offload_choose(const qd_offload_inputs *in, char *why, size_t why_len, bool *warn) {
    *warn = false;
    if (why_len) why[0] = '\0';
    if (!in->backend_offloads) {
        if (in->layerwise == 1 || in->component == 1)
            snprintf(why, why_len, "%s: this backend keeps the weights in host memory already; nothing to offload",
                     in->layerwise == 1 ? "--dit-layerwise-offload" : "--dit-cpu-offload");
        return QD_OFFLOAD_MODE_NONE;
    }
    if (in->layerwise == 1) {
        snprintf(why, why_len, "--dit-layerwise-offload: the transformer's blocks stream from pinned host memory%s",
                 in->component == 1 ? " (it takes precedence over --dit-cpu-offload, as in SGLang)" : "");
        return QD_OFFLOAD_MODE_LAYERWISE;
    }
    if (in->component == 1) {
        if (in->modelopt_fp8) {
            *warn = true;
            snprintf(why, why_len, "--dit-cpu-offload: ModelOpt FP8 forbids component offload of the transformer (as SGLang); it stays "
                                   "on the device (--dit-layerwise-offload streams it instead)");
            return QD_OFFLOAD_MODE_NONE;
        }
        snprintf(why, why_len, "--dit-cpu-offload: the transformer's weights stay in pinned host memory between runs");
        return QD_OFFLOAD_MODE_COMPONENT;
    }
    if (in->layerwise == 0) return QD_OFFLOAD_MODE_NONE; /* asked to stay resident (component unset or false) */
    /* auto: stream only when the weights do not fit */
    if (in->weight_bytes && in->device_free && in->weight_bytes + QD_OFFLOAD_HEADROOM > in->device_free) {
        snprintf(why, why_len, "the transformer's %.2f GiB of weights and %.0f GiB for its steps do not fit the %.2f GiB free on the "
                               "device: its blocks stream from pinned host memory (--dit-layerwise-offload false keeps it resident)",
                 gib(in->weight_bytes), gib(QD_OFFLOAD_HEADROOM), gib(in->device_free));
        return QD_OFFLOAD_MODE_LAYERWISE;
    }
    return QD_OFFLOAD_MODE_NONE;
}

/* bits per weight of what an online method stores (scales included); 0 when not online */
static double online_bits(const qd_quant_config *q) {
    if (!q || !q->online) return 0;
    switch (q->method) {
    case QD_QM_FP8:
    case QD_QM_FP8_PER_TENSOR:
    case QD_QM_INT8: return 8.0;
    case QD_QM_MXFP8: return 8.25;
    case QD_QM_MXFP4: return 4.25;
    case QD_QM_NVFP4: return 4.5;
    default: return 0;
    }
}

uint64_t qd_offload_weight_estimate(const qd_ckpt *ck, const qd_quant_config *q) {
    if (!ck) return 0;
    const double bits = online_bits(q);
    double total = 0;
    for (size_t i = 0; i < ck->n_tensors; i++) {
        const qd_st_tensor *t = ck->entries[i].tensor;
        const double bytes = (double)(t->end - t->begin);
        const bool float_matrix = t->rank == 2 && (t->dtype == QD_DTYPE_BF16 || t->dtype == QD_DTYPE_F16 || t->dtype == QD_DTYPE_F32);
        total += bits > 0 && float_matrix ? (double)t->elements * bits / 8.0 : bytes;
    }
    return (uint64_t)total;
}

qd_offload_mode qd_offload_resolve(const qd_options *o, const qd_ckpt *ck, const qd_quant_config *q, qd_backend *be) {
    qd_offload_inputs in = {.layerwise = o->dit_layerwise_offload, .component = o->dit_cpu_offload,
                            .modelopt_fp8 = q && (q->method == QD_QM_MODELOPT || q->method == QD_QM_MODELOPT_FP8),
                            .backend_offloads = be && be->ops->weights_group && be->ops->weights_fetch && be->ops->weights_fetch_all &&
                                                be->ops->weights_evict_all && be->ops->weights_release};
    qd_memory_info mi;
    const bool auto_mode = in.layerwise < 0 && in.component != 1;
    if (auto_mode && in.backend_offloads && be->ops->memory_info && !be->ops->memory_info(be, &mi)) in.device_free = mi.device_free;
    qd_clear_error();
    if (auto_mode) in.weight_bytes = qd_offload_weight_estimate(ck, q);
    char why[512];
    bool warn;
    const qd_offload_mode m = qd_offload_choose(&in, why, sizeof why, &warn);
    if (why[0]) qd_log(warn ? QD_LOG_WARN : QD_LOG_INFO, "transformer: %s", why);
    if (m != QD_OFFLOAD_MODE_NONE && o->pin_cpu_memory == 0)
        qd_log(QD_LOG_WARN, "--pin-cpu-memory false: qdit offloads into pinned host memory all the same (a recorded step's copies "
                            "need it, and unpinned copies are synchronous)");
    return m;
}

void qd_model_offload_init(qd_model_offload *o, const qd_model_ctx *ctx, int n_blocks) {
    const qd_backend_ops *ops = ctx->backend ? ctx->backend->ops : NULL;
    const bool can = ops && ops->weights_group && ops->weights_fetch && ops->weights_fetch_all && ops->weights_evict_all && ops->weights_release;
    *o = (qd_model_offload){.be = ctx->backend, .mode = can ? ctx->offload : QD_OFFLOAD_MODE_NONE, .n_blocks = n_blocks};
    if (o->mode == QD_OFFLOAD_MODE_LAYERWISE) o->budget = ctx->offload_budget;
    o->ahead = ops && ops->linears_ahead && o->mode != QD_OFFLOAD_MODE_LAYERWISE;
}

/* the block's linears for linears_ahead (empty ones skipped) */
static qd_status keep_for_ahead(qd_model_offload *o, qd_linear *const *layers, int n) {
    qd_linear ***blocks = realloc(o->blocks, sizeof *blocks * (size_t)(o->n_ahead + 1));
    if (blocks) o->blocks = blocks;
    int *block_n = realloc(o->block_n, sizeof *block_n * (size_t)(o->n_ahead + 1));
    if (block_n) o->block_n = block_n;
    qd_linear **ls = malloc(sizeof *ls * (size_t)(n + 1));
    if (!blocks || !block_n || !ls) {
        free(ls);
        return qd_fail(QD_ENOMEM, "cannot allocate the blocks' linear lists");
    }
    int k = 0;
    for (int i = 0; i < n; i++)
        if (layers[i]->out_features > 0) ls[k++] = layers[i];
    o->blocks[o->n_ahead] = ls, o->block_n[o->n_ahead++] = k;
    return QD_OK;
}

/* layerwise with a budget: does block i (of `bytes` on the device) stay resident? */
static bool keep_resident(qd_model_offload *o, uint64_t bytes) {
    if (!o->budget || o->n_blocks <= 0) return false;
    if (!o->slot_reserve) o->slot_reserve = 2 * bytes; /* the slots hold the largest streamed block; the first is the largest */
    if (o->slot_reserve >= o->budget) return false;
    const double paced = (double)(o->budget - o->slot_reserve) * (double)(o->n + 1) / (double)o->n_blocks;
    if ((double)(o->resident_bytes + bytes) > paced) return false;
    o->resident_bytes += bytes;
    return true;
}

/* the bound layers among `layers` as one group; its backend id */
static qd_status group(qd_model_offload *o, qd_linear *const *layers, int n, int *id) {
    qd_linear **ls = malloc(sizeof *ls * (size_t)(n + 1));
    if (!ls) return qd_fail(QD_ENOMEM, "cannot allocate an offload group");
    int k = 0;
    for (int i = 0; i < n; i++)
        if (layers[i]->out_features > 0) ls[k++] = layers[i];
    qd_status s = k ? o->be->ops->weights_group(o->be, ls, k, id) : qd_fail(QD_EINVAL, "offload: a block without linears");
    free(ls);
    return s;
}

qd_status qd_model_offload_block(qd_model_offload *o, qd_linear *const *layers, int n) {
    if (o->ahead) {
        qd_status s = keep_for_ahead(o, layers, n);
        if (s) return s;
    }
    if (o->mode == QD_OFFLOAD_MODE_NONE) return QD_OK;
    if (o->n == o->cap) {
        const int cap = o->cap ? 2 * o->cap : 64;
        int *ids = realloc(o->ids, sizeof *ids * (size_t)cap);
        if (!ids) return qd_fail(QD_ENOMEM, "cannot allocate the offload groups");
        o->ids = ids, o->cap = cap;
    }
    uint64_t bytes = 0;
    for (int i = 0; i < n; i++) bytes += layers[i]->device_bytes;
    if (o->mode == QD_OFFLOAD_MODE_LAYERWISE && keep_resident(o, bytes)) {
        o->ids[o->n++] = -1;
        return QD_OK;
    }
    int id = -1;
    qd_status s = group(o, layers, n, &id);
    if (s) return s;
    /* the backend prefetches the group registered after the one fetched: streamed blocks must be its consecutive
       groups (resident blocks in between are skipped, and the prefetch overlaps their compute too) */
    int prev = -1;
    for (int i = o->n - 1; i >= 0 && prev < 0; i--) prev = o->ids[i];
    if (prev >= 0 && id != prev + 1)
        return qd_fail(QD_EINVAL, "offload: block %d became group %d after group %d; another model's groups are on this backend", o->n, id, prev);
    o->ids[o->n++] = id;
    return QD_OK;
}

qd_status qd_model_offload_rest(qd_model_offload *o, qd_linear *const *layers, int n) {
    if (o->mode == QD_OFFLOAD_MODE_LAYERWISE && o->budget) {
        int kept = 0;
        for (int i = 0; i < o->n; i++) kept += o->ids[i] < 0;
        qd_log(QD_LOG_INFO, "offload: within the %.2f GiB budget, %d of %d blocks stay resident (%.2f GiB), %d stream through two slots of %.2f GiB",
               (double)o->budget / (1 << 30), kept, o->n, (double)o->resident_bytes / (1 << 30), o->n - kept,
               (double)o->slot_reserve / 2 / (1 << 30));
    }
    if (o->mode != QD_OFFLOAD_MODE_COMPONENT) return QD_OK;
    int id;
    return group(o, layers, n, &id);
}

qd_status qd_model_offload_fetch(qd_model_offload *o, int block) {
    if (o->ahead) {
        if (block < 0 || block >= o->n_ahead) return qd_fail(QD_EINVAL, "offload: block %d of %d", block, o->n_ahead);
        qd_linear *const *next = block + 1 < o->n_ahead ? o->blocks[block + 1] : NULL;
        const int next_n = block + 1 < o->n_ahead ? o->block_n[block + 1] : 0;
        qd_status s = block == 0 ? o->be->ops->linears_ahead(o->be, o->blocks[0], o->block_n[0]) : QD_OK;
        return s ? s : o->be->ops->linears_ahead(o->be, next, next_n);
    }
    if (o->mode != QD_OFFLOAD_MODE_LAYERWISE) return QD_OK;
    if (block < 0 || block >= o->n) return qd_fail(QD_EINVAL, "offload: block %d of %d", block, o->n);
    return o->ids[block] < 0 ? QD_OK : o->be->ops->weights_fetch(o->be, o->ids[block]); /* −1: kept resident */
}

qd_status qd_model_offload_begin(qd_model_offload *o) {
    if (o->mode != QD_OFFLOAD_MODE_COMPONENT || o->uploaded) return QD_OK;
    qd_status s = o->be->ops->weights_fetch_all(o->be);
    o->uploaded = !s;
    return s;
}

qd_status qd_model_offload_end(qd_model_offload *o) {
    if (o->mode == QD_OFFLOAD_MODE_NONE) return QD_OK;
    o->uploaded = false;
    return o->be->ops->weights_evict_all(o->be);
}

void qd_model_offload_free(qd_model_offload *o) {
    if (o->mode != QD_OFFLOAD_MODE_NONE && o->be) o->be->ops->weights_release(o->be);
    for (int i = 0; i < o->n_ahead; i++) free(o->blocks[i]);
    free(o->blocks), free(o->block_n);
    free(o->ids);
    *o = (qd_model_offload){0};
}
