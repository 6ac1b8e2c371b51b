/* qdit convert fp8 (see fp8.h). */
#include "convert/fp8.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/output.h"
#include "core/codec.h"
#include "core/log.h"
#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"
#include "io/safetensors.h"

#define E4M3_MAX 448.0f

bool qd_fp8_convert_selects(const char *name) {
    static const char *const keep[] = {"layernorm", "embed", "router", "mlp.gate.", "norm", "lm_head", "eh_proj", "net"};
    if (!strstr(name, "weight") || !strcmp(name, "proj_out.weight")) return false;
    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++)
        if (strstr(name, keep[i])) return false;
    return true;
}

static bool quantizable(const qd_st_tensor *t) {
    return qd_fp8_convert_selects(t->name) && t->rank == 2 && t->shape[0] > 0 && t->shape[1] > 0 &&
           (t->dtype == QD_DTYPE_BF16 || t->dtype == QD_DTYPE_F16 || t->dtype == QD_DTYPE_F32);
}

/* "<m>.weight" → "<m>.weight_scale[_inv]"; every ".weight" replaced, as Python's str.replace does */
static char *replace_all(const char *s, const char *from, const char *to) {
    size_t n = 0, lf = strlen(from), lt = strlen(to);
    for (const char *p = strstr(s, from); p; p = strstr(p + lf, from)) n++;
    char *out = malloc(strlen(s) + n * (lt > lf ? lt - lf : 0) + 1);
    if (!out) return NULL;
    char *o = out;
    for (const char *p = s;;) {
        const char *q = strstr(p, from);
        if (!q) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(q - p));
        o += q - p;
        memcpy(o, to, lt);
        o += lt;
        p = q + lf;
    }
    return out;
}

static void scale_shape(const qd_convert_fp8_args *a, int64_t n, int64_t k, int *rank, int64_t *shape) {
    if (a->strategy == QD_FP8_TENSOR) {
        *rank = 1, shape[0] = 1;
    } else if (a->strategy == QD_FP8_CHANNEL) {
        *rank = 2, shape[0] = n, shape[1] = 1;
    } else {
        /* [⌈N/BN⌉, ⌈K/BK⌉], squeezed as torch's squeeze() does */
        const int64_t full[2] = {(n + a->block_n - 1) / a->block_n, (k + a->block_k - 1) / a->block_k};
        *rank = 0;
        for (int i = 0; i < 2; i++)
            if (full[i] != 1) shape[(*rank)++] = full[i];
    }
}

/* quantize one tensor and put its codes and scales into the writer */
static qd_status quantize_put(const qd_convert_fp8_args *a, const qd_st_file *f, const qd_st_tensor *t, const char *scale_name,
                              qd_st_writer *w) {
    const int64_t n = t->shape[0], k = t->shape[1];
    const size_t es = (size_t)qd_dtype_bits(t->dtype) / 8;
    const uint8_t *src = qd_st_data(f, t);
    const int64_t rows = a->strategy == QD_FP8_BLOCK ? a->block_n : 1; /* rows decoded at a time */
    const int64_t gk = a->strategy == QD_FP8_BLOCK ? (k + a->block_k - 1) / a->block_k : 1;
    const int64_t nscale = a->strategy == QD_FP8_TENSOR ? 1 : a->strategy == QD_FP8_CHANNEL ? n : ((n + a->block_n - 1) / a->block_n) * gk;
    float *x = malloc(sizeof(float) * (size_t)(rows * k));
    uint8_t *q = malloc((size_t)(rows * k));
    float *sc = malloc(sizeof(float) * (size_t)nscale);
    qd_status s = x && q && sc ? QD_OK : qd_fail(QD_ENOMEM, "tensor '%s': cannot allocate", t->name);
    float tensor_scale = 0;
    if (!s && a->strategy == QD_FP8_TENSOR) {
        float amax = 0;
        for (int64_t r = 0; r < n; r++) {
            qd_decode_row(t->dtype, src + (size_t)(r * k) * es, x, (size_t)k);
            for (int64_t j = 0; j < k; j++) amax = fmaxf(amax, fabsf(x[j]));
        }
        tensor_scale = fmaxf(amax, 1e-12f) / E4M3_MAX;
        sc[0] = tensor_scale;
    }
    for (int64_t r0 = 0; !s && r0 < n; r0 += rows) {
        const int64_t rn = n - r0 < rows ? n - r0 : rows;
        qd_decode_row(t->dtype, src + (size_t)(r0 * k) * es, x, (size_t)(rn * k));
        if (a->strategy == QD_FP8_BLOCK) {
            const int64_t bi = r0 / a->block_n;
            for (int64_t g = 0; g < gk; g++) {
                const int64_t c0 = g * a->block_k, c1 = c0 + a->block_k < k ? c0 + a->block_k : k;
                float amax = 0; /* the padded tile's zeros do not change the max of |W| */
                for (int64_t r = 0; r < rn; r++)
                    for (int64_t c = c0; c < c1; c++) amax = fmaxf(amax, fabsf(x[r * k + c]));
                const float bs = amax / E4M3_MAX;
                sc[bi * gk + g] = bs;
                for (int64_t r = 0; r < rn; r++)
                    for (int64_t c = c0; c < c1; c++) q[r * k + c] = bs > 0 ? qd_f32_to_e4m3(x[r * k + c] / bs) : 0;
            }
        } else {
            float rs = tensor_scale;
            if (a->strategy == QD_FP8_CHANNEL) {
                float amax = 0;
                for (int64_t c = 0; c < k; c++) amax = fmaxf(amax, fabsf(x[c]));
                rs = fmaxf(amax, 1e-12f) / E4M3_MAX;
                sc[r0] = rs;
            }
            for (int64_t c = 0; c < k; c++) q[c] = qd_f32_to_e4m3(x[c] / rs); /* saturates at ±448 = clamp */
        }
        s = qd_st_writer_put_part(w, t->name, q, (uint64_t)(rn * k));
    }
    if (!s) s = qd_st_writer_put(w, scale_name, sc, sizeof(float) * (size_t)nscale);
    free(x), free(q), free(sc);
    return s;
}

/* one input shard → the output shard of the same name; records names in the index and the kept modules */
static qd_status convert_file(const qd_convert_fp8_args *a, const char *out_dir, const char *fname, json_t *weight_map, json_t *kept,
                              uint64_t *bytes, int *quantized, qd_progress *pr, int64_t *done) {
    char *in = qd_path_join(a->model_dir, fname), *out = qd_path_join(out_dir, fname);
    qd_st_file *f = NULL;
    qd_st_writer *w = NULL;
    char **scale_names = NULL;
    qd_status s = in && out ? qd_st_open(in, &f) : qd_fail(QD_ENOMEM, "cannot allocate");
    if (!s) s = qd_st_writer_create(out, &w);
    if (!s && !(scale_names = calloc(f->n_tensors + 1, sizeof *scale_names))) s = qd_fail(QD_ENOMEM, "cannot allocate");
    const char *suffix = a->strategy == QD_FP8_BLOCK ? ".weight_scale_inv" : ".weight_scale";
    for (size_t i = 0; !s && i < f->n_tensors; i++) {
        const qd_st_tensor *t = &f->tensors[i];
        if (t->dtype == QD_DTYPE_F8_E4M3 || t->dtype == QD_DTYPE_F8_E5M2 || strstr(t->name, ".weight_scale") || strstr(t->name, "input_scale"))
            s = qd_fail(QD_EFORMAT, "%s: already holds '%s' (%s): a quantized checkpoint; convert a BF16 one", in, t->name, qd_dtype_name(t->dtype));
    }
    for (size_t i = 0; !s && i < f->n_tensors; i++) {
        const qd_st_tensor *t = &f->tensors[i];
        if (quantizable(t)) {
            int sr = 0;
            int64_t ss[2] = {0, 0};
            scale_shape(a, t->shape[0], t->shape[1], &sr, ss);
            if (!(scale_names[i] = replace_all(t->name, ".weight", suffix))) s = qd_fail(QD_ENOMEM, "cannot allocate");
            if (!s && qd_st_find(f, scale_names[i]))
                s = qd_fail(QD_EFORMAT, "%s: already holds '%s' (an FP8 checkpoint? convert a BF16 one)", in, scale_names[i]);
            if (!s) s = qd_st_writer_add(w, t->name, QD_DTYPE_F8_E4M3, 2, t->shape);
            if (!s) s = qd_st_writer_add(w, scale_names[i], QD_DTYPE_F32, sr, ss);
            if (!s) {
                json_object_set_new(weight_map, t->name, json_string(fname));
                json_object_set_new(weight_map, scale_names[i], json_string(fname));
                *bytes += t->elements + sizeof(float) * (uint64_t)(sr == 0 ? 1 : sr == 1 ? ss[0] : ss[0] * ss[1]);
                (*quantized)++;
            }
        } else {
            if (qd_fp8_convert_selects(t->name)) qd_log(QD_LOG_INFO, "convert fp8: '%s' (%s, rank %d) stays as it is", t->name, qd_dtype_name(t->dtype), t->rank);
            s = qd_st_writer_add(w, t->name, t->dtype, t->rank, t->shape);
            char *mod = s ? NULL : replace_all(t->name, ".weight", "");
            if (!s && !mod) s = qd_fail(QD_ENOMEM, "cannot allocate");
            if (!s) {
                json_object_set_new(kept, mod, json_true());
                json_object_set_new(weight_map, t->name, json_string(fname));
                *bytes += t->end - t->begin;
            }
            free(mod);
        }
    }
    if (!s) s = qd_st_writer_meta(w, "format", "pt");
    if (!s) s = qd_st_writer_begin(w);
    for (size_t i = 0; !s && i < f->n_tensors; i++) {
        const qd_st_tensor *t = &f->tensors[i];
        s = scale_names[i] ? quantize_put(a, f, t, scale_names[i], w) : qd_st_writer_put(w, t->name, qd_st_data(f, t), t->end - t->begin);
        qd_release_mapped(qd_st_data(f, t), t->end - t->begin); /* memory: about one tensor */
        if (scale_names[i]) qd_progress_step(pr, ++*done, *bytes);
    }
    if (!s) {
        s = qd_st_writer_finish(w);
        w = NULL;
    }
    if (w) qd_st_writer_abort(w);
    for (size_t i = 0; scale_names && i < f->n_tensors; i++) free(scale_names[i]);
    free(scale_names);
    qd_st_close(f);
    free(in), free(out);
    return s;
}

/* the quantization_config SGLang's converter writes for this strategy */
static json_t *quant_config(const qd_convert_fp8_args *a, json_t *kept_list) {
    if (a->strategy != QD_FP8_CHANNEL) {
        json_t *q = json_pack("{s:s, s:s, s:s}", "activation_scheme", "dynamic", "fmt", "e4m3", "quant_method", "fp8");
        if (q && a->strategy == QD_FP8_BLOCK) json_object_set_new(q, "weight_block_size", json_pack("[i, i]", a->block_n, a->block_k));
        if (q && json_array_size(kept_list)) json_object_set(q, "modules_to_not_convert", kept_list);
        return q;
    }
    json_t *group = json_pack(
        "{s:{s:n, s:n, s:b, s:n, s:i, s:n, s:{}, s:s, s:b, s:s}, s:n, s:[s], s:{s:n, s:n, s:b, s:n, s:i, s:s, s:{}, s:s, s:b, s:s}}",
        "input_activations", "actorder", "block_structure", "dynamic", 1, "group_size", "num_bits", 8, "observer", "observer_kwargs",
        "strategy", "token", "symmetric", 1, "type", "float", "output_activations", "targets", "Linear", "weights", "actorder",
        "block_structure", "dynamic", 0, "group_size", "num_bits", 8, "observer", "minmax", "observer_kwargs", "strategy", "channel",
        "symmetric", 1, "type", "float");
    if (!group) return NULL;
    return json_pack("{s:{s:o}, s:s, s:O, s:s, s:s}", "config_groups", "group_0", group, "format", "float-quantized", "ignore", kept_list,
                     "quant_method", "compressed-tensors", "quantization_status", "compressed");
}

qd_status qd_convert_fp8(const qd_convert_fp8_args *a) {
    if (!a->model_dir) return qd_fail(QD_EINVAL, "convert fp8: --model-dir is required (the BF16 model folder)");
    if (!a->save_dir) return qd_fail(QD_EINVAL, "convert fp8: --save-dir is required (where the FP8 folder goes)");
    if (!qd_is_dir(a->model_dir)) return qd_fail(QD_ENOTFOUND, "--model-dir %s: not a folder", a->model_dir);
    if (a->strategy == QD_FP8_BLOCK && (a->block_n < 1 || a->block_k < 1 || a->block_n > 65536 || a->block_k > 65536))
        return qd_fail(QD_EINVAL, "--block-size %d %d: expected two positive sizes (e.g. 128 128)", a->block_n, a->block_k);
    char **files = NULL;
    size_t nf = 0;
    if (qd_list_files(a->model_dir, ".safetensors", &files, &nf)) return qd_fail(QD_EIO, "--model-dir %s: cannot list it", a->model_dir);
    qd_status s = nf ? QD_OK : qd_fail(QD_ENOTFOUND, "--model-dir %s: no .safetensors files", a->model_dir);
    qd_out_dir od = {0};
    if (!s) s = qd_out_dir_begin("--save-dir", a->save_dir, a->overwrite, NULL, &od);
    json_t *weight_map = json_object(), *kept = json_object();
    uint64_t bytes = 0;
    int quantized = 0;
    int64_t done = 0;
    qd_progress pr;
    qd_progress_start(&pr, "fp8", 0);
    for (size_t i = 0; !s && i < nf; i++) {
        qd_log(QD_LOG_INFO, "convert fp8: %s (%zu of %zu)", files[i], i + 1, nf);
        s = convert_file(a, od.tmp, files[i], weight_map, kept, &bytes, &quantized, &pr, &done);
    }
    qd_progress_end(&pr);
    /* modules_to_not_convert / ignore: every tensor left as it was, ".weight" dropped, sorted */
    json_t *kept_list = json_array();
    const char *key;
    json_t *v;
    size_t nk = json_object_size(kept);
    const char **names = calloc(nk + 1, sizeof *names);
    size_t j = 0;
    json_object_foreach(kept, key, v) names[j++] = key;
    for (size_t x = 1; x < nk; x++)
        for (size_t y = x; y > 0 && strcmp(names[y - 1], names[y]) > 0; y--) {
            const char *tmp = names[y];
            names[y] = names[y - 1], names[y - 1] = tmp;
        }
    for (size_t x = 0; x < nk; x++) json_array_append_new(kept_list, json_string(names[x]));
    free(names);
    json_t *qc = s ? NULL : quant_config(a, kept_list);
    if (!s && !qc) s = qd_fail(QD_ENOMEM, "convert fp8: cannot build quantization_config");
    /* config.json: the source's, with quantization_config */
    char *cin = qd_path_join(a->model_dir, "config.json"), *cout = s ? NULL : qd_path_join(od.tmp, "config.json");
    if (!s && qd_is_file(cin)) {
        json_t *cfg = NULL;
        s = qd_json_load_object(cin, &cfg);
        if (!s) {
            json_object_set(cfg, "quantization_config", qc);
            if (json_dump_file(cfg, cout, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) s = qd_fail(QD_EIO, "%s: cannot write it", cout);
        }
        json_decref(cfg);
    }
    char *idx = s ? NULL : qd_path_join(od.tmp, "model.safetensors.index.json");
    if (!s) {
        json_t *index = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)bytes, "weight_map", weight_map);
        if (!index || json_dump_file(index, idx, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) s = qd_fail(QD_EIO, "%s: cannot write it", idx);
        json_decref(index);
    }
    if (!s) s = qd_out_dir_commit(&od);
    else qd_out_dir_abort(&od);
    if (!s) {
        const char *how = a->strategy == QD_FP8_TENSOR ? "tensor" : a->strategy == QD_FP8_CHANNEL ? "channel" : "block";
        printf("convert fp8: %d weights quantized (per %s), %zu tensors kept as they were, %zu file(s) in %s\n", quantized, how, nk, nf,
               a->save_dir);
        json_t *st = json_pack("{s:i, s:I, s:I, s:s, s:I}", "quantized_weights", quantized, "kept_tensors", (json_int_t)nk, "output_files",
                               (json_int_t)nf, "strategy", how, "total_bytes", (json_int_t)bytes);
        if (st) qd_print_stats(st);
        json_decref(st);
    }
    free(cin), free(cout), free(idx);
    json_decref(qc), json_decref(kept_list), json_decref(weight_map), json_decref(kept);
    qd_free_names(files, nf);
    return s;
}
