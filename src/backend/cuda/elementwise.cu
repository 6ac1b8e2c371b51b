/* Element-wise CUDA ops: activations, gated halves, AdaLN modulation, gated residual adds, broadcast
 * add/mul, softmax over the last dim, nearest upsampling. Same contract as the CPU file
 * (elementwise.c): f32 math, one rounding into y's dtype, any F32/BF16/F16 mix, in place allowed.
 * These are memory-bound: one pass, grid-stride loops; the dtype switch per element is a branch every
 * warp takes the same way. */
#include <stdio.h>

#include "backend/cuda/cuda_internal.cuh"

__device__ __forceinline__ float act_f(int kind, float x) {
    switch (kind) {
    case QD_ACT_GELU_TANH: return qd_gelu_tanh(x);
    case QD_ACT_GELU_ERF: return 0.5f * x * erfcf(x * -0.70710678118654752f);
    case QD_ACT_SILU: return qd_silu(x);
    case QD_ACT_QUICK_GELU: return x / (1.0f + expf(-1.702f * x));
    case QD_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case QD_ACT_TANH: return tanhf(x);
    default: return x;
    }
}

/* Index arithmetic in I: 32-bit when the tensor has < 2^31 elements (64-bit division costs tens of
 * instructions per element), 64-bit otherwise; LAUNCH picks. */
#define GRID_LOOP(i, n) for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < (I)(n); i += (I)gridDim.x * (I)blockDim.x)
#define LAUNCH(kernel, n, stream, ...)                                                                         \
    do {                                                                                                       \
        if ((n) < ((int64_t)1 << 31)) kernel<int32_t><<<qd_cuda_blocks(n, 256), 256, 0, stream>>>(__VA_ARGS__); \
        else kernel<int64_t><<<qd_cuda_blocks(n, 256), 256, 0, stream>>>(__VA_ARGS__);                         \
    } while (0)

template <typename I> __global__ void activation_kernel(int kind, const void *x, int xt, void *y, int yt, int64_t n) {
    GRID_LOOP(i, n) qd_st(y, yt, i, act_f(kind, qd_ld(x, xt, i)));
}

/* BF16 in and out, 8 values per 16-byte access (the model's MLP activations) */
__global__ void activation_bf16x8_kernel(int kind, const uint4 *x, uint4 *y, int64_t n8) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        uint4 u = x[i];
        __nv_bfloat162 *h = (__nv_bfloat162 *)&u;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float2 f = __bfloat1622float2(h[j]);
            h[j] = __floats2bfloat162_rn(act_f(kind, f.x), act_f(kind, f.y));
        }
        y[i] = u;
    }
}

extern "C" qd_status qd_cuda_activation(qd_backend *b, qd_act_kind kind, const qd_tensor *x, qd_tensor *y) {
    qd_status s;
    if ((s = qd_cuda_check_float("activation", "x", x)) || (s = qd_cuda_check_float("activation", "y", y))) return s;
    if (!qd_cuda_same_shape(x, y)) return qd_fail(QD_EINVAL, "cuda activation: x and y shapes differ");
    const int64_t n = qd_tensor_elements(x);
    if (x->dtype == QD_DTYPE_BF16 && y->dtype == QD_DTYPE_BF16 && n % 8 == 0 && (uintptr_t)x->data % 16 == 0 && (uintptr_t)y->data % 16 == 0) {
        activation_bf16x8_kernel<<<qd_cuda_blocks(n / 8, 256), 256, 0, qd_cuda_of(b)->stream>>>(kind, (const uint4 *)x->data, (uint4 *)y->data,
                                                                                                n / 8);
        QD_CUDA_LAUNCHED("activation");
        return QD_OK;
    }
    LAUNCH(activation_kernel, n, qd_cuda_of(b)->stream, kind, x->data, x->dtype, y->data, y->dtype, n);
    QD_CUDA_LAUNCHED("activation");
    return QD_OK;
}

template <typename I> __global__ void gated_kernel(int kind, bool gate_first, const void *x, int xt, void *y, int yt, int64_t rows, int64_t n_) {
    const I N = (I)n_;
    GRID_LOOP(i, rows * n_) {
        const I r = i / N, c = i % N;
        const float a = qd_ld(x, xt, r * 2 * N + c), g2 = qd_ld(x, xt, r * 2 * N + N + c);
        const float gate = gate_first ? a : g2, value = gate_first ? g2 : a;
        qd_st(y, yt, i, value * act_f(kind, gate));
    }
}

extern "C" qd_status qd_cuda_gated(qd_backend *b, qd_act_kind kind, bool gate_first, const qd_tensor *x, qd_tensor *y) {
    qd_status s;
    if ((s = qd_cuda_check_float("gated", "x", x)) || (s = qd_cuda_check_float("gated", "y", y))) return s;
    bool ok = x->rank >= 1 && y->rank == x->rank && x->shape[x->rank - 1] == 2 * y->shape[y->rank - 1];
    for (int i = 0; ok && i + 1 < x->rank; i++) ok = x->shape[i] == y->shape[i];
    if (!ok) return qd_fail(QD_EINVAL, "cuda gated: x must be [..., 2N] and y [..., N] with the same leading dims");
    const int64_t N = y->shape[y->rank - 1], rows = N ? qd_tensor_elements(y) / N : 0;
    LAUNCH(gated_kernel, 2 * rows * N, qd_cuda_of(b)->stream, kind, gate_first, x->data, x->dtype, y->data, y->dtype, rows, N);
    QD_CUDA_LAUNCHED("gated");
    return QD_OK;
}

/* x [B, L, D]; scale/shift [B, D] */
template <typename I>
__global__ void modulate_kernel(const void *x, int xt, const void *sc, int st, const void *sh, int ht, void *y, int yt, int64_t n,
                                int64_t D_, int64_t LD_) {
    const I D = (I)D_, LD = (I)LD_;
    GRID_LOOP(i, n) {
        const I bd = (i / LD) * D + i % D;
        float v = qd_ld(x, xt, i) * (1.0f + qd_ld(sc, st, bd));
        if (sh) v += qd_ld(sh, ht, bd);
        qd_st(y, yt, i, v);
    }
}

/* the [B, D] conditioning vector of a [B, ..., D] tensor */
static qd_status check_bd(const char *op, const char *what, const qd_tensor *v, const qd_tensor *x) {
    qd_status s = qd_cuda_check_float(op, what, v);
    if (s) return s;
    if (qd_tensor_elements(v) != x->shape[0] * x->shape[x->rank - 1]) {
        return qd_fail(QD_EINVAL, "cuda %s: %s must hold [B, D] = [%lld, %lld] values", op, what, (long long)x->shape[0],
                       (long long)x->shape[x->rank - 1]);
    }
    return QD_OK;
}

extern "C" qd_status qd_cuda_modulate(qd_backend *b, const qd_tensor *x, const qd_tensor *scale, const qd_tensor *shift,
                                      qd_tensor *y) {
    qd_status s;
    if ((s = qd_cuda_check_float("modulate", "x", x)) || (s = qd_cuda_check_float("modulate", "y", y)) || (s = check_bd("modulate", "scale", scale, x)) ||
        (shift && (s = check_bd("modulate", "shift", shift, x))))
        return s;
    if (x->rank < 2 || !qd_cuda_same_shape(x, y)) return qd_fail(QD_EINVAL, "cuda modulate: x must be [B, L, D] and y its shape");
    const int64_t n = qd_tensor_elements(x), D = x->shape[x->rank - 1], LD = x->shape[0] ? n / x->shape[0] : 0;
    LAUNCH(modulate_kernel, n, qd_cuda_of(b)->stream, x->data, x->dtype, scale->data, scale->dtype, shift ? shift->data : NULL,
           shift ? shift->dtype : 0, y->data, y->dtype, n, D, LD);
    QD_CUDA_LAUNCHED("modulate");
    return QD_OK;
}

template <typename I>
__global__ void gated_add_kernel(const void *r, int rt, const void *x, int xt, const void *g, int gt, void *y, int yt, int64_t n,
                                 int64_t D_, int64_t LD_) {
    const I D = (I)D_, LD = (I)LD_;
    GRID_LOOP(i, n) {
        float v = qd_ld(x, xt, i);
        if (g) v *= qd_ld(g, gt, (i / LD) * D + i % D);
        qd_st(y, yt, i, qd_ld(r, rt, i) + v);
    }
}

/* BF16 r, x and y, 8 values per 16-byte access (the model's residual stream): one division per 8 values
   finds the gate's row and column; same math as gated_add_kernel */
__global__ void gated_add_bf16x8_kernel(const uint4 *r, const uint4 *x, const void *g, int gt, uint4 *y, int64_t n8, int64_t D8, int64_t LD8) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        uint4 ur = r[i], ux = x[i];
        const __nv_bfloat162 *hr = (const __nv_bfloat162 *)&ur;
        __nv_bfloat162 *hx = (__nv_bfloat162 *)&ux;
        const int64_t gbase = g ? ((i / LD8) * D8 + i % D8) * 8 : 0;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            float2 v = __bfloat1622float2(hx[j]);
            if (g) v.x *= qd_ld(g, gt, gbase + 2 * j), v.y *= qd_ld(g, gt, gbase + 2 * j + 1);
            const float2 a = __bfloat1622float2(hr[j]);
            hx[j] = __floats2bfloat162_rn(a.x + v.x, a.y + v.y);
        }
        y[i] = ux;
    }
}

extern "C" qd_status qd_cuda_gated_add(qd_backend *b, const qd_tensor *r, const qd_tensor *x, const qd_tensor *gate, qd_tensor *y) {
    qd_status s;
    if ((s = qd_cuda_check_float("gated_add", "r", r)) || (s = qd_cuda_check_float("gated_add", "x", x)) || (s = qd_cuda_check_float("gated_add", "y", y)) ||
        (gate && (s = check_bd("gated_add", "gate", gate, x))))
        return s;
    if (!qd_cuda_same_shape(r, x) || !qd_cuda_same_shape(x, y)) return qd_fail(QD_EINVAL, "cuda gated_add: r, x and y must share one shape");
    const int64_t n = qd_tensor_elements(x), D = x->shape[x->rank - 1], LD = x->shape[0] ? n / x->shape[0] : 0;
    if (r->dtype == QD_DTYPE_BF16 && x->dtype == QD_DTYPE_BF16 && y->dtype == QD_DTYPE_BF16 && D % 8 == 0 && n &&
        ((uintptr_t)r->data | (uintptr_t)x->data | (uintptr_t)y->data) % 16 == 0) {
        gated_add_bf16x8_kernel<<<qd_cuda_blocks(n / 8, 256), 256, 0, qd_cuda_of(b)->stream>>>(
            (const uint4 *)r->data, (const uint4 *)x->data, gate ? gate->data : NULL, gate ? gate->dtype : 0, (uint4 *)y->data, n / 8, D / 8, LD / 8);
        QD_CUDA_LAUNCHED("gated_add");
        return QD_OK;
    }
    LAUNCH(gated_add_kernel, n, qd_cuda_of(b)->stream, r->data, r->dtype, x->data, x->dtype, gate ? gate->data : NULL,
           gate ? gate->dtype : 0, y->data, y->dtype, n, D, LD);
    QD_CUDA_LAUNCHED("gated_add");
    return QD_OK;
}

template <typename I> __global__ void binary_kernel(bool mul, const void *a, int at, const void *c, int ct, void *y, int yt, int64_t n, int64_t nc_) {
    const I nc = (I)nc_;
    GRID_LOOP(i, n) {
        const float u = qd_ld(a, at, i), v = qd_ld(c, ct, i % nc);
        qd_st(y, yt, i, mul ? u * v : u + v);
    }
}

/* BF16 a, c and y with c's size a multiple of 8, 8 values per 16-byte access (Z-Image's SwiGLU product,
   residual adds): one modulo per 8 values; same math as binary_kernel */
__global__ void binary_bf16x8_kernel(bool mul, const uint4 *a, const uint4 *c, uint4 *y, int64_t n8, int64_t nc8) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n8; i += (int64_t)gridDim.x * blockDim.x) {
        uint4 ua = a[i];
        const uint4 uc = c[nc8 == n8 ? i : i % nc8];
        __nv_bfloat162 *ha = (__nv_bfloat162 *)&ua;
        const __nv_bfloat162 *hc = (const __nv_bfloat162 *)&uc;
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const float2 u = __bfloat1622float2(ha[j]), v = __bfloat1622float2(hc[j]);
            ha[j] = mul ? __floats2bfloat162_rn(u.x * v.x, u.y * v.y) : __floats2bfloat162_rn(u.x + v.x, u.y + v.y);
        }
        y[i] = ua;
    }
}

static qd_status binary(qd_backend *b, bool mul, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) {
    const char *op = mul ? "mul" : "add";
    qd_status s;
    if ((s = qd_cuda_check_float(op, "a", a)) || (s = qd_cuda_check_float(op, "c", c)) || (s = qd_cuda_check_float(op, "y", y))) return s;
    /* c's shape without its leading 1s must be a suffix of a's */
    int cr = c->rank, lead = 0;
    while (lead < cr && c->shape[lead] == 1) lead++;
    bool ok = qd_cuda_same_shape(a, y) && cr - lead <= a->rank;
    for (int i = 0; ok && i < cr - lead; i++) ok = c->shape[cr - 1 - i] == a->shape[a->rank - 1 - i];
    if (!ok) return qd_fail(QD_EINVAL, "cuda %s: c's shape must be a suffix of a's, and y a's shape", op);
    const int64_t n = qd_tensor_elements(a), nc = qd_tensor_elements(c);
    if (n == 0) return QD_OK;
    if (a->dtype == QD_DTYPE_BF16 && c->dtype == QD_DTYPE_BF16 && y->dtype == QD_DTYPE_BF16 && nc % 8 == 0 && nc > 0 &&
        ((uintptr_t)a->data | (uintptr_t)c->data | (uintptr_t)y->data) % 16 == 0) {
        binary_bf16x8_kernel<<<qd_cuda_blocks(n / 8, 256), 256, 0, qd_cuda_of(b)->stream>>>(mul, (const uint4 *)a->data, (const uint4 *)c->data,
                                                                                            (uint4 *)y->data, n / 8, nc / 8);
        QD_CUDA_LAUNCHED(op);
        return QD_OK;
    }
    LAUNCH(binary_kernel, n, qd_cuda_of(b)->stream, mul, a->data, a->dtype, c->data, c->dtype, y->data, y->dtype, n, nc ? nc : 1);
    QD_CUDA_LAUNCHED(op);
    return QD_OK;
}

extern "C" qd_status qd_cuda_add(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) { return binary(b, false, a, c, y); }
extern "C" qd_status qd_cuda_mul(qd_backend *b, const qd_tensor *a, const qd_tensor *c, qd_tensor *y) { return binary(b, true, a, c, y); }

/* one block per row: max, then Σ exp(x − max), then the normalised values (three passes over a row
 * that stays in L1/L2) */
__global__ void softmax_kernel(const void *x, int xt, void *y, int yt, int64_t n) {
    __shared__ float red[32];
    const int64_t base = blockIdx.x * n;
    float m = -INFINITY;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) m = fmaxf(m, qd_ld(x, xt, base + i));
    m = qd_block_max(m, red);
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += expf(qd_ld(x, xt, base + i) - m);
    sum = qd_block_sum(sum, red);
    const float inv = 1.0f / sum;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) qd_st(y, yt, base + i, expf(qd_ld(x, xt, base + i) - m) * inv);
}

extern "C" qd_status qd_cuda_softmax(qd_backend *b, const qd_tensor *x, qd_tensor *y) {
    qd_status s;
    if ((s = qd_cuda_check_float("softmax", "x", x)) || (s = qd_cuda_check_float("softmax", "y", y))) return s;
    if (x->rank < 1 || !qd_cuda_same_shape(x, y)) return qd_fail(QD_EINVAL, "cuda softmax: x and y shapes differ");
    const int64_t n = x->shape[x->rank - 1], rows = n ? qd_tensor_elements(x) / n : 0;
    if (rows == 0) return QD_OK;
    if (rows > INT32_MAX) return qd_fail(QD_EUNSUPPORTED, "cuda softmax: %lld rows", (long long)rows);
    softmax_kernel<<<(unsigned)rows, 256, 0, qd_cuda_of(b)->stream>>>(x->data, x->dtype, y->data, y->dtype, n);
    QD_CUDA_LAUNCHED("softmax");
    return QD_OK;
}

template <typename I> __global__ void upsample_kernel(const void *x, int xt, void *y, int yt, int64_t n, int64_t H_, int64_t W_, int f) {
    const I H = (I)H_, W = (I)W_;
    GRID_LOOP(i, n) {
        const I Wo = W * f, Ho = H * f;
        const I ox = i % Wo, oy = (i / Wo) % Ho, plane = i / (Wo * Ho);
        qd_st(y, yt, i, qd_ld(x, xt, plane * H * W + (oy / f) * W + ox / f));
    }
}

__global__ void upsample2_bf16_kernel(const uint2 *x, uint4 *y, int64_t H, int64_t W, int64_t rows) {
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) { /* r: an output row, (plane, oy) */
        const int64_t Ho = 2 * H, plane = r / Ho, oy = r % Ho;
        const uint2 *xr = x + (plane * H + oy / 2) * (W / 4);
        uint4 *yr = y + r * (W / 4);
        for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < W / 4; i += (int64_t)gridDim.x * blockDim.x) {
            const uint2 v = xr[i]; /* inputs a b | c d → a a b b | c c d d */
            const uint32_t a = v.x & 0xffffu, bb = v.x >> 16, c = v.y & 0xffffu, d = v.y >> 16;
            yr[i] = make_uint4(a | a << 16, bb | bb << 16, c | c << 16, d | d << 16);
        }
    }
}

extern "C" qd_status qd_cuda_upsample_nearest(qd_backend *b, const qd_tensor *x, int factor, qd_tensor *y) {
    qd_status s;
    if ((s = qd_cuda_check_float("upsample_nearest", "x", x)) || (s = qd_cuda_check_float("upsample_nearest", "y", y))) return s;
    bool ok = factor >= 1 && x->rank >= 2 && y->rank == x->rank && y->shape[x->rank - 1] == x->shape[x->rank - 1] * factor &&
              y->shape[x->rank - 2] == x->shape[x->rank - 2] * factor;
    for (int i = 0; ok && i + 2 < x->rank; i++) ok = x->shape[i] == y->shape[i];
    if (!ok) return qd_fail(QD_EINVAL, "cuda upsample_nearest: y must be x with its last two dims × %d", factor);
    const int64_t n = qd_tensor_elements(y);
    const int64_t H = x->shape[x->rank - 2], W = x->shape[x->rank - 1], rows = n / (W * factor);
    if (factor == 2 && x->dtype == QD_DTYPE_BF16 && y->dtype == QD_DTYPE_BF16 && W % 4 == 0 && rows < ((int64_t)1 << 31) &&
        qd_cuda_aligned16(y->data) && (uintptr_t)x->data % 8 == 0) {
        /* the VAE's upsamplers: a block row per output row, 4 inputs → 8 outputs per thread */
        upsample2_bf16_kernel<<<dim3((unsigned)((W / 4 + 127) / 128), (unsigned)(rows < 65535 ? rows : 65535)), 128, 0, qd_cuda_of(b)->stream>>>(
            (const uint2 *)x->data, (uint4 *)y->data, H, W, rows);
        QD_CUDA_LAUNCHED("upsample_nearest");
        return QD_OK;
    }
    LAUNCH(upsample_kernel, n, qd_cuda_of(b)->stream, x->data, x->dtype, y->data, y->dtype, n, x->shape[x->rank - 2], x->shape[x->rank - 1],
           factor);
    QD_CUDA_LAUNCHED("upsample_nearest");
    return QD_OK;
}
