/* Convolutions on the GPU (the geometry and padding rules are the CPU file's, conv.c: symmetric spatial pads;
 * 3-D causal_time pads kt−1 frames in front).
 *
 * With 16-bit x and cuDNN loaded, cuDNN's convolution runs it (cudnn.cu: implicit GEMM, x read in place; the weights
 * rounded to x's type, the bias added after, as PyTorch's convolution adds it). Otherwise, and for f32 x, the main path
 * is a matmul on tensor cores: y[o, p] = Σ_kk W[o, kk]·col[p, kk] over the C·kt·kh·kw taps kk of each
 * output position p, with col written by an im2col kernel in chunks of output rows (at most 64 MiB of col at a time,
 * so memory stays bounded at any image size and a chunk is mostly read back from L2) and cuBLASLt writing each chunk's
 * outputs straight into y's NC(T)HW planes. The bias rides along as extra columns of ones (for 16-bit inputs as a
 * high and a low 16-bit part, so its f32 value is kept to ~2^−16). With 16-bit x the weights are rounded to x's type,
 * as a model held in that dtype has them (diffusers' torch_dtype); the matmul accumulates in f32.
 *
 * The direct form below (one thread per output element summing C·kt·kh·kw products in f32) is the reference: it runs
 * where the matmul cannot (an f32 x into a 16-bit y, a patch too wide for shared memory) and under
 * QDIT_CUDA_CONV_DIRECT=1 (QDIT_CUDA_CONV_ROWS=n: chunks of at most n output rows, for the checks). */
#include <stdlib.h>

#include <type_traits>

#include "backend/cuda/cuda_internal.cuh"
#include "backend/cuda/linear_internal.cuh"

typedef struct {
    int64_t N, C, O, T, H, W, kt, kh, kw, To, Ho, Wo;
    int64_t st, sh, sw, pt0, ph, pw;
    int64_t pt1; /* time frames padded at the back (3-D) */
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

/* ---- the matmul form ---- */

#define CONV_TILE 32 /* output positions along a row per im2col block */
#define CONV_CB 32   /* channels per im2col block (fewer where the patch would not fit in 48 KiB) */
#define CONV_COL_BYTES ((size_t)64 << 20)

__device__ __forceinline__ void conv_store(float *p, float v) { *p = v; }
__device__ __forceinline__ void conv_store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
__device__ __forceinline__ void conv_store(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ float conv_load(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ float conv_load(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float conv_load(const float *p) { return *p; }

/* W [O, Kp] in x's type T: the weights (any float type) rounded to T, then the bias columns (T = f32: b; 16-bit:
   b's nearest T and the nearest T of what is left), then zeros to Kp */
template <typename T>
__global__ void conv_weight_kernel(const void *w, int wt, const void *bias, int bt, int64_t O, int64_t K, int64_t Kp, T *wg) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < O * Kp; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = i / Kp, kk = i % Kp;
        float v = 0.0f;
        if (kk < K) v = qd_ld(w, wt, o * K + kk);
        else if (bias && kk == K) v = qd_ld(bias, bt, o);
        else if (bias && kk == K + 1 && sizeof(T) == 2) {
            T hi;
            conv_store(&hi, qd_ld(bias, bt, o));
            v = qd_ld(bias, bt, o) - conv_load(&hi);
        }
        conv_store(wg + i, v);
    }
}

/* the columns past the taps: 1 under the bias parts, else 0 (written once; im2col leaves them alone) */
template <typename T> __global__ void conv_col_tail_kernel(int64_t rows, int64_t K, int64_t Kp, int nb1, T *col) {
    const int64_t tail = Kp - K;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < rows * tail; i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / tail, kk = i % tail;
        col[r * Kp + K + kk] = (T)(kk < nb1 ? 1.0f : 0.0f);
    }
}

/* col[p − p0][c·taps + tap] for the output positions of rows [row0, row0 + gridDim.x / tiles) of batch nb. A block
   takes CONV_TILE positions of one output row and CONV_CB channels: their input patch (kt × kh rows of
   (TILE−1)·sw + kw values each, zeros where padded) is read into shared memory row by row, then written out as each
   position's contiguous run of CB·taps values. T is a 2- or 4-byte word: im2col only copies. */
template <typename T>
__global__ void conv_im2col_kernel(const T *x, conv_geom g, int64_t nb, int64_t row0, int tiles, int cb, int64_t Kp, T *col) {
    extern __shared__ unsigned char conv_sm[];
    T *patch = (T *)conv_sm;
    const int taps = (int)(g.kt * g.kh * g.kw), pw = (int)((CONV_TILE - 1) * g.sw + g.kw);
    const int64_t row = row0 + blockIdx.x / tiles; /* (ot, oy) */
    const int64_t ox0 = (int64_t)(blockIdx.x % tiles) * CONV_TILE;
    const int64_t ot = row / g.Ho, oy = row % g.Ho;
    const int64_t c0 = (int64_t)blockIdx.y * cb;
    const int per_c = (int)(g.kt * g.kh) * pw;
    for (int e = threadIdx.x; e < cb * per_c; e += blockDim.x) {
        const int cc = e / per_c, r = e % per_c, tr = r / pw, xx = r % pw;
        const int64_t c = c0 + cc, it = ot * g.st - g.pt0 + tr / g.kh, iy = oy * g.sh - g.ph + tr % g.kh, ix = ox0 * g.sw - g.pw + xx;
        T v = (T)0;
        if (c < g.C && it >= 0 && it < g.T && iy >= 0 && iy < g.H && ix >= 0 && ix < g.W) v = x[(((nb * g.C + c) * g.T + it) * g.H + iy) * g.W + ix];
        patch[e] = v;
    }
    __syncthreads();
    const int run = cb * taps;
    const int64_t base = ((row - row0) * g.Wo + ox0) * Kp + c0 * taps;
    for (int e = threadIdx.x; e < CONV_TILE * run; e += blockDim.x) {
        const int px = e / run, r = e % run, cc = r / taps, tap = r % taps;
        if (ox0 + px >= g.Wo || c0 + cc >= g.C) continue;
        const int tr = tap / (int)g.kw, dx = tap % (int)g.kw;
        col[base + (int64_t)px * Kp + r] = patch[cc * per_c + tr * pw + px * (int)g.sw + dx];
    }
}

/* y[n, o, ·] += b[o] (after cuDNN's convolution, as PyTorch adds a convolution's bias): a block row per (n, o) plane
   of P values; BF16 planes with P % 8 == 0 go 8 values per 16-byte word */
__global__ void conv_bias_kernel(void *y, int yt, const void *b, int bt, int64_t O, int64_t P, bool y8, int64_t plane0) {
    const int64_t plane = plane0 + blockIdx.y;
    const float bo = qd_ld(b, bt, plane % O);
    if (y8) {
        uint4 *yw = (uint4 *)y + plane * (P / 8);
        for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < P / 8; i += (int64_t)gridDim.x * blockDim.x) {
            uint4 u = yw[i];
            __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const float2 f = __bfloat1622float2(h[e]);
                h[e] = __floats2bfloat162_rn(f.x + bo, f.y + bo);
            }
            yw[i] = u;
        }
        return;
    }
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < P; i += (int64_t)gridDim.x * blockDim.x)
        qd_st(y, yt, plane * P + i, qd_ld(y, yt, plane * P + i) + bo);
}

/* 16-bit x through cuDNN's convolution when it is loaded and has a plan for the shape (true: it ran, *s its status) */
template <typename T>
static bool conv_cudnn(qd_cuda *c, const char *op, bool is3d, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const conv_geom *g,
                       qd_tensor *y, qd_status *s) {
    const int64_t K = g->C * g->kt * g->kh * g->kw;
    T *wk = NULL;
    if ((*s = qd_cuda_scratch(c, sizeof(T) * (size_t)(g->O * K), (void **)&wk))) return true;
    conv_weight_kernel<T><<<qd_cuda_blocks(g->O * K, 256), 256, 0, c->stream>>>(w->data, w->dtype, NULL, 0, g->O, K, K, wk);
    qd_cudnn_conv_args a = {};
    a.x = x->data, a.w = wk, a.y = y->data, a.xt = x->dtype, a.yt = y->dtype, a.nd = is3d ? 3 : 2;
    a.N = g->N, a.C = g->C, a.O = g->O, a.T = g->T, a.H = g->H, a.W = g->W, a.kt = g->kt, a.kh = g->kh, a.kw = g->kw;
    a.To = g->To, a.Ho = g->Ho, a.Wo = g->Wo, a.st = g->st, a.sh = g->sh, a.sw = g->sw, a.pt0 = g->pt0, a.pt1 = g->pt1, a.ph = g->ph, a.pw = g->pw;
    const bool ran = qd_cudnn_conv(c, &a, s);
    qd_cuda_scratch_free(c, wk);
    if (ran && !*s && bias) {
        const int64_t P = g->To * g->Ho * g->Wo;
        const bool y8 = y->dtype == QD_DTYPE_BF16 && P % 8 == 0 && qd_cuda_aligned16(y->data);
        int64_t bx = ((y8 ? P / 8 : P) + 255) / 256;
        if (bx > 1024) bx = 1024;
        for (int64_t p0 = 0; p0 < g->N * g->O; p0 += 65535) { /* (grid.y's limit) */
            const int64_t np = g->N * g->O - p0 < 65535 ? g->N * g->O - p0 : 65535;
            conv_bias_kernel<<<dim3((unsigned)bx, (unsigned)np), 256, 0, c->stream>>>(y->data, y->dtype, bias->data, bias->dtype, g->O, P, y8, p0);
        }
        const cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) *s = qd_cuda_fail(e, op);
    }
    return ran;
}

template <typename T>
static qd_status conv_gemm_typed(qd_cuda *c, const char *op, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const conv_geom *g,
                                 qd_tensor *y) {
    typedef typename std::conditional<sizeof(T) == 2, uint16_t, float>::type word;
    const int64_t taps = g->kt * g->kh * g->kw, K = g->C * taps, nb1 = bias ? (sizeof(T) == 2 ? 2 : 1) : 0;
    const int64_t Kp = (K + nb1 + 7) / 8 * 8, rows = g->To * g->Ho, P = rows * g->Wo;
    const size_t es = sizeof(T);
    const size_t per_c = es * (size_t)(g->kt * g->kh * ((CONV_TILE - 1) * g->sw + g->kw));
    int cb = CONV_CB;
    while (cb > 1 && (size_t)cb * per_c > 48 * 1024) cb /= 2;
    const size_t sm = (size_t)cb * per_c;
    if (sm > 48 * 1024) return qd_fail(QD_EUNSUPPORTED, "cuda %s: a patch of %zu bytes (the direct form runs it)", op, sm);
    int64_t chunk = (int64_t)(CONV_COL_BYTES / (es * (size_t)(g->Wo * Kp)));
    if (chunk < 1) chunk = 1;
    const char *env = getenv("QDIT_CUDA_CONV_ROWS"); /* (checks: more, smaller chunks) */
    if (env && atoll(env) > 0 && atoll(env) < chunk) chunk = atoll(env);
    if (chunk > rows) chunk = rows;
    T *wg = NULL, *col = NULL;
    qd_status s = qd_cuda_scratch(c, es * (size_t)(g->O * Kp), (void **)&wg);
    if (!s) s = qd_cuda_scratch(c, es * (size_t)(chunk * g->Wo * Kp), (void **)&col);
    if (!s) {
        conv_weight_kernel<T><<<qd_cuda_blocks(g->O * Kp, 256), 256, 0, c->stream>>>(w->data, w->dtype, bias ? bias->data : NULL,
                                                                                   bias ? bias->dtype : 0, g->O, K, Kp, wg);
        if (Kp > K) conv_col_tail_kernel<T><<<qd_cuda_blocks(chunk * g->Wo * (Kp - K), 256), 256, 0, c->stream>>>(chunk * g->Wo, K, Kp, (int)nb1, col);
        cudaError_t e = cudaGetLastError();
        if (e != cudaSuccess) s = qd_cuda_fail(e, op);
    }
    const int tiles = (int)((g->Wo + CONV_TILE - 1) / CONV_TILE);
    const size_t ys = (size_t)qd_dtype_bits(y->dtype) / 8;
    for (int64_t nb = 0; nb < g->N && !s; nb++)
        for (int64_t r0 = 0; r0 < rows && !s; r0 += chunk) {
            const int64_t nr = rows - r0 < chunk ? rows - r0 : chunk;
            dim3 grid((unsigned)(nr * tiles), (unsigned)((g->C + cb - 1) / cb));
            conv_im2col_kernel<word><<<grid, 256, sm, c->stream>>>((const word *)x->data, *g, nb, r0, tiles, cb, Kp, (word *)col);
            cudaError_t e = cudaGetLastError();
            if (e != cudaSuccess) {
                s = qd_cuda_fail(e, op);
                break;
            }
            lt_extra xd = {};
            xd.ldd = P;
            s = qd_cuda_lt_matmul(c, op, g->O, nr * g->Wo, Kp, col, qd_cuda_lt_type(x->dtype), wg, qd_cuda_lt_type(x->dtype),
                                  (char *)y->data + ys * (size_t)(nb * g->O * P + r0 * g->Wo), qd_cuda_lt_type(y->dtype), NULL, &xd);
        }
    qd_cuda_scratch_free(c, wg), qd_cuda_scratch_free(c, col);
    return s;
}

/* QD_EUNSUPPORTED (before anything is written) where the matmul form does not apply */
static qd_status conv_gemm(qd_cuda *c, const char *op, bool is3d, const qd_tensor *x, const qd_tensor *w, const qd_tensor *bias, const conv_geom *g,
                           qd_tensor *y) {
    if (x->dtype == QD_DTYPE_F32 && y->dtype != QD_DTYPE_F32) return qd_fail(QD_EUNSUPPORTED, "cuda %s: f32 x into a 16-bit y", op);
    if (!g->C) return qd_fail(QD_EUNSUPPORTED, "cuda %s: no input channels (y is the bias)", op);
    qd_status s = QD_OK;
    if (x->dtype == QD_DTYPE_BF16 && conv_cudnn<__nv_bfloat16>(c, op, is3d, x, w, bias, g, y, &s)) return s;
    if (x->dtype == QD_DTYPE_F16 && conv_cudnn<__half>(c, op, is3d, x, w, bias, g, y, &s)) return s;
    if (x->dtype == QD_DTYPE_BF16) return conv_gemm_typed<__nv_bfloat16>(c, op, x, w, bias, g, y);
    if (x->dtype == QD_DTYPE_F16) return conv_gemm_typed<__half>(c, op, x, w, bias, g, y);
    return conv_gemm_typed<float>(c, op, x, w, bias, g, y);
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
    g.pt1 = pt1;
    g.To = (g.T + g.pt0 + pt1 - g.kt) / g.st + 1;
    g.Ho = (g.H + 2 * g.ph - g.kh) / g.sh + 1;
    g.Wo = (g.W + 2 * g.pw - g.kw) / g.sw + 1;
    if (y->shape[0] != g.N || y->shape[1] != g.O || y->shape[rank - 2] != g.Ho || y->shape[rank - 1] != g.Wo || (is3d && y->shape[2] != g.To))
        return qd_fail(QD_EINVAL, "cuda %s: y must be [%lld, %lld, %s%lld, %lld]", op, (long long)g.N, (long long)g.O, is3d ? "To, " : "",
                       (long long)g.Ho, (long long)g.Wo);
    const int64_t n = qd_tensor_elements(y);
    if (!n) return QD_OK;
    static int direct_only = -1;
    if (direct_only < 0) direct_only = getenv("QDIT_CUDA_CONV_DIRECT") && atoi(getenv("QDIT_CUDA_CONV_DIRECT")) != 0;
    if (!direct_only) {
        qd_status s = conv_gemm(qd_cuda_of(b), op, is3d, x, w, bias, &g, y);
        if (s != QD_EUNSUPPORTED) return s;
        qd_clear_error();
    }
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
