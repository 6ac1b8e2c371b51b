/* qdit forward (see forward.h). */
#include "models/forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/status.h"
#include "io/ckpt.h"
#include "io/fs.h"
#include "io/json.h"
#include "io/safetensors.h"
#include "load/sources.h"
#include "models/component.h"
#include "models/dit/flux.h"
#include "models/dit/zimage.h"
#include "models/offload.h"
#include "models/te/clip.h"
#include "models/te/llm.h"
#include "models/te/t5.h"
#include "models/vae/kl.h"
#include "quant/resolve.h"

/* An input as an activation tensor; F32 or integer (ids) inputs are read as floats. */
static qd_status input(qd_backend *be, const qd_st_file *io, const char *name, qd_dtype act, qd_tensor *t) {
    memset(t, 0, sizeof *t);
    const qd_st_tensor *st = qd_st_find(io, name);
    if (!st) return qd_fail(QD_EINVAL, "%s: no input named '%s'", io->path, name);
    if (st->dtype != QD_DTYPE_F32 && st->dtype != QD_DTYPE_BF16 && st->dtype != QD_DTYPE_F16) {
        return qd_fail(QD_EINVAL, "%s: input '%s' must be F32/BF16/F16, got %s", io->path, name, qd_dtype_name(st->dtype));
    }
    if (st->rank > QD_MAX_RANK) return qd_fail(QD_EINVAL, "%s: input '%s' has rank %d", io->path, name, st->rank);
    qd_tensor raw = {0};
    qd_status s = qd_tensor_new(be, &raw, st->dtype, st->rank, st->shape);
    if (!s) s = be->ops->upload(be, &raw, qd_st_data(io, st));
    if (!s) s = qd_tensor_new(be, t, act, st->rank, st->shape);
    if (!s) s = be->ops->copy(be, &raw, t);
    qd_tensor_free(&raw);
    return s;
}

/* A host f32 copy of a small input (timesteps, ids) with its element count checked. */
static qd_status host_input(const qd_st_file *io, const char *name, int64_t want_elements, float **out) {
    *out = NULL;
    const qd_st_tensor *st = qd_st_find(io, name);
    if (!st) return qd_fail(QD_EINVAL, "%s: no input named '%s'", io->path, name);
    if (want_elements >= 0 && (int64_t)st->elements != want_elements) {
        return qd_fail(QD_EINVAL, "%s: input '%s' has %llu elements, expected %lld", io->path, name,
                       (unsigned long long)st->elements, (long long)want_elements);
    }
    float *f = malloc(sizeof *f * (size_t)st->elements + 4);
    if (!f) return qd_fail(QD_ENOMEM, "cannot allocate");
    for (uint64_t i = 0; i < st->elements; i++) {
        const uint8_t *p = (const uint8_t *)qd_st_data(io, st);
        switch (st->dtype) {
        case QD_DTYPE_F32: memcpy(&f[i], p + 4 * i, 4); break;
        case QD_DTYPE_I64: {
            int64_t v;
            memcpy(&v, p + 8 * i, 8);
            f[i] = (float)v;
            break;
        }
        case QD_DTYPE_I32: {
            int32_t v;
            memcpy(&v, p + 4 * i, 4);
            f[i] = (float)v;
            break;
        }
        default:
            free(f);
            return qd_fail(QD_EINVAL, "%s: input '%s' must be F32, I32 or I64, got %s", io->path, name, qd_dtype_name(st->dtype));
        }
    }
    *out = f;
    return QD_OK;
}

/* Named outputs, written as F32 into one safetensors file. */
static qd_status write_outputs(qd_backend *be, const char *path, int n, const char *const *names, const qd_tensor *ts) {
    float *host[8] = {0};
    qd_status s = n <= 8 ? QD_OK : qd_fail(QD_EINVAL, "too many outputs");
    for (int i = 0; i < n && !s; i++) {
        const qd_tensor *t = &ts[i];
        host[i] = malloc(sizeof *host[i] * (size_t)qd_tensor_elements(t) + 4);
        if (!host[i]) s = qd_fail(QD_ENOMEM, "cannot allocate the output");
        qd_tensor f32 = {0};
        if (!s) s = qd_tensor_new(be, &f32, QD_DTYPE_F32, t->rank, t->shape);
        if (!s) s = be->ops->copy(be, t, &f32);
        if (!s) s = be->ops->download(be, &f32, host[i]);
        qd_tensor_free(&f32);
    }
    qd_st_writer *w = NULL;
    if (!s) s = qd_st_writer_create(path, &w);
    for (int i = 0; i < n && !s; i++) s = qd_st_writer_add(w, names[i], QD_DTYPE_F32, ts[i].rank, ts[i].shape);
    if (!s) s = qd_st_writer_meta(w, "producer", "qdit forward");
    for (int i = 0; i < n && !s; i++) s = qd_st_writer_put(w, names[i], host[i], sizeof *host[i] * (uint64_t)qd_tensor_elements(&ts[i]));
    if (!s) s = qd_st_writer_finish(w);
    else if (w) qd_st_writer_abort(w);
    for (int i = 0; i < n && i < 8; i++) free(host[i]);
    return s;
}

static qd_status write_output(qd_backend *be, const char *path, const char *name, const qd_tensor *t) {
    return write_outputs(be, path, 1, &name, t);
}

/* --trace-linears: every linear's input as the run shows it to an observer, in F32, kept on the host and written
   at the end as "NNNN <layer>" (call order), to find where two devices' runs of one model part */
typedef struct {
    char *name; /* "NNNN <layer>" */
    float *data;
    int rank;
    int64_t shape[QD_MAX_RANK];
} trace_entry;

typedef struct {
    qd_status s;
    int n, cap;
    trace_entry *e;
} linear_trace;

static void trace_observe(void *user, qd_backend *be, const qd_linear *l, const qd_tensor *x) {
    linear_trace *t = user;
    if (t->s) return;
    if (t->n == t->cap) {
        const int cap = t->cap ? 2 * t->cap : 64;
        trace_entry *ne = realloc(t->e, sizeof *ne * (size_t)cap);
        if (!ne) {
            t->s = qd_fail(QD_ENOMEM, "--trace-linears: cannot allocate");
            return;
        }
        t->e = ne, t->cap = cap;
    }
    const int64_t n = qd_tensor_elements(x);
    char name[320];
    snprintf(name, sizeof name, "%04d %s", t->n, l->name ? l->name : "linear");
    trace_entry e = {.name = strdup(name), .data = malloc(sizeof(float) * (size_t)(n ? n : 1)), .rank = x->rank};
    memcpy(e.shape, x->shape, sizeof e.shape);
    qd_tensor f = {0};
    t->s = e.name && e.data ? qd_tensor_new(be, &f, QD_DTYPE_F32, x->rank, x->shape) : qd_fail(QD_ENOMEM, "--trace-linears: cannot allocate");
    if (!t->s) t->s = be->ops->copy(be, x, &f);
    if (!t->s) t->s = be->ops->download(be, &f, e.data);
    qd_tensor_free(&f);
    if (t->s) free(e.name), free(e.data);
    else t->e[t->n++] = e;
}

static qd_status trace_write(const linear_trace *t, const char *path) {
    qd_st_writer *w = NULL;
    qd_status s = qd_st_writer_create(path, &w);
    for (int i = 0; i < t->n && !s; i++) s = qd_st_writer_add(w, t->e[i].name, QD_DTYPE_F32, t->e[i].rank, t->e[i].shape);
    if (!s) s = qd_st_writer_begin(w);
    for (int i = 0; i < t->n && !s; i++) {
        int64_t n = 1;
        for (int d = 0; d < t->e[i].rank; d++) n *= t->e[i].shape[d];
        s = qd_st_writer_put(w, t->e[i].name, t->e[i].data, sizeof(float) * (uint64_t)n);
    }
    if (s && w) qd_st_writer_abort(w);
    else if (w) s = qd_st_writer_finish(w);
    return s;
}

static void trace_free(linear_trace *t) {
    for (int i = 0; i < t->n; i++) free(t->e[i].name), free(t->e[i].data);
    free(t->e);
}

/* Token ids [B, L] (I64 or I32) as host int64, and an optional `attention_mask` of the same shape. */
static qd_status ids_input(const qd_st_file *io, int64_t **ids, int64_t **mask, int64_t *B, int64_t *L) {
    *ids = *mask = NULL;
    const char *names[2] = {"input_ids", "attention_mask"};
    int64_t **dst[2] = {ids, mask};
    for (int k = 0; k < 2; k++) {
        const qd_st_tensor *st = qd_st_find(io, names[k]);
        if (!st && k == 1) break;
        if (!st) return qd_fail(QD_EINVAL, "%s: no input named 'input_ids'", io->path);
        if ((st->dtype != QD_DTYPE_I64 && st->dtype != QD_DTYPE_I32) || st->rank != 2 || st->shape[0] < 1 || st->shape[1] < 1 ||
            (k == 1 && (st->shape[0] != *B || st->shape[1] != *L))) {
            return qd_fail(QD_EINVAL, "%s: '%s' must be I64 or I32 [B, L]%s", io->path, names[k], k ? " like input_ids" : "");
        }
        if (k == 0) *B = st->shape[0], *L = st->shape[1];
        int64_t *v = malloc(sizeof *v * (size_t)st->elements);
        if (!v) return qd_fail(QD_ENOMEM, "cannot allocate '%s'", names[k]);
        const uint8_t *p = (const uint8_t *)qd_st_data(io, st);
        for (uint64_t i = 0; i < st->elements; i++) {
            if (st->dtype == QD_DTYPE_I64) memcpy(&v[i], p + 8 * i, 8);
            else {
                int32_t x;
                memcpy(&x, p + 4 * i, 4);
                v[i] = x;
            }
        }
        *dst[k] = v;
    }
    return QD_OK;
}

typedef enum { TE_NONE, TE_CLIP, TE_T5, TE_LLM } te_kind;

static te_kind te_of(const char *cls) {
    static const char *const llm[] = {"Qwen3Model", "Qwen3ForCausalLM", "Qwen2Model", "Qwen2ForCausalLM",
                                      "LlamaModel", "LlamaForCausalLM", "MistralModel", "MistralForCausalLM"};
    if (!strcmp(cls, "CLIPTextModel")) return TE_CLIP;
    if (!strcmp(cls, "T5EncoderModel") || !strcmp(cls, "UMT5EncoderModel")) return TE_T5;
    for (size_t i = 0; i < sizeof llm / sizeof *llm; i++)
        if (!strcmp(cls, llm[i])) return TE_LLM;
    return TE_NONE;
}

/* A text encoder on input_ids (and attention_mask): last_hidden_state, plus pooler_output (CLIP) or
 * hidden_states_minus2 (decoder LLMs: Z-Image's features). */
static qd_status run_text_encoder(const qd_model_ctx *ctx, te_kind kind, const json_t *cfg, const char *label, const qd_st_file *io,
                                  const char *out) {
    int64_t *ids = NULL, *mask = NULL, B = 0, L = 0;
    qd_status s = ids_input(io, &ids, &mask, &B, &L);
    qd_tensor y[2] = {{0}, {0}};
    const char *names[2] = {"last_hidden_state", NULL};
    int n = 1;
    if (!s && kind == TE_CLIP) {
        qd_clip_config c;
        qd_clip *m = NULL;
        s = qd_clip_config_parse(label, cfg, &c);
        if (!s) s = qd_clip_load(ctx, &c, &m);
        if (!s) s = qd_tensor_new(ctx->backend, &y[0], ctx->act, 3, (int64_t[]){B, L, c.hidden});
        if (!s) s = qd_tensor_new(ctx->backend, &y[1], ctx->act, 2, (int64_t[]){B, c.hidden});
        if (!s) s = qd_clip_forward(m, ids, mask, B, L, &y[0], &y[1]);
        names[1] = "pooler_output", n = 2;
        qd_clip_free(m);
    } else if (!s && kind == TE_T5) {
        qd_t5_config c;
        qd_t5 *m = NULL;
        s = qd_t5_config_parse(label, cfg, &c);
        if (!s) s = qd_t5_load(ctx, &c, &m);
        if (!s) s = qd_tensor_new(ctx->backend, &y[0], ctx->act, 3, (int64_t[]){B, L, c.d_model});
        if (!s) s = qd_t5_forward(m, ids, mask, B, L, &y[0]);
        qd_t5_free(m);
    } else if (!s) {
        qd_llm_config c;
        qd_llm *m = NULL;
        s = qd_llm_config_parse(label, cfg, &c);
        if (!s) s = qd_llm_load(ctx, &c, c.layers, &m);
        if (!s) s = qd_tensor_new(ctx->backend, &y[0], ctx->act, 3, (int64_t[]){B, L, c.hidden});
        if (!s) s = qd_tensor_new(ctx->backend, &y[1], ctx->act, 3, (int64_t[]){B, L, c.hidden});
        if (!s) s = qd_llm_forward(m, ids, mask, B, L, 2, (const int[]){-1, -2}, y);
        names[1] = "hidden_states_minus2", n = 2;
        qd_llm_free(m);
    }
    if (!s) s = write_outputs(ctx->backend, out, n, names, y);
    qd_tensor_free(&y[0]), qd_tensor_free(&y[1]);
    free(ids), free(mask);
    return s;
}

static qd_status run_flux(const qd_model_ctx *ctx, const json_t *cfg, const char *label, const qd_st_file *io, const char *out) {
    qd_flux_config c;
    qd_status s = qd_flux_config_parse(label, cfg, &c);
    if (s) return s;
    qd_flux *m = NULL;
    if ((s = qd_flux_load(ctx, &c, &m))) return s;
    qd_tensor hs = {0}, enc = {0}, pooled = {0}, y = {0};
    float *ts = NULL, *gs = NULL, *img = NULL, *txt = NULL;
    if (!s) s = input(ctx->backend, io, "hidden_states", ctx->act, &hs);
    if (!s) s = input(ctx->backend, io, "encoder_hidden_states", ctx->act, &enc);
    if (!s) s = input(ctx->backend, io, "pooled_projections", ctx->act, &pooled);
    if (!s && (hs.rank != 3 || enc.rank != 3)) s = qd_fail(QD_EINVAL, "%s: hidden_states and encoder_hidden_states must be [B, N, C]", io->path);
    int64_t B = hs.shape[0], N = hs.shape[1], T = enc.shape[1];
    if (!s) s = host_input(io, "timestep", B, &ts);
    if (!s && c.guidance_embeds) s = host_input(io, "guidance", B, &gs);
    if (!s) s = host_input(io, "img_ids", N * 3, &img);
    if (!s) s = host_input(io, "txt_ids", T * 3, &txt);
    if (!s) s = qd_tensor_new(ctx->backend, &y, ctx->act, 3, (int64_t[]){B, N, c.out_channels});
    qd_flux_inputs in = {.hidden = &hs, .encoder = &enc, .pooled = &pooled, .timestep = ts, .guidance = gs, .img_ids = img, .txt_ids = txt};
    if (!s) s = qd_flux_forward(m, &in, &y);
    if (!s) s = write_output(ctx->backend, out, "output", &y);
    qd_tensor_free(&hs), qd_tensor_free(&enc), qd_tensor_free(&pooled), qd_tensor_free(&y);
    free(ts), free(gs), free(img), free(txt);
    qd_flux_free(m);
    return s;
}

static qd_status run_zimage(const qd_model_ctx *ctx, const json_t *cfg, const char *label, const qd_st_file *io, const char *out) {
    qd_zimage_config c;
    qd_status s = qd_zimage_config_parse(label, cfg, &c);
    if (s) return s;
    qd_zimage *m = NULL;
    if ((s = qd_zimage_load(ctx, &c, &m))) return s;
    qd_tensor x = {0}, cap = {0}, y = {0};
    float *t = NULL;
    if (!s) s = input(ctx->backend, io, "x", ctx->act, &x);
    if (!s) s = input(ctx->backend, io, "cap_feats", ctx->act, &cap);
    if (!s) s = host_input(io, "t", 1, &t);
    if (!s) s = qd_tensor_new(ctx->backend, &y, ctx->act, x.rank, x.shape);
    if (!s) s = qd_zimage_forward(m, &x, t[0], &cap, &y);
    if (!s) s = write_output(ctx->backend, out, "output", &y);
    qd_tensor_free(&x), qd_tensor_free(&cap), qd_tensor_free(&y);
    free(t);
    qd_zimage_free(m);
    return s;
}

static qd_status run_vae(const qd_model_ctx *ctx, const json_t *cfg, const char *label, const qd_st_file *io, const char *out,
                         bool tiled) {
    qd_vae_kl_config c;
    qd_status s = qd_vae_kl_config_parse(label, cfg, &c);
    if (s) return s;
    qd_vae_kl *m = NULL;
    if ((s = qd_vae_kl_load(ctx, &c, &m))) return s;
    qd_tensor z = {0}, y = {0};
    if (!s) s = input(ctx->backend, io, "z", ctx->act, &z);
    if (!s && z.rank != 4) s = qd_fail(QD_EINVAL, "%s: z must be [B, C, h, w]", io->path);
    int64_t scale = (int64_t)1 << (c.n_blocks - 1);
    if (!s) s = qd_tensor_new(ctx->backend, &y, ctx->act, 4, (int64_t[]){z.shape[0], c.out_channels, z.shape[2] * scale, z.shape[3] * scale});
    if (!s) s = tiled ? qd_vae_kl_decode_tiled(m, &z, &y) : qd_vae_kl_decode(m, &z, &y);
    if (!s) s = write_output(ctx->backend, out, "output", &y);
    qd_tensor_free(&z), qd_tensor_free(&y);
    qd_vae_kl_free(m);
    return s;
}

qd_status qd_forward_run(const qd_options *o, const qd_forward_args *a) {
    if (!a->component || !a->inputs || !a->output) {
        return qd_fail(QD_EINVAL, "forward needs --component DIR, --inputs FILE and --output FILE");
    }
    int cuda_index;
    if (qd_device_parse(a->device, &cuda_index)) return QD_EINVAL;
    qd_dtype act = QD_DTYPE_F32;
    if (a->precision && !strcmp(a->precision, "bf16")) act = QD_DTYPE_BF16;
    else if (a->precision && strcmp(a->precision, "f32")) return qd_fail(QD_EINVAL, "--precision %s: expected f32 or bf16", a->precision);
    qd_scalar_rounding scalars = QD_SCALARS_AS_ACTIVATIONS;
    if (a->scalars && !strcmp(a->scalars, "exact")) scalars = QD_SCALARS_EXACT;
    else if (a->scalars && !strcmp(a->scalars, "bf16")) scalars = QD_SCALARS_BF16;
    else if (a->scalars && strcmp(a->scalars, "activation")) {
        return qd_fail(QD_EINVAL, "--scalar-rounding %s: expected activation, exact or bf16", a->scalars);
    }

    /* the component: a folder, or a weights file whose folder holds config.json */
    char *dir = qd_is_dir(a->component) ? strdup(a->component) : qd_path_dirname(a->component);
    char *cfg_path = dir ? qd_path_join(dir, "config.json") : NULL;
    json_t *cfg = NULL;
    qd_status s = cfg_path ? qd_json_load_object(cfg_path, &cfg) : qd_fail(QD_ENOMEM, "cannot allocate");
    /* diffusers names the class in _class_name, transformers in architectures[0] */
    const char *cls = s ? NULL : qd_json_string(cfg, "_class_name");
    const json_t *arch = s ? NULL : json_array_get(json_object_get(cfg, "architectures"), 0);
    if (!s && !cls && json_is_string(arch)) cls = json_string_value(arch);
    if (!s && !cls) s = qd_fail(QD_EFORMAT, "%s: no _class_name or architectures, so the module is unknown", cfg_path);
    bool is_vae = cls && !strcmp(cls, "AutoencoderKL");
    te_kind te = cls ? te_of(cls) : TE_NONE;
    if (!s && a->no_act_quant && act != QD_DTYPE_F32) s = qd_fail(QD_EINVAL, "--no-act-quant runs the f32 reference: use it with --precision f32");
    if (!s && a->tiled && !is_vae) s = qd_fail(QD_EINVAL, "--tiled applies to AutoencoderKL, not %s", cls);
    if (!s && a->trace_linears && (is_vae || te)) s = qd_fail(QD_EINVAL, "--trace-linears applies to the transformers, not %s", cls);
    if (!s && !is_vae && !te && strcmp(cls, "FluxTransformer2DModel") && strcmp(cls, "ZImageTransformer2DModel")) {
        s = qd_fail(QD_EUNSUPPORTED, "%s: qdit forward runs FluxTransformer2DModel, ZImageTransformer2DModel, AutoencoderKL, "
                                     "CLIPTextModel, T5EncoderModel, UMT5EncoderModel and Qwen3/Qwen2/Llama/Mistral decoders "
                                     "(…Model, …ForCausalLM), not %s",
                    cfg_path, cls);
    }
    /* weights: transformers and text encoders take the flags (a file component is a weights override of
       its folder); a text encoder is quantized only when asked, as SGLang quantizes only the DiT */
    qd_options opts = *o;
    if (!qd_is_dir(a->component) && !opts.transformer_weights_path) opts.transformer_weights_path = a->component;
    qd_options none;
    qd_options_init(&none);
    const qd_options *use = is_vae ? &none : &opts;
    qd_component_source src = {0};
    qd_ckpt *ck = NULL;
    qd_quant_config quant;
    qd_quant_config_init(&quant);
    qd_backend *be = NULL;
    linear_trace trace = {0};
    qd_st_file *io = NULL;
    if (a->random_weights) {
        /* no checkpoint: the config alone, weights drawn in memory; --quantization applies online */
        if (!s && (o->ignored_layers[0] || o->transformer_weights_path || o->enable_svdquant == 1)) {
            s = qd_fail(QD_EINVAL, "--random-weights takes --quantization METHOD only (no weights files, no ignored layers)");
        }
        if (!s && o->quantization && !is_vae) {
            s = qd_quant_method_parse(o->quantization, &quant.method);
            quant.online = true;
            snprintf(quant.source, sizeof quant.source, "--quantization %s on random weights (online)", o->quantization);
        }
    } else {
        if (!s) s = qd_component_source_resolve(use, is_vae ? "vae" : "transformer", qd_is_dir(a->component) ? dir : NULL, &src);
        if (!s) s = qd_weight_set_open(&src.weights, &ck);
        if (!s) s = qd_quant_resolve(use, &src, ck, cls, &quant);
    }
    if (!s && quant.method != QD_QM_NONE) qd_log(QD_LOG_INFO, "%s: quantization %s (%s)", cls, qd_quant_method_name(quant.method), quant.source);
    if (!s) s = qd_st_open(a->inputs, &io);
    if (!s) s = qd_device_backend(a->device, &be);
    if (!s) {
        qd_model_ctx ctx = {.backend = be, .ck = ck, .quant = &quant, .act = act, .scalars = scalars,
                            .random_weights = a->random_weights, .random_seed = a->random_seed,
                            .reference_linears = a->no_act_quant};
        if (a->trace_linears) ctx.observe = trace_observe, ctx.observe_user = &trace;
        if (!is_vae && !te) ctx.offload = qd_offload_resolve(o, ck, &quant, be); /* the transformers */
        if (!is_vae && !te) ctx.offload_budget = (uint64_t)(o->dit_offload_budget_mib > 0 ? o->dit_offload_budget_mib : 0) << 20;
        if (is_vae) s = run_vae(&ctx, cfg, cfg_path, io, a->output, a->tiled);
        else if (te) s = run_text_encoder(&ctx, te, cfg, cfg_path, io, a->output);
        else if (!strcmp(cls, "FluxTransformer2DModel")) s = run_flux(&ctx, cfg, cfg_path, io, a->output);
        else s = run_zimage(&ctx, cfg, cfg_path, io, a->output);
        if (!s) s = trace.s;
        if (!s && a->trace_linears) s = trace_write(&trace, a->trace_linears);
    }
    trace_free(&trace);
    if (be) be->ops->destroy(be);
    qd_st_close(io);
    qd_quant_config_free(&quant);
    qd_ckpt_close(ck);
    qd_component_source_free(&src);
    json_decref(cfg);
    free(cfg_path);
    free(dir);
    return s;
}
