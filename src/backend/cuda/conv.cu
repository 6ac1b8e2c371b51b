/* Convolutions on the GPU, direct form: one thread per output element sums C·kt·kh·kw products in f32
 * (the geometry and padding rules are the CPU file's, conv.c: symmetric spatial pads; 3-D causal_time
 * pads kt−1 frames in front). This is the correct baseline for the VAE decoders; an implicit-GEMM
 * kernel on tensor cores (or cuDNN) replaces it when the VAE's time matters. */
#include "backend/cuda/cuda_internal.cuh"

typedef struct {
    int64_t N, C, O, T, H, W, kt, kh, kw, To, Ho, Wo;
    int64_t st, sh, sw, pt0, ph, pw;
} conv_geom;

__global__ void conv_kernel(const void *x, int xt, const void *w, int wt, const void *bias, int bt, void *y, int yt, conv_geom g) {
    const int64_t n = g.N * g.O * g.To * g.Ho * g.Wo;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
        int64_t r = i;
        const int64_t ox = r % g.Wo;
        r /= g.Wo;
        const int64_t oy = r % g.Ho;
        r /= g.Ho;
        const int64_t ot = r % g.To;
        r /= g.To;
        const int64_t o = r % g.O, nb = r / g.O;
        float acc = bias ? qd_ld(bias, bt, o) : 0.0f;
        for (int64_t c = 0; c < g.C; c++)
            for (int64_t dt = 0; dt < g.kt; dt++) {
                const int64_t it = ot * g.st - g.pt0 + dt;
                if (it < 0 || it >= g.T) continue;
                for (int64_t dy = 0; dy < g.kh; dy++) {
                    const int64_t iy = oy * g.sh - g.ph + dy;
                    if (iy < 0 || iy >= g.H) continue;
                    const int64_t xrow = (((nb * g.C + c) * g.T + it) * g.H + iy) * g.W;
                    const int64_t wrow = (((o * g.C + c) * g.kt + dt) * g.kh + dy) * g.kw;
                    for (int64_t dx = 0; dx < g.kw; dx++) {
                        const int64_t ix = ox * g.sw - g.pw + dx;
                        if (ix < 0 || ix >= g.W) continue;
                        acc = fmaf(qd_ld(x, xt, xrow + ix), qd_ld(w, wt, wrow + dx), acc);
                    }
                }
            }
        qd_st(y, yt, i, acc);
    }
}

static qd_status conv(qd_backend *b, bool is3d, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                      qd_tensor *y) {
    const char *op = is3d ? "conv3d" : "conv2d";
    const int rank = is3d ? 5 : 4;
    if (!c) return qd_fail(QD_EINVAL, "cuda %s: conv args are required", op);
    if (x->rank != rank || w->rank != rank || y->rank != rank || w->shape[1] != x->shape[1] || !qd_cuda_float_dtype(x->dtype) ||
        !qd_cuda_float_dtype(w->dtype) || !qd_cuda_float_dtype(y->dtype) || (bias && !qd_cuda_float_dtype(bias->dtype)))
        return qd_fail(QD_EINVAL, "cuda %s: x %s, w %s with the same C, float dtypes", op, is3d ? "[N, C, T, H, W]" : "[N, C, H, W]",
                       is3d ? "[O, C, kt, kh, kw]" : "[O, C, kh, kw]");
    if (x->data == y->data) return qd_fail(QD_EINVAL, "cuda %s: y must not share x's buffer", op);
    conv_geom g = {};
    g.N = x->shape[0], g.C = x->shape[1], g.O = w->shape[0];
    g.T = is3d ? x->shape[2] : 1, g.kt = is3d ? w->shape[2] : 1;
    g.H = x->shape[rank - 2], g.W = x->shape[rank - 1], g.kh = w->shape[rank - 2], g.kw = w->shape[rank - 1];
    g.sh = c->stride[1], g.sw = c->stride[2], g.ph = c->pad[1], g.pw = c->pad[2], g.st = is3d ? c->stride[0] : 1;
    if (g.sh < 1 || g.sw < 1 || g.st < 1 || g.ph < 0 || g.pw < 0 || (is3d && c->pad[0] < 0))
        return qd_fail(QD_EINVAL, "cuda %s: strides must be ≥ 1 and pads ≥ 0", op);
    if (bias && qd_tensor_elements(bias) != g.O) return qd_fail(QD_EINVAL, "cuda %s: bias must have O = %lld elements", op, (long long)g.O);
    int64_t pt1 = 0;
    if (is3d && c->causal_time) {
        if (c->pad[0] != 0 && 2 * c->pad[0] != g.kt - 1)
            return qd_fail(QD_EINVAL, "cuda %s: causal_time pads kt-1 = %lld frames in front; pad[0] must be 0 or %lld/2, got %lld", op,
                           (long long)(g.kt - 1), (long long)(g.kt - 1), (long long)c->pad[0]);
        g.pt0 = g.kt - 1;
    } else if (is3d) {
        g.pt0 = pt1 = c->pad[0];
    }
    if (g.T + g.pt0 + pt1 < g.kt || g.H + 2 * g.ph < g.kh || g.W + 2 * g.pw < g.kw)
        return qd_fail(QD_EINVAL, "cuda %s: the kernel is larger than the padded input", op);
    g.To = (g.T + g.pt0 + pt1 - g.kt) / g.st + 1;
    g.Ho = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
    g.Wo = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
    if (y->shape[0] != g.N || y->shape[1] != g.O || y->shape[rank - 2] != g.Ho || y->shape[rank - 1] != g.Wo || (is3d && y->shape[2] != g.To))
        return qd_fail(QD_EINVAL, "cuda %s: y must be [%lld, %lld, %s%lld, %lld]", op, (long long)g.N, (long long)g.O, is3d ? "To, " : "",
                       (long long)g.Ho, (long long)g.Wo);
    const int64_t n = qd_tensor_elements(y);
    if (!n) return QD_OK;
    conv_kernel<<<qd_cuda_blocks(n, 128), 128, 0, qd_cuda_of(b)->stream>>>(x->data, x->dtype, w->data, w->dtype, bias ? bias->data : NULL,
                                                                           bias ? bias->dtype : 0, y->data, y->dtype, g);
    QD_CUDA_LAUNCHED(op);
    return QD_OK;
}

extern "C" qd_status qd_cuda_conv2d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                                    qd_tensor *y) {
    return conv(b, false, x, w, bias, c, y);
}

extern "C" qd_status qd_cuda_conv3d(qd_backend *b, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const qd_conv_args *c,
                                    qd_tensor *y) {
    return conv(b, true, x, w, bias, c, y);
}
