/* Convolutions and nearest upsampling for the VAE decoders (models.md §9; §11.14: Wan/Qwen causal
 * convs zero-pad kt−1 frames in front; `nearest` = `nearest-exact` at 2×).
 *
 *  - qd_cpu_conv2d: x [N, C, H, W] ⊛ w [O, C, kh, kw] (+ bias [O]) → y [N, O, Ho, Wo]; stride and pad
 *    are the last two entries of qd_conv_args (symmetric zero padding), groups = 1.
 *  - qd_cpu_conv3d: x [N, C, T, H, W] ⊛ w [O, C, kt, kh, kw]. With causal_time the time axis is padded
 *    with kt−1 zero frames in front and none behind (Wan's CausalConv3d); pad[0] must then be 0 or the
 *    module's nominal (kt−1)/2, which Wan turns into that front padding. Without it, pad[0] is
 *    symmetric like the spatial pads.
 *  - qd_cpu_upsample_nearest: the last two dims × factor.
 *
 * Fast path: oneDNN's forward convolution (the "honest fastest" route on this machine: its brgemm
 * kernels reach the same bf16/f32 GEMM rates as its matmul, and it handles 3-D and asymmetric
 * padding natively). When x and w are both BF16 it runs in bf16 with f32 accumulation and rounds once
 * into y (BF16) or writes f32 (F32 y); any other mix runs in f32 (inputs widened first). oneDNN's
 * blocked layouts are reached through reorders of x, w and y, which cost O(size) against the conv's
 * O(size·C·k³); oneDNN's own primitive cache makes the per-call creation cheap for repeated shapes.
 * Generic path (QDIT_CPU_ISA=generic, non-x86, or oneDNN refusing a shape): im2col of one output row
 * tile at a time (C·kt·kh·kw × 64 columns, so memory never scales with the image) times the f32
 * weights, in plain C. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>

#include "backend/cpu/ops_internal.h"
#include "core/threads.h"

typedef struct {
    int64_t N, C, T, H, W;
    int64_t O, kt, kh, kw;
    int64_t To, Ho, Wo;
    int64_t st, sh, sw;   /* strides */
    int64_t pt0, pt1;     /* time padding front/back */
    int64_t ph, pw;       /* spatial padding, both sides */
    bool is3d;
} conv_geom;

/* ------------------------------------------------------------------------------------------------ */
/* generic: im2col tiles × f32 weights                                                               */

#define WT 64 /* output columns per im2col tile */

static qd_status conv_generic(const conv_geom *g, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, qd_tensor *y) {
    int64_t K = g->C * g->kt * g->kh * g->kw;
    float *wf = malloc(sizeof(float) * (size_t)(g->O * K));
    float *bf = malloc(sizeof(float) * (size_t)g->O);
    if (!wf || !bf) {
        free(wf), free(bf);
        return qd_fail(QD_ENOMEM, "cpu conv: cannot allocate %lld weights as f32", (long long)(g->O * K));
    }
    qd_cpu_to_f32(w, 0, g->O * K, wf);
    if (bias) qd_cpu_to_f32(bias, 0, g->O, bf);
    else memset(bf, 0, sizeof(float) * (size_t)g->O);
    int64_t tiles = (g->Wo + WT - 1) / WT, units = g->N * g->To * g->Ho * tiles;
    int64_t plane = g->T * g->H * g->W, oplane = g->To * g->Ho * g->Wo;
    int failed = 0;
#pragma omp parallel num_threads(qd_threads_for(units * WT * g->O * K, QD_GRAIN_MACS))
    {
        float *col = malloc(sizeof(float) * (size_t)(K * WT)), *acc = malloc(sizeof(float) * (size_t)(g->O * WT));
        float *xrow = malloc(sizeof(float) * (size_t)(g->W > 0 ? g->W : 1));
        if (!col || !acc || !xrow) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t u = 0; u < units; u++) {
            if (!col || !acc || !xrow) continue;
            int64_t tile = u % tiles, r = u / tiles, ho = r % g->Ho, to = (r / g->Ho) % g->To, n = r / (g->Ho * g->To);
            int64_t wo0 = tile * WT, nw = g->Wo - wo0 < WT ? g->Wo - wo0 : WT;
            /* col[(c, dt, dh, dw)][j] = x[n, c, t, h, w] or 0 outside */
            for (int64_t c = 0; c < g->C; c++) {
                for (int64_t dt = 0; dt < g->kt; dt++) {
                    int64_t t = to * g->st - g->pt0 + dt;
                    for (int64_t dh = 0; dh < g->kh; dh++) {
                        int64_t h = ho * g->sh - g->ph + dh;
                        bool inside = t >= 0 && t < g->T && h >= 0 && h < g->H;
                        if (inside) qd_cpu_to_f32(x, (n * g->C + c) * plane + (t * g->H + h) * g->W, g->W, xrow);
                        for (int64_t dw = 0; dw < g->kw; dw++) {
                            float *cr = col + ((c * g->kt + dt) * g->kh * g->kw + dh * g->kw + dw) * WT;
                            for (int64_t j = 0; j < nw; j++) {
                                int64_t wi = (wo0 + j) * g->sw - g->pw + dw;
                                cr[j] = inside && wi >= 0 && wi < g->W ? xrow[wi] : 0.0f;
                            }
                        }
                    }
                }
            }
            for (int64_t o = 0; o < g->O; o++) {
                float *a = acc + o * WT;
                for (int64_t j = 0; j < nw; j++) a[j] = bf[o];
                const float *wr = wf + o * K;
                for (int64_t k = 0; k < K; k++) {
                    float wv = wr[k];
                    const float *cr = col + k * WT;
                    for (int64_t j = 0; j < nw; j++) a[j] += wv * cr[j];
                }
                qd_cpu_from_f32(y, (n * g->O + o) * oplane + (to * g->Ho + ho) * g->Wo + wo0, nw, a);
            }
        }
        free(col), free(acc), free(xrow);
    }
    free(wf), free(bf);
    if (failed) return qd_fail(QD_ENOMEM, "cpu conv: cannot allocate im2col tiles of %lld×%d floats", (long long)K, WT);
    return QD_OK;
}

/* ------------------------------------------------------------------------------------------------ */
/* oneDNN                                                                                            */

static dnnl_engine_t dnnl_eng;
static pthread_once_t dnnl_once = PTHREAD_ONCE_INIT;
static void dnnl_init(void) {
    if (dnnl_engine_create(&dnnl_eng, dnnl_cpu, 0) != dnnl_success) dnnl_eng = NULL;
}

/* A tensor's data in dtype `want` (F32 or BF16): its own memory when it already is, else a widened f32
 * copy the caller frees (*owned). */
static void *as_dtype(const qd_tensor *t, qd_dtype want, void **owned) {
    *owned = NULL;
    if (t->dtype == want) return t->data;
    int64_t n = qd_tensor_elements(t);
    float *f = qd_cpu_alloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!f) return NULL;
    qd_cpu_to_f32(t, 0, n, f);
    *owned = f;
    return f;
}

/* Runs src (user layout) → reorder → dst (primitive layout); returns a status. */
static dnnl_status_t dnnl_reorder_run(dnnl_stream_t st, dnnl_memory_t from, dnnl_memory_t to) {
    const dnnl_memory_desc_t *fm, *tm;
    dnnl_status_t e;
    if ((e = dnnl_memory_get_memory_desc(from, &fm)) || (e = dnnl_memory_get_memory_desc(to, &tm))) return e;
    dnnl_primitive_desc_t pd;
    if ((e = dnnl_reorder_primitive_desc_create(&pd, fm, dnnl_eng, tm, dnnl_eng, NULL))) return e;
    dnnl_primitive_t p;
    e = dnnl_primitive_create(&p, pd);
    dnnl_primitive_desc_destroy(pd);
    if (e) return e;
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    e = dnnl_primitive_execute(p, st, 2, args);
    if (!e) e = dnnl_stream_wait(st);
    dnnl_primitive_destroy(p);
    return e;
}

/* Returns QD_OK, or QD_EUNSUPPORTED when oneDNN refuses (the caller then runs the generic path). */
static qd_status conv_onednn(const conv_geom *g, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, qd_tensor *y) {
    pthread_once(&dnnl_once, dnnl_init);
    if (!dnnl_eng) return QD_EUNSUPPORTED;
    bool bf = x->dtype == QD_DTYPE_BF16 && w->dtype == QD_DTYPE_BF16;
    qd_dtype cdt = bf ? QD_DTYPE_BF16 : QD_DTYPE_F32;
    qd_dtype ddt = bf && y->dtype == QD_DTYPE_BF16 ? QD_DTYPE_BF16 : QD_DTYPE_F32;
    dnnl_data_type_t dc = bf ? dnnl_bf16 : dnnl_f32, dd = ddt == QD_DTYPE_BF16 ? dnnl_bf16 : dnnl_f32;
    void *xo = NULL, *wo = NULL, *bo = NULL, *yo = NULL;
    void *xs = as_dtype(x, cdt, &xo), *ws = as_dtype(w, cdt, &wo), *bs = NULL, *ys = y->data;
    qd_status ret = QD_EUNSUPPORTED;
    dnnl_stream_t st = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t mx = NULL, mw = NULL, mb = NULL, my = NULL, px = NULL, pw = NULL, py = NULL;
    if (!xs || !ws) {
        ret = qd_fail(QD_ENOMEM, "cpu conv: cannot widen inputs to f32");
        goto out;
    }
    if (bias) {
        bs = as_dtype(bias, QD_DTYPE_F32, &bo);
        if (!bs) {
            ret = qd_fail(QD_ENOMEM, "cpu conv: cannot widen the bias");
            goto out;
        }
    }
    if (y->dtype != ddt) {
        yo = qd_cpu_alloc(sizeof(float) * (size_t)qd_tensor_elements(y));
        if (!yo) {
            ret = qd_fail(QD_ENOMEM, "cpu conv: cannot allocate an f32 output");
            goto out;
        }
        ys = yo;
    }
    int nd = g->is3d ? 5 : 4;
    dnnl_dims_t xd, wd, yd, bd = {g->O}, strides, pl, pr;
    if (g->is3d) {
        int64_t a[5] = {g->N, g->C, g->T, g->H, g->W}, b[5] = {g->O, g->C, g->kt, g->kh, g->kw},
                c[5] = {g->N, g->O, g->To, g->Ho, g->Wo};
        for (int i = 0; i < 5; i++) xd[i] = a[i], wd[i] = b[i], yd[i] = c[i];
        strides[0] = g->st, strides[1] = g->sh, strides[2] = g->sw;
        pl[0] = g->pt0, pl[1] = g->ph, pl[2] = g->pw;
        pr[0] = g->pt1, pr[1] = g->ph, pr[2] = g->pw;
    } else {
        int64_t a[4] = {g->N, g->C, g->H, g->W}, b[4] = {g->O, g->C, g->kh, g->kw}, c[4] = {g->N, g->O, g->Ho, g->Wo};
        for (int i = 0; i < 4; i++) xd[i] = a[i], wd[i] = b[i], yd[i] = c[i];
        strides[0] = g->sh, strides[1] = g->sw;
        pl[0] = pr[0] = g->ph, pl[1] = pr[1] = g->pw;
    }
    dnnl_format_tag_t plain = g->is3d ? dnnl_abcde : dnnl_abcd;
    dnnl_memory_desc_t ux, uw, uy, ub, ax, aw, ay;
    if (dnnl_memory_desc_init_by_tag(&ux, nd, xd, dc, plain) || dnnl_memory_desc_init_by_tag(&uw, nd, wd, dc, plain) ||
        dnnl_memory_desc_init_by_tag(&uy, nd, yd, dd, plain) || dnnl_memory_desc_init_by_tag(&ub, 1, bd, dnnl_f32, dnnl_a) ||
        dnnl_memory_desc_init_by_tag(&ax, nd, xd, dc, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&aw, nd, wd, dc, dnnl_format_tag_any) ||
        dnnl_memory_desc_init_by_tag(&ay, nd, yd, dd, dnnl_format_tag_any)) {
        goto out;
    }
    dnnl_convolution_desc_t cd;
    if (dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &ax, &aw, bias ? &ub : NULL,
                                           &ay, strides, pl, pr) ||
        dnnl_primitive_desc_create(&pd, &cd, NULL, dnnl_eng, NULL) || dnnl_primitive_create(&prim, pd) ||
        dnnl_stream_create(&st, dnnl_eng, dnnl_stream_default_flags)) {
        goto out;
    }
    const dnnl_memory_desc_t *kx = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *kw = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    const dnnl_memory_desc_t *ky = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    if (dnnl_memory_create(&mx, &ux, dnnl_eng, xs) || dnnl_memory_create(&mw, &uw, dnnl_eng, ws) ||
        dnnl_memory_create(&my, &uy, dnnl_eng, ys) || (bias && dnnl_memory_create(&mb, &ub, dnnl_eng, bs))) {
        goto out;
    }
    /* the primitive's layouts: the user memory itself when they agree, else a reordered copy */
    if (dnnl_memory_desc_equal(kx, &ux)) px = mx;
    else if (dnnl_memory_create(&px, kx, dnnl_eng, DNNL_MEMORY_ALLOCATE) || dnnl_reorder_run(st, mx, px)) goto out;
    if (dnnl_memory_desc_equal(kw, &uw)) pw = mw;
    else if (dnnl_memory_create(&pw, kw, dnnl_eng, DNNL_MEMORY_ALLOCATE) || dnnl_reorder_run(st, mw, pw)) goto out;
    if (dnnl_memory_desc_equal(ky, &uy)) py = my;
    else if (dnnl_memory_create(&py, ky, dnnl_eng, DNNL_MEMORY_ALLOCATE)) goto out;
    dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, px}, {DNNL_ARG_WEIGHTS, pw}, {DNNL_ARG_DST, py}, {DNNL_ARG_BIAS, mb}};
    if (dnnl_primitive_execute(prim, st, bias ? 4 : 3, args) || dnnl_stream_wait(st)) goto out;
    if (py != my && dnnl_reorder_run(st, py, my)) goto out;
    if (yo) qd_cpu_from_f32(y, 0, qd_tensor_elements(y), yo);
    ret = QD_OK;
out:
    if (px && px != mx) dnnl_memory_destroy(px);
    if (pw && pw != mw) dnnl_memory_destroy(pw);
    if (py && py != my) dnnl_memory_destroy(py);
    if (mx) dnnl_memory_destroy(mx);
    if (mw) dnnl_memory_destroy(mw);
    if (my) dnnl_memory_destroy(my);
    if (mb) dnnl_memory_destroy(mb);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (st) dnnl_stream_destroy(st);
    qd_cpu_free(xo), qd_cpu_free(wo), qd_cpu_free(bo), qd_cpu_free(yo);
    return ret;
}

/* ------------------------------------------------------------------------------------------------ */
/* entry points                                                                                      */

static qd_status conv_run(const char *op, bool is3d, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias,
                          const qd_conv_args *c, qd_tensor *y) {
    qd_status s;
    if ((s = qd_cpu_check_float(op, "x", x)) || (s = qd_cpu_check_float(op, "w", w)) || (s = qd_cpu_check_float(op, "y", y))) {
        return s;
    }
    if (!c) return qd_fail(QD_EINVAL, "cpu %s: conv args are required", op);
    int rank = is3d ? 5 : 4;
    char sx[128], sw[128], sy[128];
    const char *xl = is3d ? "[N, C, T, H, W]" : "[N, C, H, W]", *wl = is3d ? "[O, C, kt, kh, kw]" : "[O, C, kh, kw]";
    if (x->rank != rank || w->rank != rank || y->rank != rank || w->shape[1] != x->shape[1]) {
        return qd_fail(QD_EINVAL, "cpu %s: x must be %s, w %s with the same C, y %s; got x %s, w %s, y %s", op, xl, wl,
                       is3d ? "[N, O, To, Ho, Wo]" : "[N, O, Ho, Wo]", qd_cpu_shape_str(x, sx, sizeof sx),
                       qd_cpu_shape_str(w, sw, sizeof sw), qd_cpu_shape_str(y, sy, sizeof sy));
    }
    if (x->data == y->data) return qd_fail(QD_EINVAL, "cpu %s: y must not share x's buffer", op);
    conv_geom g = {0};
    g.is3d = is3d;
    g.N = x->shape[0], g.C = x->shape[1], g.O = w->shape[0];
    g.T = is3d ? x->shape[2] : 1, g.kt = is3d ? w->shape[2] : 1;
    g.H = x->shape[rank - 2], g.W = x->shape[rank - 1], g.kh = w->shape[rank - 2], g.kw = w->shape[rank - 1];
    g.sh = c->stride[1], g.sw = c->stride[2], g.ph = c->pad[1], g.pw = c->pad[2];
    g.st = is3d ? c->stride[0] : 1;
    if (g.sh < 1 || g.sw < 1 || g.st < 1 || g.ph < 0 || g.pw < 0 || (is3d && c->pad[0] < 0)) {
        return qd_fail(QD_EINVAL, "cpu %s: strides must be ≥ 1 and pads ≥ 0 (stride %lld,%lld,%lld pad %lld,%lld,%lld)", op,
                       (long long)c->stride[0], (long long)c->stride[1], (long long)c->stride[2], (long long)c->pad[0],
                       (long long)c->pad[1], (long long)c->pad[2]);
    }
    if (g.kt < 1 || g.kh < 1 || g.kw < 1 || g.C < 1 || g.O < 1) {
        return qd_fail(QD_EINVAL, "cpu %s: w %s must have nonzero dims", op, qd_cpu_shape_str(w, sw, sizeof sw));
    }
    if (is3d && c->causal_time) {
        if (c->pad[0] != 0 && 2 * c->pad[0] != g.kt - 1) {
            return qd_fail(QD_EINVAL,
                           "cpu %s: causal_time pads kt-1 = %lld frames in front; pad[0] must be 0 or %lld/2, got %lld", op,
                           (long long)(g.kt - 1), (long long)(g.kt - 1), (long long)c->pad[0]);
        }
        g.pt0 = g.kt - 1, g.pt1 = 0;
    } else if (is3d) {
        g.pt0 = g.pt1 = c->pad[0];
    }
    g.To = (g.T + g.pt0 + g.pt1 - g.kt) / g.st + 1;
    g.Ho = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
    g.Wo = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
    if (g.T + g.pt0 + g.pt1 < g.kt || g.H + 2 * g.ph < g.kh || g.W + 2 * g.pw < g.kw) {
        return qd_fail(QD_EINVAL, "cpu %s: kernel %s is larger than the padded input %s", op, qd_cpu_shape_str(w, sw, sizeof sw),
                       qd_cpu_shape_str(x, sx, sizeof sx));
    }
    bool shape_ok = y->shape[0] == g.N && y->shape[1] == g.O && y->shape[rank - 2] == g.Ho && y->shape[rank - 1] == g.Wo &&
                    (!is3d || y->shape[2] == g.To);
    if (!shape_ok) {
        if (is3d) {
            return qd_fail(QD_EINVAL, "cpu %s: y must be [%lld, %lld, %lld, %lld, %lld] for x %s and w %s, got %s", op,
                           (long long)g.N, (long long)g.O, (long long)g.To, (long long)g.Ho, (long long)g.Wo,
                           qd_cpu_shape_str(x, sx, sizeof sx), qd_cpu_shape_str(w, sw, sizeof sw),
                           qd_cpu_shape_str(y, sy, sizeof sy));
        }
        return qd_fail(QD_EINVAL, "cpu %s: y must be [%lld, %lld, %lld, %lld] for x %s and w %s, got %s", op, (long long)g.N,
                       (long long)g.O, (long long)g.Ho, (long long)g.Wo, qd_cpu_shape_str(x, sx, sizeof sx),
                       qd_cpu_shape_str(w, sw, sizeof sw), qd_cpu_shape_str(y, sy, sizeof sy));
    }
    if (bias) {
        if ((s = qd_cpu_check_float(op, "bias", bias))) return s;
        if (bias->rank != 1 || bias->shape[0] != g.O) {
            return qd_fail(QD_EINVAL, "cpu %s: bias must be [%lld], got %s", op, (long long)g.O, qd_cpu_shape_str(bias, sx, sizeof sx));
        }
    }
    if (g.N == 0) return QD_OK;
#if defined(__x86_64__)
    /* oneDNN dispatches on the CPU itself; honour QDIT_CPU_ISA=generic by staying in plain C then */
    const qd_cpu_isa *isa = qd_cpu_isa_get();
    if (isa->avx2 || isa->avx512f) {
        s = conv_onednn(&g, x, w, bias, y);
        if (s != QD_EUNSUPPORTED) return s;
    }
#endif
    return conv_generic(&g, x, w, bias, y);
}

qd_status qd_cpu_conv2d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                        qd_tensor *y) {
    (void)b;
    return conv_run("conv2d", false, x, w, bias, c, y);
}

qd_status qd_cpu_conv3d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                        qd_tensor *y) {
    (void)b;
    return conv_run("conv3d", true, x, w, bias, c, y);
}

/* ------------------------------------------------------------------------------------------------ */
/* nearest upsampling of the last two dims                                                           */

qd_status qd_cpu_upsample_nearest(qd_backend *be, const qd_tensor *x, int factor, qd_tensor *y) {
    (void)be;
    qd_status s;
    if ((s = qd_cpu_check_float("upsample_nearest", "x", x)) || (s = qd_cpu_check_float("upsample_nearest", "y", y))) return s;
    char sx[128], sy[128];
    if (factor < 1) return qd_fail(QD_EINVAL, "cpu upsample_nearest: factor must be ≥ 1, got %d", factor);
    bool ok = x->rank >= 2 && y->rank == x->rank;
    for (int i = 0; ok && i < x->rank; i++) ok = y->shape[i] == x->shape[i] * (i >= x->rank - 2 ? factor : 1);
    if (!ok) {
        return qd_fail(QD_EINVAL, "cpu upsample_nearest: y must be x %s with its last two dims × %d, got %s",
                       qd_cpu_shape_str(x, sx, sizeof sx), factor, qd_cpu_shape_str(y, sy, sizeof sy));
    }
    if (x->data == y->data && qd_tensor_elements(x) > 0) return qd_fail(QD_EINVAL, "cpu upsample_nearest: y must not share x's buffer");
    int64_t H = x->shape[x->rank - 2], W = x->shape[x->rank - 1], planes = qd_tensor_elements(x) / (H * W > 0 ? H * W : 1);
    if (H * W == 0 || planes == 0) return QD_OK;
    int64_t rows = planes * H, Wy = W * factor;
    size_t esz = (size_t)qd_dtype_bits(y->dtype) / 8;
    bool same = x->dtype == y->dtype;
    int failed = 0;
#pragma omp parallel num_threads(qd_threads_for(rows * Wy * factor, QD_GRAIN_ELEMS))
    {
        float *bi = malloc(sizeof(float) * (size_t)W), *bo = malloc(sizeof(float) * (size_t)Wy);
        if (!bi || !bo) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!bi || !bo) continue;
            int64_t yrow0 = (r / H) * H * factor + (r % H) * factor; /* first output row of this input row */
            char *dst = (char *)y->data + (size_t)(yrow0 * Wy) * esz;
            if (same && esz == 2) {
                const uint16_t *src = (const uint16_t *)x->data + r * W;
                uint16_t *d = (uint16_t *)dst;
                for (int64_t j = 0; j < W; j++) {
                    for (int k = 0; k < factor; k++) d[j * factor + k] = src[j];
                }
            } else if (same && esz == 4) {
                const float *src = (const float *)x->data + r * W;
                float *d = (float *)dst;
                for (int64_t j = 0; j < W; j++) {
                    for (int k = 0; k < factor; k++) d[j * factor + k] = src[j];
                }
            } else {
                const float *in = qd_cpu_in_f32(x, r * W, W, bi);
                for (int64_t j = 0; j < W; j++) {
                    for (int k = 0; k < factor; k++) bo[j * factor + k] = in[j];
                }
                qd_cpu_out_commit(y, yrow0 * Wy, Wy, bo);
            }
            /* the other factor−1 output rows are copies of the first */
            for (int k = 1; k < factor; k++) memcpy(dst + (size_t)(k * Wy) * esz, dst, (size_t)Wy * esz);
        }
        free(bi), free(bo);
    }
    if (failed) return qd_fail(QD_ENOMEM, "cpu upsample_nearest: cannot allocate row buffers");
    return QD_OK;
}
