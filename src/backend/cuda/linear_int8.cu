/* int8 / int4 linears on the GPU: msModelSlim W8A8 (static), W8A8_DYNAMIC and W4A4_DYNAMIC (QD_SCHEME_INT8,
 * QD_SCHEME_INT4). The math is the CPU backend's (linear_int.c; formats.md §6.2–§6.4, quant-sglang.md §4.10):
 *
 *   W8A8 static:  q_x = clamp(rne(x/input_scale + input_offset), −128, 127);
 *                 y = (Σ_k q_x·q_w + quant_bias[n])·deq_scale[n]      (the float bias is folded into quant_bias)
 *   dynamic:      s_x = rowamax/127 (int8) or /7 (int4, codes clamped to −8..7), q_x = rne(x/s_x);
 *                 y = s_x[m]·Σ_g s_w[n,g]·(Σ_{k∈g} q_x·q_w − z[n,g]·Σ_{k∈g} q_x) + bias[n]
 *                 (one group = the whole K for per-channel scales [N] / [N,1]; z = weight_offset, often absent)
 *
 * int4 weights are stored one value per byte (I8 [N, K]), so both schemes run on int8 codes. Steps:
 *  1. activations → int8 codes [M, Kp] (K padded to a multiple of 16 with zero codes) and per-row scales, one
 *     block per row (8 BF16 values per 16-byte load where the row allows); when the weight has zero points,
 *     the codes' sums per row and group (one warp each);
 *  2. per-channel weights: our wgmma kernel (int8_wgmma_kernel below: TMA, s8 wgmma into exact int32 sums, the
 *     epilogue fused): the int32 sum (+ quant_bias) to f32, the column and row scales, the bias, the zero-point
 *     term, GELU-tanh when the layer wants it, one rounding into y — no int32 D in memory. QDIT_CUDA_INT8_LT=1 (and
 *     a driver without TMA maps) runs the earlier path instead: one cuBLASLt int8 matmul (IMMA tensor cores;
 *     CUBLAS_COMPUTE_32I, A = W codes [Np, Kp] taken transposed, B = the codes, D int32 [M, Np]: the TN form with
 *     every dimension and leading dimension a multiple of 16), then one epilogue kernel with the same arithmetic.
 *     Where cuBLASLt has no algorithm, the CUDA-core kernel below writes the same int32 sums.
 *     Σ q_x·q_w is exact in int32 for K ≤ 131072 (|q_x·q_w| ≤ 2^14), which prepare checks;
 *  3. group-wise weights ([N, K/g] scales, W4A4 per group): cuBLASLt cannot apply a scale per K group, so a
 *     CUDA-core kernel (__dp4a on 4 codes at a time, 64×64 output tiles through shared memory) keeps one int32
 *     sum per group, adds float(sum)·s_w[n,g] and applies the same epilogue; logged once (it is slower).
 * Every buffer of the layer sits in its arena (linear_internal.cuh); temporaries are stream-ordered scratch,
 * nothing synchronises the host. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/linear_internal.cuh"
#include "backend/cuda/wgmma.cuh"

bool qd_cuda_int8_covers(const qd_linear *l) {
    return (l->scheme == QD_SCHEME_INT8 && (l->act == QD_ACT_STATIC_TENSOR || l->act == QD_ACT_DYNAMIC_TOKEN)) ||
           (l->scheme == QD_SCHEME_INT4 && l->act == QD_ACT_DYNAMIC_TOKEN);
}

/* K beyond which an int32 sum of int8 products could overflow (2^31 / 2^14, with room for quant_bias) */
#define INT_MAX_K 131000

static qd_status nomem(const char *name) { return qd_fail(QD_ENOMEM, "layer '%s': cannot allocate its GPU form", name); }

qd_status qd_cuda_int8_prepare(qd_linear *l, cuda_linear *d, cuda_arena *a) {
    const char *name = l->name ? l->name : "linear";
    const int64_t n = l->out_features, k = l->in_features;
    const bool stat = l->act == QD_ACT_STATIC_TENSOR;
    if (!l->weight.data || l->weight.dtype != QD_DTYPE_I8 || l->weight.rank != 2 || l->weight.shape[0] != n || l->weight.shape[1] != k || !l->scale.data)
        return qd_fail(QD_EINVAL, "layer '%s': an int8/int4 linear needs an I8 weight [%lld, %lld] and its scales", name, (long long)n, (long long)k);
    if (stat && (!l->input_scale.data || !l->input_offset.data || !l->scale2.data || !l->zeros.data))
        return qd_fail(QD_EINVAL, "layer '%s': a static W8A8 layer needs input_scale, input_offset, deq_scale and quant_bias", name);
    /* (a one-element view holds one value for every row, as qd_view_get reads it) */
    const int64_t groups = !stat && l->scale.rank == 2 ? l->scale.shape[1] : 1, ns = qd_view_elements(&l->scale);
    if (groups < 1 || k % groups || (ns != n * groups && !(groups == 1 && ns == 1)))
        return qd_fail(QD_EINVAL, "layer '%s': weight scale of %lld values for N = %lld, K = %lld (expected N or N × groups dividing K)", name,
                       (long long)ns, (long long)n, (long long)k);
    if (groups > 1 && (k / groups) % 4)
        return qd_fail(QD_EUNSUPPORTED, "layer '%s': int scale groups of %lld along K (needs a multiple of 4)", name, (long long)(k / groups));
    const int64_t n2 = stat ? qd_view_elements(&l->scale2) : n, nq = stat ? qd_view_elements(&l->zeros) : n;
    if ((n2 != n && n2 != 1) || (nq != n && nq != 1))
        return qd_fail(QD_EINVAL, "layer '%s': deq_scale and quant_bias need %lld values each (got %lld, %lld)", name, (long long)n, (long long)n2,
                       (long long)nq);
    const int64_t nz = !stat && l->zeros.data ? qd_view_elements(&l->zeros) : n * groups;
    if (nz != n * groups && nz != 1)
        return qd_fail(QD_EINVAL, "layer '%s': weight_offset has %lld values, expected %lld", name, (long long)nz, (long long)(n * groups));
    if (k > INT_MAX_K)
        return qd_fail(QD_EUNSUPPORTED, "layer '%s': K = %lld could overflow the int32 sums (at most %d)", name, (long long)k, INT_MAX_K);
    d->wt = QD_DTYPE_I8;
    d->kp = (k + 15) / 16 * 16, d->np = (n + 15) / 16 * 16;
    d->int_groups = (int)groups;
    d->int4_act = l->scheme == QD_SCHEME_INT4 && !stat;
    const int64_t kp = d->kp, np = d->np;
    if (stat) {
        d->input_scale = qd_view_get(&l->input_scale, 0, 0);
        d->input_offset = qd_view_get(&l->input_offset, 0, 0);
        if (!(d->input_scale > 0.0f) || !isfinite(d->input_scale) || !isfinite(d->input_offset))
            return qd_fail(QD_EINVAL, "layer '%s': static W8A8 needs a positive input_scale and a finite input_offset (got %g, %g)", name,
                           (double)d->input_scale, (double)d->input_offset);
    }

    /* codes: rows of K into rows of Kp, the tail and the rows past N zero (no contribution) */
    const size_t ow = qd_cuda_arena_add(a, NULL, (size_t)(np * kp));
    if (ow == SIZE_MAX) return nomem(name);
    for (int64_t r = 0; r < n; r++) memcpy((int8_t *)qd_cuda_arena_at(a, ow) + r * kp, (const int8_t *)l->weight.data + r * k, (size_t)k);
    d->w = QD_ARENA_PTR(ow);

    /* scales: per channel one per column, padded to Np with zeros (stat: deq_scale); per group [N, G] */
    const int64_t nsv = groups > 1 ? n * groups : np;
    const size_t os = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)nsv);
    if (os == SIZE_MAX) return nomem(name);
    float *hs = (float *)qd_cuda_arena_at(a, os);
    for (int64_t r = 0; r < n; r++)
        for (int64_t g = 0; g < groups; g++) hs[r * groups + g] = stat ? qd_view_get(&l->scale2, r, 0) : qd_view_get(&l->scale, r, g);
    d->int_scale = (float *)QD_ARENA_PTR(os);

    if (stat) {
        /* quant_bias, exact in int32 (through f32 like the CPU: I32 views read as f32, exact below 2^24) */
        const size_t oq = qd_cuda_arena_add(a, NULL, sizeof(int32_t) * (size_t)np);
        if (oq == SIZE_MAX) return nomem(name);
        int32_t *hq = (int32_t *)qd_cuda_arena_at(a, oq);
        for (int64_t r = 0; r < n; r++) hq[r] = (int32_t)(int64_t)qd_view_get(&l->zeros, r, 0);
        d->int_qbias = (int32_t *)QD_ARENA_PTR(oq);
        return QD_OK; /* the float bias is folded into quant_bias (formats.md §6.2) */
    }
    if (l->bias.data) {
        const size_t ob = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)np);
        if (ob == SIZE_MAX) return nomem(name);
        float *hb = (float *)qd_cuda_arena_at(a, ob);
        for (int64_t r = 0; r < n; r++) hb[r] = qd_view_get(&l->bias, r, 0);
        d->bias = (float *)QD_ARENA_PTR(ob);
    }
    /* weight offsets: W = (q − z)·s_w, so y loses s_x·Σ_g s_w·z·Σ_{k∈g} q_x; kept as s_w·z where any z ≠ 0 */
    bool any = false;
    for (int64_t i = 0; l->zeros.data && i < n * groups && !any; i++) any = qd_view_get(&l->zeros, i / groups, i % groups) != 0.0f;
    if (any) {
        const size_t oz = qd_cuda_arena_add(a, NULL, sizeof(float) * (size_t)nsv);
        if (oz == SIZE_MAX) return nomem(name);
        float *hz = (float *)qd_cuda_arena_at(a, oz);
        hs = (float *)qd_cuda_arena_at(a, os); /* the add may have moved the staging buffer */
        for (int64_t r = 0; r < n; r++)
            for (int64_t g = 0; g < groups; g++) hz[r * groups + g] = hs[r * groups + g] * qd_view_get(&l->zeros, r, g);
        d->int_zero = (float *)QD_ARENA_PTR(oz);
    }
    return QD_OK;
}

/* ------------------------------------------------------------------ activation codes ----------- */

/* one code: clamp(rne(v/div + add), lo, hi) as the CPU computes it (IEEE division, round half to even) */
__device__ __forceinline__ int8_t int_code(float v, float div, float add, float lo, float hi) {
    return (int8_t)fminf(fmaxf(rintf(v / div + add), lo), hi);
}

/* One block per row: dynamic rows get s = rowamax/127 (or /7, int4) in row_scale and codes rne(x/s); a zero
 * row gets scale 0 and zero codes. Static rows use the layer's input_scale and input_offset. Columns K..Kp
 * are zero codes. VEC: BF16 rows with K % 8 == 0, 8 values per 16-byte load, `batch` loads in flight per thread
 * (read twice, the second time from L2, like the FP8 quantizer). */
template <bool VEC>
__global__ void int_quant_rows_kernel(const void *x, int xt, int64_t k, int64_t kp, bool stat, bool int4, float is, float io, int batch, int8_t *q,
                                      float *row_scale) {
    __shared__ float red[32];
    const int64_t row = blockIdx.x;
    int8_t *qr = q + row * kp;
    float div = is, add = io, lo = -128.0f, hi = 127.0f;
    if (!stat) {
        float amax = 0.0f;
        if (VEC) {
            qd_row_words((const uint4 *)x + row * (k / 8), k / 8, batch, [&](int64_t, const uint4 &u) {
                float v[8];
                qd_bf16x8_f32(u, v);
#pragma unroll
                for (int j = 0; j < 8; j++) amax = fmaxf(amax, fabsf(v[j]));
            });
        } else {
            for (int64_t i = threadIdx.x; i < k; i += blockDim.x) amax = fmaxf(amax, fabsf(qd_ld(x, xt, row * k + i)));
        }
        amax = qd_block_max(amax, red);
        div = amax / (int4 ? 7.0f : 127.0f), add = 0.0f;
        if (int4) lo = -8.0f, hi = 7.0f;
        if (threadIdx.x == 0) row_scale[row] = div;
        if (!(div > 0.0f)) { /* (block-uniform) */
            for (int64_t i = threadIdx.x; i < kp; i += blockDim.x) qr[i] = 0;
            return;
        }
    }
    if (VEC) {
        qd_row_words((const uint4 *)x + row * (k / 8), k / 8, batch, [&](int64_t i, const uint4 &u) {
            float v[8];
            qd_bf16x8_f32(u, v);
            alignas(8) int8_t o[8];
#pragma unroll
            for (int j = 0; j < 8; j++) o[j] = int_code(v[j], div, add, lo, hi);
            *(uint2 *)(qr + 8 * i) = *(const uint2 *)o;
        });
        for (int64_t i = k + threadIdx.x; i < kp; i += blockDim.x) qr[i] = 0;
    } else {
        for (int64_t i = threadIdx.x; i < kp; i += blockDim.x) qr[i] = i < k ? int_code(qd_ld(x, xt, row * k + i), div, add, lo, hi) : 0;
    }
}

/* sums[r][g] = Σ of row r's codes in group g (gw words of 4 codes each): one warp per (row, group) */
__global__ void int_code_sums_kernel(const int8_t *q, int64_t m, int64_t kp, int64_t gw, int64_t groups, int32_t *sums) {
    const int lane = threadIdx.x & 31;
    const int64_t nwarps = (int64_t)gridDim.x * blockDim.x / 32;
    for (int64_t wid = (blockIdx.x * (int64_t)blockDim.x + threadIdx.x) / 32; wid < m * groups; wid += nwarps) { /* (warp-uniform) */
        const int64_t r = wid / groups, g = wid % groups;
        const int *qw = (const int *)(q + r * kp) + g * gw;
        int s = 0;
        for (int64_t i = lane; i < gw; i += 32) s = __dp4a(qw[i], 0x01010101, s);
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        if (lane == 0) sums[wid] = s;
    }
}

/* ------------------------------------------------------------------ epilogue -------------------- */

/* What turns integer sums into y (the pointers are the layer's arena buffers and this call's scratch) */
typedef struct {
    const float *scale;   /* per channel [Np] (static: deq_scale); per group [N, G] */
    const float *zero;    /* s_w·z like scale, or NULL */
    const int32_t *qbias; /* static: quant_bias [Np], else NULL */
    const float *bias;    /* [Np] or NULL */
    const float *sx;      /* per-token scales [M]; NULL for static */
    const int32_t *sums;  /* code sums [M, G] where zero is set */
    int64_t groups;
    bool gelu;
    void *y;
    int yt;
    int64_t m, n;
} int_epi;

/* per channel: (Σ + quant_bias)·scale[c]·s_x[r] + bias[c] − s_x[r]·Σq_x·(s_w·z)[c], in the CPU's order, GELU-tanh
   when the layer wants it */
__device__ __forceinline__ float int_channel_value(const int_epi &e, int64_t r, int64_t c, int32_t acc) {
    float v = (float)(acc + (e.qbias ? e.qbias[c] : 0));
    v *= e.scale[c];
    if (e.sx) v *= e.sx[r];
    if (e.bias) v += e.bias[c];
    if (e.zero) v += -e.sx[r] * (float)e.sums[r] * e.zero[c];
    return e.gelu ? qd_gelu_tanh(v) : v;
}

__device__ __forceinline__ void int_finish_channel(const int_epi &e, int64_t r, int64_t c, int32_t acc) {
    qd_st(e.y, e.yt, r * e.n + c, int_channel_value(e, r, c, acc));
}

/* D int32 [M, Np] (cuBLASLt's column-major N×M) → y [M, N]; blockIdx.y walks rows */
__global__ void int_epilogue_kernel(const int32_t *dacc, int64_t np, int_epi e) {
    for (int64_t r = blockIdx.y; r < e.m; r += gridDim.y)
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < e.n; c += (int64_t)gridDim.x * blockDim.x)
            int_finish_channel(e, r, c, dacc[r * np + c]);
}

/* ------------------------------------------------------------------ CUDA-core GEMM -------------- */

#define IG_BM 64 /* rows (tokens) per block */
#define IG_BN 64 /* output channels per block */
#define IG_BKW 16 /* K words (4 codes each) per shared-memory stage */

/* 64×64 tiles, 256 threads of 4×4 outputs (rows ty + 16i, columns tx + 16j), __dp4a on 4 codes at a time.
 * GROUPED: the scales change every gw words; each group's exact int32 sum is added as float(sum)·s_w[n,g]
 * and the zero-point term accumulated alongside, then the epilogue writes y. Otherwise one int32 sum over
 * the whole Kp written to D [M, Np] (the fallback for cuBLASLt's matmul; int_epilogue_kernel follows). */
template <bool GROUPED>
__global__ void __launch_bounds__(256) int_gemm_dp4a_kernel(const int8_t *q, const int8_t *w, int64_t kp, int64_t np, int64_t gw, int_epi e,
                                                            int32_t *dacc) {
    __shared__ int as[IG_BM][IG_BKW + 1], ws[IG_BN][IG_BKW + 1]; /* +1: the 16 columns a warp reads fall in 16 banks */
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const int64_t r0 = (int64_t)blockIdx.y * IG_BM, c0 = (int64_t)blockIdx.x * IG_BN, kw = kp / 4;
    const int *qw = (const int *)q, *ww = (const int *)w;
    const int64_t groups = GROUPED ? e.groups : 1, span = GROUPED ? gw : kw;
    float f[4][4] = {}, zp[4][4] = {};
    int acc[4][4] = {};
    for (int64_t g = 0; g < groups; g++) {
        for (int64_t k0 = g * span; k0 < (g + 1) * span; k0 += IG_BKW) {
            const int chunk = (int)((g + 1) * span - k0 < IG_BKW ? (g + 1) * span - k0 : IG_BKW);
            for (int i = tid; i < IG_BM * IG_BKW; i += 256) {
                const int rr = i / IG_BKW, kk = i % IG_BKW;
                const int64_t r = r0 + rr, c = c0 + rr;
                as[rr][kk] = kk < chunk && r < e.m ? qw[r * kw + k0 + kk] : 0;
                ws[rr][kk] = kk < chunk && c < np ? ww[c * kw + k0 + kk] : 0;
            }
            __syncthreads();
            for (int kk = 0; kk < chunk; kk++) {
                int av[4], bv[4];
#pragma unroll
                for (int i = 0; i < 4; i++) av[i] = as[ty + 16 * i][kk], bv[i] = ws[tx + 16 * i][kk];
#pragma unroll
                for (int i = 0; i < 4; i++)
#pragma unroll
                    for (int j = 0; j < 4; j++) acc[i][j] = __dp4a(av[i], bv[j], acc[i][j]);
            }
            __syncthreads();
        }
        if (GROUPED) {
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    const int64_t r = r0 + ty + 16 * i, c = c0 + tx + 16 * j;
                    if (r < e.m && c < e.n) {
                        f[i][j] += (float)acc[i][j] * e.scale[c * groups + g];
                        if (e.zero) zp[i][j] += -e.sx[r] * (float)e.sums[r * groups + g] * e.zero[c * groups + g];
                    }
                    acc[i][j] = 0;
                }
        }
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int64_t r = r0 + ty + 16 * i, c = c0 + tx + 16 * j;
            if (!GROUPED) {
                if (r < e.m && c < np) dacc[r * np + c] = acc[i][j];
            } else if (r < e.m && c < e.n) {
                float v = f[i][j] * e.sx[r];
                if (e.bias) v += e.bias[c];
                v += zp[i][j];
                qd_st(e.y, e.yt, r * e.n + c, e.gelu ? qd_gelu_tanh(v) : v);
            }
        }
}

static qd_status launched(const char *what) {
    cudaError_t e = cudaGetLastError();
    return e == cudaSuccess ? QD_OK : qd_cuda_fail(e, what);
}

/* ------------------------------------------------------------------ wgmma GEMM (sm_90a) --------- */

/* The per-channel int8 matmul on Hopper's tensor cores with the epilogue fused: y = int_channel_value(Σ q_x·q_w)
 * straight from the exact int32 accumulators, no int32 D in memory. The FP8 kernel lab's persistent variant 6
 * (bench/kernels/fp8_gemm_lab.cu) with s8 operands: one CTA per SM walks 128×256 output tiles in groups of row
 * blocks (the CTAs running at once share W's column blocks in L2). Warpgroup 0 is the producer: one thread issues
 * TMA loads of A (codes [M, Kp], 128×128 bytes) and W ([Np, Kp], 256×128 bytes) under the 128-byte swizzle into a
 * 4-stage mbarrier ring, running ahead into the next tile. Warpgroups 1 and 2 each own 64 rows × 256 columns:
 * wgmma.m64n256k32.s32.s8.s8 into 128 int32 registers, the next K-block issued before the previous one is waited
 * for. Rows past M and columns past Kp / Np arrive from TMA as zeros (they add nothing). The epilogue turns each
 * 64×128 half into y: BF16 rows (N % 8 == 0) staged through shared memory into 16-byte row stores, any other
 * output type or N element by element. */
#define I8G_BM 128
#define I8G_BN 256
#define I8G_BK 128
#define I8G_STAGES 4
#define I8G_THREADS 384
#define I8G_A_BYTES (I8G_BM * I8G_BK)
#define I8G_STAGE_BYTES (I8G_A_BYTES + I8G_BN * I8G_BK) /* 48 KB, a multiple of the swizzle's 1024 */
#define I8G_EPI_BYTES (64 * 128 * 2)                    /* a consumer's 64 × 128 BF16 staging tile */
#define I8G_EPI_OFF (I8G_STAGES * I8G_STAGE_BYTES)
#define I8G_BAR_OFF (I8G_EPI_OFF + 2 * I8G_EPI_BYTES)
#define I8G_SMEM (I8G_BAR_OFF + 16 * I8G_STAGES + 1024) /* + the alignment to 1024 */

typedef struct {
    CUtensorMap a_map, w_map;
    int_epi e;
    int kblocks, tiles_m, tiles_n;
    bool staged; /* BF16 y with N % 8 == 0 and 16-byte aligned rows */
} int8_wgmma_params;

/* tile t → (row block, column block): groups of `group` row blocks, row block fastest inside a group */
__device__ __forceinline__ void i8g_tile(const int8_wgmma_params &p, int t, int &tm, int &tn) {
    const int group = 8, per_group = group * p.tiles_n, g = t / per_group, first = g * group;
    const int rows = min(group, p.tiles_m - first), w = t - g * per_group;
    tm = first + w % rows, tn = w / rows;
}

/* kept out of line: inlined into the unrolled epilogue, 64 copies of each would blow the instruction cache */
__device__ __noinline__ float i8g_gelu(float v) { return qd_gelu_tanh(v); }
__device__ __noinline__ void i8g_store_one(const int_epi &e, int64_t r, int64_t c, float v) {
    if (r < e.m && c < e.n) qd_st(e.y, e.yt, r * e.n + c, v);
}

/* One 64 × 128 half of a consumer's accumulators into y (v: columns 8j + 2·(lane%4) (+1) of rows rl and rl + 8 in
 * v[4j..4j+3]). int_channel_value's arithmetic in its order, with the row factors (s_x, the zero-point term) taken
 * once per row and the column factors once per column: absent parts enter as exact identities (×1, +0). */
__device__ __forceinline__ void i8g_store_half(const int8_wgmma_params &p, const int *v, int64_t row0, int64_t col0, uint8_t *epi, int tid,
                                               int bar) {
    const int_epi &e = p.e;
    const int warp = tid / 32, lane = tid % 32, rl = warp * 16 + lane / 4, q = lane % 4;
    float rx[2], rz[2]; /* per row: s_x (or 1) and −s_x·Σq_x (or 0) */
#pragma unroll
    for (int h = 0; h < 2; h++) {
        const int64_t r = min(row0 + rl + 8 * h, e.m - 1); /* (rows past M: any row's factors, never stored) */
        rx[h] = e.sx ? e.sx[r] : 1.0f;
        rz[h] = e.zero ? -e.sx[r] * (float)e.sums[r] : 0.0f;
    }
    float f[64];
#pragma unroll
    for (int j = 0; j < 16; j++)
#pragma unroll
        for (int t = 0; t < 2; t++) {
            const int64_t c = min(col0 + 8 * j + 2 * q + t, e.n - 1);
            const int qb = e.qbias ? e.qbias[c] : 0;
            const float sc = e.scale[c], b = e.bias ? e.bias[c] : 0.0f, z = e.zero ? e.zero[c] : 0.0f;
#pragma unroll
            for (int h = 0; h < 2; h++) {
                float x = (float)(v[4 * j + 2 * h + t] + qb) * sc;
                x *= rx[h];
                x += b;
                f[4 * j + 2 * h + t] = x + rz[h] * z;
            }
        }
    if (e.gelu) {
#pragma unroll
        for (int i = 0; i < 64; i++) f[i] = i8g_gelu(f[i]);
    }
    if (!p.staged) {
#pragma unroll
        for (int j = 0; j < 16; j++)
#pragma unroll
            for (int h = 0; h < 4; h++) i8g_store_one(e, row0 + rl + (h & 2 ? 8 : 0), col0 + 8 * j + 2 * q + (h & 1), f[4 * j + h]);
        return;
    }
    /* staged: 256-byte rows, 16-byte chunk c of row r at c ^ (r % 8) (the fragment's 4-byte stores and the 16-byte
       reads below both free of bank conflicts), then whole 16-byte pieces of y's rows */
    wg_bar_sync(bar, 128); /* the previous half has left the staging tile */
#pragma unroll
    for (int j = 0; j < 16; j++) {
        const int off = ((j ^ (rl & 7)) << 4) + 4 * q; /* rows rl and rl + 8 share r % 8 */
        *(__nv_bfloat162 *)(epi + rl * 256 + off) = __floats2bfloat162_rn(f[4 * j], f[4 * j + 1]);
        *(__nv_bfloat162 *)(epi + (rl + 8) * 256 + off) = __floats2bfloat162_rn(f[4 * j + 2], f[4 * j + 3]);
    }
    wg_bar_sync(bar, 128);
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int idx = i * 128 + tid, r = idx >> 4, c = idx & 15;
        const int64_t gr = row0 + r, gc = col0 + c * 8;
        if (gr < e.m && gc < e.n)
            *(uint4 *)((__nv_bfloat16 *)e.y + gr * e.n + gc) = *(const uint4 *)(epi + r * 256 + ((c ^ (r & 7)) << 4));
    }
}

__global__ void __launch_bounds__(I8G_THREADS, 1) int8_wgmma_kernel(const __grid_constant__ int8_wgmma_params p) {
    extern __shared__ __align__(1024) uint8_t i8g_smem_raw[];
    uint8_t *smem = (uint8_t *)(((uintptr_t)i8g_smem_raw + 1023) & ~(uintptr_t)1023); /* the 128-byte swizzle wants 1024 */
    uint64_t *full = (uint64_t *)(smem + I8G_BAR_OFF), *empty = full + I8G_STAGES;
    /* (through a shuffle the compiler knows the warpgroup index is the same in every lane: the stage and descriptor
       arithmetic of the main loops then stays in uniform registers, which wgmma reads its descriptors from) */
    const int wg = __shfl_sync(0xffffffffu, (int)threadIdx.x / 128, 0), tid = threadIdx.x % 128;
    if (threadIdx.x == 0) {
        /* full: the producer's one arrival + the bytes; empty: lane 0 of each of the 8 consumer warps */
        for (int s = 0; s < I8G_STAGES; s++) mbar_init(&full[s], 1), mbar_init(&empty[s], 8);
        mbar_init_fence();
    }
    __syncthreads();
    const int tiles = p.tiles_m * p.tiles_n;
    if (wg == 0) { /* producer */
        wg_reg_dealloc<40>();
        if (tid == 0) {
            int s = 0;
            uint32_t ph = 0;
            for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
                int tm, tn;
                i8g_tile(p, t, tm, tn);
                for (int kb = 0; kb < p.kblocks; kb++) {
                    mbar_wait(&empty[s], ph ^ 1);
                    uint8_t *st = smem + s * I8G_STAGE_BYTES;
                    mbar_expect_tx(&full[s], I8G_STAGE_BYTES);
                    tma_load_2d(st, &p.a_map, kb * I8G_BK, tm * I8G_BM, &full[s]);
                    tma_load_2d(st + I8G_A_BYTES, &p.w_map, kb * I8G_BK, tn * I8G_BN, &full[s]);
                    if (++s == I8G_STAGES) s = 0, ph ^= 1;
                }
            }
        }
        return;
    }
    wg_reg_alloc<232>();
    const int c = wg - 1, lane = tid % 32;
    uint8_t *epi = smem + I8G_EPI_OFF + c * I8G_EPI_BYTES;
    const uint64_t dbase = wg_desc_sw128(smem);
    int s = 0;
    uint32_t ph = 0;
    for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
        int tm, tn;
        i8g_tile(p, t, tm, tn);
        int acc[128]; /* (no initialisation: the first wgmma of a tile starts the sums with scale_d = 0; writing zeros
                         here instead makes ptxas serialise the wgmmas) */
        auto issue = [&](int more) {
            /* (a descriptor's address field is the byte address >> 4: offsets within shared memory add to it) */
            const uint64_t da = dbase + ((s * I8G_STAGE_BYTES + c * 64 * I8G_BK) >> 4), dw = dbase + ((s * I8G_STAGE_BYTES + I8G_A_BYTES) >> 4);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < I8G_BK / 32; ks++) wgmma_m64n256k32_s8(acc, da + 2 * ks, dw + 2 * ks, ks > 0 || more);
            wgmma_commit();
        };
        auto release = [&](int st) {
            if (lane == 0) mbar_arrive(&empty[st]);
        };
        auto advance = [&]() {
            if (++s == I8G_STAGES) s = 0, ph ^= 1;
        };
        /* the next K-block's wgmma issued before the previous one is waited for and its stage released */
        mbar_wait(&full[s], ph);
        issue(0);
        int ps = s;
        advance();
        for (int kb = 1; kb < p.kblocks; kb++) {
            mbar_wait(&full[s], ph);
            issue(1);
            wgmma_wait<1>();
            release(ps);
            ps = s;
            advance();
        }
        wgmma_wait<0>();
        wg_fence_regs<128>(acc);
        release(ps);
        const int64_t row0 = (int64_t)tm * I8G_BM + c * 64, col0 = (int64_t)tn * I8G_BN;
        i8g_store_half(p, acc, row0, col0, epi, tid, 1 + c);
        i8g_store_half(p, acc + 64, row0, col0 + 128, epi, tid, 1 + c);
    }
}

/* The ping-pong form (the default; QDIT_CUDA_INT8_COOP=1 runs the cooperative kernel above): each consumer warpgroup
 * owns whole 128×128 tiles (two m64n128 units, 128 int32 registers), consumer c taking the CTA's tiles c, c + 2, …
 * The producer fills one 6-stage ring (A and W 128×128 bytes each) tile after tile, so a consumer's next tile lands
 * only as the other consumer's K-blocks are released, and a turn barrier keeps the consumers' waits in the ring's
 * order: their main loops take turns on the tensor cores, and each one's epilogue runs while the other computes
 * (cuBLASLt's FP8 kernel on this GPU also takes 128×128 tiles, K blocks of 128, 6 stages). K-block g of the CTA's
 * sequence sits in stage g % 6 at phase (g / 6) & 1. */
#define I8P_BN 128
#define I8P_STAGES 6
#define I8P_STAGE_BYTES (2 * 128 * I8G_BK) /* 32 KB */
#define I8P_EPI_OFF (I8P_STAGES * I8P_STAGE_BYTES)
#define I8P_BAR_OFF (I8P_EPI_OFF + 2 * I8G_EPI_BYTES)
#define I8P_SMEM (I8P_BAR_OFF + 16 * I8P_STAGES + 16 + 1024)

__global__ void __launch_bounds__(I8G_THREADS, 1) int8_wgmma_pp_kernel(const __grid_constant__ int8_wgmma_params p) {
    extern __shared__ __align__(1024) uint8_t i8p_smem_raw[];
    uint8_t *smem = (uint8_t *)(((uintptr_t)i8p_smem_raw + 1023) & ~(uintptr_t)1023);
    uint64_t *full = (uint64_t *)(smem + I8P_BAR_OFF), *empty = full + I8P_STAGES, *turn = empty + I8P_STAGES;
    /* (through a shuffle the compiler knows the warpgroup index is the same in every lane: the stage and descriptor
       arithmetic of the main loops then stays in uniform registers, which wgmma reads its descriptors from) */
    const int wg = __shfl_sync(0xffffffffu, (int)threadIdx.x / 128, 0), tid = threadIdx.x % 128;
    if (threadIdx.x == 0) {
        /* full: the producer's arrival + the bytes; empty: lane 0 of the 4 warps of the one consumer using the stage;
           turn[c]: the other consumer has waited for every K-block of its latest tile */
        for (int s = 0; s < I8P_STAGES; s++) mbar_init(&full[s], 1), mbar_init(&empty[s], 4);
        mbar_init(&turn[0], 1), mbar_init(&turn[1], 1);
        mbar_init_fence();
    }
    __syncthreads();
    const int tiles = p.tiles_m * p.tiles_n;
    if (wg == 0) { /* producer */
        wg_reg_dealloc<40>();
        if (tid == 0) {
            int s = 0;
            uint32_t ph = 0;
            for (int t = blockIdx.x; t < tiles; t += gridDim.x) {
                int tm, tn;
                i8g_tile(p, t, tm, tn);
                for (int kb = 0; kb < p.kblocks; kb++) {
                    mbar_wait(&empty[s], ph ^ 1);
                    uint8_t *st = smem + s * I8P_STAGE_BYTES;
                    mbar_expect_tx(&full[s], I8P_STAGE_BYTES);
                    tma_load_2d(st, &p.a_map, kb * I8G_BK, tm * I8G_BM, &full[s]);
                    tma_load_2d(st + 128 * I8G_BK, &p.w_map, kb * I8G_BK, tn * I8P_BN, &full[s]);
                    if (++s == I8P_STAGES) s = 0, ph ^= 1;
                }
            }
        }
        return;
    }
    wg_reg_alloc<232>();
    const int c = wg - 1, lane = tid % 32;
    uint8_t *epi = smem + I8P_EPI_OFF + c * I8G_EPI_BYTES;
    const uint64_t dbase = wg_desc_sw128(smem);
    int i = c, j = 0; /* this consumer's tiles: the CTA's c-th, (c + 2)-th, … ; j counts them */
    for (int t = blockIdx.x + c * gridDim.x; t < tiles; t += 2 * gridDim.x, i += 2, j++) {
        /* Turns: a stage's full barrier tells its fills apart only by parity, so a consumer must not wait on a fill of
           its tile until every earlier fill of the ring has completed, i.e. until the other consumer has waited for
           all of its previous tile (else a fill six K-blocks earlier would pass for ours). This also makes the two
           main loops take turns: consumer 1's tile j after consumer 0's tile j, consumer 0's tile j after
           consumer 1's tile j − 1. */
        if (c == 1) mbar_wait(&turn[1], j & 1);
        else if (j > 0) mbar_wait(&turn[0], (j - 1) & 1);
        int tm, tn;
        i8g_tile(p, t, tm, tn);
        const int g0 = i * p.kblocks; /* the tile's first K-block in the ring's sequence */
        int s = g0 % I8P_STAGES;
        uint32_t ph = (g0 / I8P_STAGES) & 1;
        int acc[128]; /* two m64n128 units: rows 0-63 in acc[0..63], rows 64-127 in acc[64..127] (no initialisation: see
                         int8_wgmma_kernel) */
        auto issue = [&](int more) {
            const uint64_t da0 = dbase + ((s * I8P_STAGE_BYTES) >> 4), da1 = da0 + ((64 * I8G_BK) >> 4), dw = da0 + ((128 * I8G_BK) >> 4);
            wgmma_fence();
#pragma unroll
            for (int ks = 0; ks < I8G_BK / 32; ks++) {
                wgmma_m64n128k32_s8(acc, da0 + 2 * ks, dw + 2 * ks, ks > 0 || more);
                wgmma_m64n128k32_s8(acc + 64, da1 + 2 * ks, dw + 2 * ks, ks > 0 || more);
            }
            wgmma_commit();
        };
        auto release = [&](int st) {
            if (lane == 0) mbar_arrive(&empty[st]);
        };
        auto advance = [&]() {
            if (++s == I8P_STAGES) s = 0, ph ^= 1;
        };
        mbar_wait(&full[s], ph);
        issue(0);
        int ps = s;
        advance();
        for (int kb = 1; kb < p.kblocks; kb++) {
            mbar_wait(&full[s], ph);
            issue(1);
            wgmma_wait<1>();
            release(ps);
            ps = s;
            advance();
        }
        if (tid == 0) mbar_arrive(&turn[1 - c]); /* every fill of this tile has been waited for: the other consumer's turn */
        wgmma_wait<0>();
        wg_fence_regs<128>(acc);
        release(ps);
        const int64_t row0 = (int64_t)tm * I8G_BM, col0 = (int64_t)tn * I8P_BN;
        i8g_store_half(p, acc, row0, col0, epi, tid, 1 + c);
        i8g_store_half(p, acc + 64, row0 + 64, col0, epi, tid, 1 + c);
    }
}

/* the int8 matmul + epilogue on wgmma: the ping-pong form, or the cooperative one with QDIT_CUDA_INT8_COOP (side by
   side on the H200 at FLUX's shapes, 2026-11-30: ping-pong 1.00–1.10× of cooperative); QD_EUNSUPPORTED (nothing
   launched) where the driver gives no TMA map */
static qd_status int8_wgmma(qd_cuda *c, const cuda_linear *d, const int8_t *q, int64_t m, const int_epi &e) {
    const bool coop = c->int8_coop;
    const int bn = coop ? I8G_BN : I8P_BN, smem = coop ? I8G_SMEM : I8P_SMEM;
    int8_wgmma_params p;
    memset(&p, 0, sizeof p);
    if (!qd_tma_map_bytes(&p.a_map, q, (uint64_t)m, (uint64_t)d->kp, I8G_BK, I8G_BM) ||
        !qd_tma_map_bytes(&p.w_map, d->w, (uint64_t)d->np, (uint64_t)d->kp, I8G_BK, (uint32_t)bn))
        return QD_EUNSUPPORTED;
    static bool smem_set[2] = {false, false}; /* (the attribute is per function, the same on every device) */
    if (!smem_set[coop]) {
        cudaError_t err = coop ? cudaFuncSetAttribute(int8_wgmma_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, I8G_SMEM)
                               : cudaFuncSetAttribute(int8_wgmma_pp_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, I8P_SMEM);
        if (err != cudaSuccess) return qd_cuda_fail(err, "int8 matmul (shared memory)");
        smem_set[coop] = true;
    }
    p.e = e;
    p.kblocks = (int)((d->kp + I8G_BK - 1) / I8G_BK);
    p.tiles_m = (int)((m + I8G_BM - 1) / I8G_BM), p.tiles_n = (int)((e.n + bn - 1) / bn);
    p.staged = e.yt == QD_DTYPE_BF16 && e.n % 8 == 0 && qd_cuda_aligned16(e.y);
    const int tiles = p.tiles_m * p.tiles_n;
    if (coop) {
        const int grid = tiles < c->sm_count ? tiles : c->sm_count;
        int8_wgmma_kernel<<<grid, I8G_THREADS, smem, c->stream>>>(p);
    } else {
        const int pairs = (tiles + 1) / 2, grid = pairs < c->sm_count ? pairs : c->sm_count; /* two consumers per CTA */
        int8_wgmma_pp_kernel<<<grid, I8G_THREADS, smem, c->stream>>>(p);
    }
    return launched("int8 matmul (wgmma)");
}

/* ------------------------------------------------------------------ the linear ------------------ */

/* *gelu in: the layer wants GELU-tanh on its output; every path here applies it in its epilogue */
qd_status qd_cuda_int8_linear(qd_cuda *c, const qd_linear *l, const cuda_linear *d, const qd_tensor *x, qd_tensor *y, int64_t m, bool *gelu) {
    const char *name = l->name ? l->name : "linear";
    const int64_t n = l->out_features, k = l->in_features, kp = d->kp, np = d->np, groups = d->int_groups;
    const bool stat = l->act == QD_ACT_STATIC_TENSOR;
    if ((m + IG_BM - 1) / IG_BM > 65535) return qd_fail(QD_EUNSUPPORTED, "layer '%s': %lld rows are more than the int8 kernels take", name, (long long)m);
    int8_t *q = NULL;
    float *sx = NULL;
    int32_t *sums = NULL, *dacc = NULL;
    qd_status s = qd_cuda_scratch(c, (size_t)(m * kp), (void **)&q);
    if (!s && !stat) s = qd_cuda_scratch(c, sizeof(float) * (size_t)m, (void **)&sx);
    if (!s && d->int_zero) s = qd_cuda_scratch(c, sizeof(int32_t) * (size_t)(m * groups), (void **)&sums);
    if (!s) {
        const bool vec = x->dtype == QD_DTYPE_BF16 && k % 8 == 0 && qd_cuda_aligned16(x->data);
        if (vec)
            int_quant_rows_kernel<true><<<(unsigned)m, qd_cuda_quant_threads(c, 128), 0, c->stream>>>(x->data, x->dtype, k, kp, stat, d->int4_act, d->input_scale,
                                                                                                 d->input_offset, c->quant_batch, q, sx);
        else
            int_quant_rows_kernel<false><<<(unsigned)m, 256, 0, c->stream>>>(x->data, x->dtype, k, kp, stat, d->int4_act, d->input_scale, d->input_offset, 1, q,
                                                                            sx);
        s = launched("int8 activation quantization");
    }
    if (!s && sums) {
        const int64_t gw = groups > 1 ? k / groups / 4 : kp / 4, warps = m * groups;
        int_code_sums_kernel<<<qd_cuda_blocks(warps * 32, 256), 256, 0, c->stream>>>(q, m, kp, gw, groups, sums);
        s = launched("int8 code sums");
    }
    const int_epi e = {d->int_scale, d->int_zero, d->int_qbias, d->bias, sx, sums, groups, *gelu, y->data, (int)y->dtype, m, n};
    const dim3 tiles((unsigned)((np + IG_BN - 1) / IG_BN), (unsigned)((m + IG_BM - 1) / IG_BM));
    if (!s && groups > 1) {
        qd_log_once_key("cuda-int-groupwise", QD_LOG_INFO,
                        "cuda: group-wise int8/int4 linears (e.g. '%s', %lld groups along K) run on CUDA cores (__dp4a), not tensor cores",
                        name, (long long)groups);
        int_gemm_dp4a_kernel<true><<<tiles, 256, 0, c->stream>>>(q, (const int8_t *)d->w, kp, np, k / groups / 4, e, NULL);
        s = launched("group-wise int8 matmul");
    } else if (!s) {
        bool wgmma = !c->int8_cores && !c->int8_lt; /* (for checks: cuBLASLt or CUDA cores instead) */
        if (wgmma) {
            s = int8_wgmma(c, d, q, m, e);
            if (s == QD_EUNSUPPORTED) {
                qd_log_once_key("cuda-int-no-tma", QD_LOG_WARN, "cuda: the driver gives no TMA map for layer '%s': int8 matmuls run on cuBLASLt", name);
                wgmma = false, s = QD_OK;
            }
        }
        if (!wgmma) s = qd_cuda_scratch(c, sizeof(int32_t) * (size_t)(m * np), (void **)&dacc);
        const bool cores = c->int8_cores;
        if (!s && !wgmma && !cores) s = qd_cuda_lt_matmul(c, name, m, np, kp, d->w, CUDA_R_8I, q, CUDA_R_8I, dacc, CUDA_R_32I, NULL, NULL);
        if (s == QD_EUNSUPPORTED)
            qd_log_once_key("cuda-int-lt-fallback", QD_LOG_WARN, "cuda: cuBLASLt has no int8 matmul for layer '%s' (M %lld, N %lld, K %lld): CUDA cores instead",
                            name, (long long)m, (long long)np, (long long)kp);
        if (!wgmma && (s == QD_EUNSUPPORTED || (!s && cores))) {
            int_gemm_dp4a_kernel<false><<<tiles, 256, 0, c->stream>>>(q, (const int8_t *)d->w, kp, np, 0, e, dacc);
            s = launched("int8 matmul (CUDA cores)");
        }
        if (!s && !wgmma) {
            const dim3 grid((unsigned)((n + 255) / 256), (unsigned)(m < 65535 ? m : 65535));
            int_epilogue_kernel<<<grid, 256, 0, c->stream>>>(dacc, np, e);
            s = launched("int8 epilogue");
        }
    }
    qd_cuda_scratch_free(c, q), qd_cuda_scratch_free(c, sx), qd_cuda_scratch_free(c, sums), qd_cuda_scratch_free(c, dacc);
    return s;
}
