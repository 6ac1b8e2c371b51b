/* Kernel lab (in the spirit of llm.c's dev/cuda): the FP8 GEMM under every FP8-tensor-core scheme (FP8, and the
 * W4A8 schemes after their weights are in E4M3), y[M, N] = (a[M, K]·w[N, K]ᵀ)·sa[m]·sw[n] in BF16.
 *
 *   variant 0  cuBLASLt's FP8 matmul with outer-vector scales: what the mainline runs today (linear.cu)
 *   variant 1  TMA + wgmma, warp-specialised: one producer warpgroup issuing TMA loads of 128×128-byte A and
 *              256×128-byte W tiles (128-byte swizzle) into a 4-stage ring guarded by mbarriers, two consumer
 *              warpgroups each accumulating a 64×256 tile with wgmma.m64n256k32 (E4M3 × E4M3 → f32), the scales
 *              and the BF16 conversion in the epilogue. The base for the W4A8 kernels of issue 9: a converter
 *              stage that expands 4-bit weights in shared memory between the TMA load and the wgmma, and
 *              SVDQuant's low-rank up-projection as a BF16 wgmma into the same accumulator.
 *
 * Usage: fp8_gemm_lab [variant] [M K N] — variant 1 is checked against variant 0 on random inputs (largest
 * relative difference), then both are timed (mean of 20 runs after 3). M % 128, N % 256 and K % 128 must be 0.
 *
 * STATUS (2026-11-30): written and compiled (sm_90a) without a GPU; not yet run. The next device session runs it
 * first with a small shape. */
#include <cublasLt.h>
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <cudaTypedefs.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(x)                                                                                                 \
    do {                                                                                                         \
        cudaError_t e_ = (x);                                                                                    \
        if (e_ != cudaSuccess) {                                                                                 \
            fprintf(stderr, "fp8_gemm_lab: %s: %s (line %d)\n", #x, cudaGetErrorString(e_), __LINE__);           \
            exit(1);                                                                                             \
        }                                                                                                        \
    } while (0)

enum { BM = 128, BN = 256, BK = 128, STAGES = 4, THREADS = 384 };
enum { A_TILE = BM * BK, W_TILE = BN * BK, STAGE_BYTES = A_TILE + W_TILE };

/* ---------------------------------------------------------------------------------------- PTX wrappers ---- */

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void mbar_init(uint64_t *bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count));
}

__device__ __forceinline__ void mbar_expect_tx(uint64_t *bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_arrive(uint64_t *bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}

__device__ __forceinline__ void mbar_wait(uint64_t *bar, uint32_t parity) {
    asm volatile(
        "{\n.reg .pred done;\nwait_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra wait_%=;\n}\n" ::"r"(smem_addr(bar)),
        "r"(parity)
        : "memory");
}

/* a 2-D TMA load of the box at (x = column in bytes, y = row) into shared memory, completing on bar */
__device__ __forceinline__ void tma_load_2d(void *dst, const CUtensorMap *map, int x, int y, uint64_t *bar) {
    asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(smem_addr(dst)),
                 "l"((uint64_t)map), "r"(x), "r"(y), "r"(smem_addr(bar))
                 : "memory");
}

/* the shared-memory matrix descriptor of a K-major tile with 128-byte rows under the 128-byte swizzle: start
   address, leading-dimension offset (unused for swizzled K-major: 1), stride offset 1024 bytes (8 rows of
   128 bytes: one swizzle atom), layout 1 = SWIZZLE_128B */
__device__ __forceinline__ uint64_t smem_desc(const void *p) {
    const uint64_t addr = smem_addr(p);
    return ((addr & 0x3FFFF) >> 4) | ((uint64_t)1 << 16) | ((uint64_t)(1024 >> 4) << 32) | ((uint64_t)1 << 62);
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }

/* d (128 f32 per thread, the m64n256 accumulator fragment) += A(desc a)·B(desc b)ᵀ over K = 32, FP8 E4M3 operands
   from shared memory (both K-major); scale_d = 0 starts a fresh accumulation */
__device__ __forceinline__ void wgmma_m64n256k32_e4m3(float *d, uint64_t a, uint64_t b, int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k32.f32.e4m3.e4m3 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "l"(a), "l"(b), "r"(scale_d));
}

/* ------------------------------------------------------------------------------------------- variant 1 ---- */

__global__ void __launch_bounds__(THREADS, 1)
    fp8_gemm_wgmma(const __grid_constant__ CUtensorMap a_map, const __grid_constant__ CUtensorMap w_map, const float *sa, const float *sw,
                   __nv_bfloat16 *y, int m, int n, int k) {
    extern __shared__ __align__(1024) uint8_t smem_raw[];
    uint8_t *smem = (uint8_t *)(((uintptr_t)smem_raw + 1023) & ~(uintptr_t)1023); /* the 128-byte swizzle wants 1024 */
    uint64_t *full = (uint64_t *)(smem + STAGES * STAGE_BYTES), *empty = full + STAGES;
    const int wg = threadIdx.x / 128, tid = threadIdx.x % 128;
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN, kt_count = k / BK;
    if (threadIdx.x == 0) {
        for (int s = 0; s < STAGES; s++) mbar_init(&full[s], 1), mbar_init(&empty[s], 2);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
    }
    __syncthreads();
    if (wg == 0) { /* producer */
        asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
        if (tid == 0) {
            for (int kt = 0; kt < kt_count; kt++) {
                const int s = kt % STAGES, round = kt / STAGES;
                if (round > 0) mbar_wait(&empty[s], (round - 1) & 1); /* the consumers released this stage */
                uint8_t *a_tile = smem + s * STAGE_BYTES, *w_tile = a_tile + A_TILE;
                mbar_expect_tx(&full[s], STAGE_BYTES);
                tma_load_2d(a_tile, &a_map, kt * BK, row0, &full[s]);
                tma_load_2d(w_tile, &w_map, kt * BK, col0, &full[s]);
            }
        }
        return;
    }
    asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
    const int c = wg - 1; /* this consumer's 64 rows of the tile */
    float d[128];
#pragma unroll
    for (int i = 0; i < 128; i++) d[i] = 0.0f;
    for (int kt = 0; kt < kt_count; kt++) {
        const int s = kt % STAGES;
        mbar_wait(&full[s], (kt / STAGES) & 1);
        const uint8_t *a_tile = smem + s * STAGE_BYTES + c * 64 * BK, *w_tile = smem + s * STAGE_BYTES + A_TILE;
        const uint64_t da = smem_desc(a_tile), dw = smem_desc(w_tile);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < BK / 32; ks++) /* 32 bytes of K further along the swizzled rows: +2 in address >> 4 */
            wgmma_m64n256k32_e4m3(d, da + 2 * ks, dw + 2 * ks, kt > 0 || ks > 0);
        wgmma_commit();
        wgmma_wait0();
        if (tid == 0) mbar_arrive(&empty[s]);
    }
    /* epilogue: the m64n256 fragment of thread tid holds rows 16·warp + lane/4 (+8) and columns 8j + 2·(lane%4) (+1) */
    const int warp = tid / 32, lane = tid % 32;
    const int r_lo = row0 + c * 64 + warp * 16 + lane / 4, r_hi = r_lo + 8;
    const float s_lo = sa[r_lo], s_hi = sa[r_hi];
#pragma unroll
    for (int j = 0; j < BN / 8; j++) {
        const int col = col0 + 8 * j + 2 * (lane % 4);
        const float w0 = sw[col], w1 = sw[col + 1];
        *(__nv_bfloat162 *)(y + (size_t)r_lo * n + col) = __floats2bfloat162_rn(d[4 * j] * s_lo * w0, d[4 * j + 1] * s_lo * w1);
        *(__nv_bfloat162 *)(y + (size_t)r_hi * n + col) = __floats2bfloat162_rn(d[4 * j + 2] * s_hi * w0, d[4 * j + 3] * s_hi * w1);
    }
    (void)m;
}

/* a row-major [rows][cols] byte matrix as a TMA map with box [box_rows][128 bytes], 128-byte swizzle */
static CUtensorMap byte_map(const void *base, uint64_t rows, uint64_t cols, uint32_t box_rows) {
    static PFN_cuTensorMapEncodeTiled_v12000 encode = NULL;
    if (!encode) {
        cudaDriverEntryPointQueryResult q;
        CHECK(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", (void **)&encode, 12000, cudaEnableDefault, &q));
        if (q != cudaDriverEntryPointSuccess || !encode) {
            fprintf(stderr, "fp8_gemm_lab: cuTensorMapEncodeTiled not found in the driver\n");
            exit(1);
        }
    }
    CUtensorMap map;
    const cuuint64_t dims[2] = {cols, rows}, strides[1] = {cols};
    const cuuint32_t box[2] = {BK, box_rows}, elem[2] = {1, 1};
    const CUresult r = encode(&map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, (void *)base, dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                              CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) {
        fprintf(stderr, "fp8_gemm_lab: cuTensorMapEncodeTiled failed (%d)\n", (int)r);
        exit(1);
    }
    return map;
}

/* ------------------------------------------------------------------------------------------- variant 0 ---- */

typedef struct {
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, ld;
    cublasLtMatmulAlgo_t algo;
    void *ws;
    size_t ws_bytes;
} lt_gemm;

#define LT(x)                                                                                                    \
    do {                                                                                                         \
        cublasStatus_t s_ = (x);                                                                                 \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                       \
            fprintf(stderr, "fp8_gemm_lab: %s: cuBLASLt status %d\n", #x, (int)s_);                              \
            exit(1);                                                                                             \
        }                                                                                                        \
    } while (0)

/* the mainline's form: D[N, M] col-major = W[K, N]ᵀ·A[K, M], outer-vector scales (sw per column of D's N, sa per M) */
static void lt_init(lt_gemm *g, int m, int n, int k) {
    LT(cublasLtCreate(&g->lt));
    LT(cublasLtMatmulDescCreate(&g->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t T = CUBLAS_OP_T, N = CUBLAS_OP_N;
    const int32_t outer = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
    LT(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSA, &T, sizeof T));
    LT(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_TRANSB, &N, sizeof N));
    LT(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &outer, sizeof outer));
    LT(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &outer, sizeof outer));
    LT(cublasLtMatrixLayoutCreate(&g->la, CUDA_R_8F_E4M3, k, n, k));
    LT(cublasLtMatrixLayoutCreate(&g->lb, CUDA_R_8F_E4M3, k, m, k));
    LT(cublasLtMatrixLayoutCreate(&g->ld, CUDA_R_16BF, n, m, n));
    g->ws_bytes = 64 << 20;
    CHECK(cudaMalloc(&g->ws, g->ws_bytes));
    cublasLtMatmulPreference_t pref;
    LT(cublasLtMatmulPreferenceCreate(&pref));
    LT(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &g->ws_bytes, sizeof g->ws_bytes));
    cublasLtMatmulHeuristicResult_t h;
    int found = 0;
    /* the heuristic reads the scale pointers' presence: set (aligned) dummies first */
    static float *dummy = NULL;
    if (!dummy) CHECK(cudaMalloc(&dummy, 256));
    LT(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &dummy, sizeof dummy));
    LT(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &dummy, sizeof dummy));
    LT(cublasLtMatmulAlgoGetHeuristic(g->lt, g->op, g->la, g->lb, g->ld, g->ld, pref, 1, &h, &found));
    if (!found) {
        fprintf(stderr, "fp8_gemm_lab: cuBLASLt has no FP8 algorithm for this shape\n");
        exit(1);
    }
    g->algo = h.algo;
    cublasLtMatmulPreferenceDestroy(pref);
}

static void lt_run(lt_gemm *g, const void *a, const void *w, const float *sa, const float *sw, void *y) {
    const float one = 1.0f, zero = 0.0f;
    LT(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sw, sizeof sw));
    LT(cublasLtMatmulDescSetAttribute(g->op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sa, sizeof sa));
    LT(cublasLtMatmul(g->lt, g->op, &one, w, g->la, a, g->lb, &zero, y, g->ld, y, g->ld, &g->algo, g->ws, g->ws_bytes, 0));
}

/* ------------------------------------------------------------------------------------------------ main ---- */

static uint64_t rng = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

int main(int argc, char **argv) {
    const int variant = argc > 1 ? atoi(argv[1]) : 1;
    const int m = argc > 4 ? atoi(argv[2]) : 4608, k = argc > 4 ? atoi(argv[3]) : 3072, n = argc > 4 ? atoi(argv[4]) : 12288;
    if (m % BM || n % BN || k % BK || variant < 0 || variant > 1) {
        fprintf(stderr, "usage: fp8_gemm_lab [0|1] [M K N] (M %% %d, K %% %d, N %% %d == 0)\n", BM, BK, BN);
        return 2;
    }
    const size_t na = (size_t)m * k, nw = (size_t)n * k, ny = (size_t)m * n;
    uint8_t *ha = (uint8_t *)malloc(na), *hw = (uint8_t *)malloc(nw);
    float *hsa = (float *)malloc(sizeof(float) * m), *hsw = (float *)malloc(sizeof(float) * n);
    for (size_t i = 0; i < na; i++) ha[i] = __nv_fp8_e4m3(4.0f * frand()).__x;
    for (size_t i = 0; i < nw; i++) hw[i] = __nv_fp8_e4m3(4.0f * frand()).__x;
    for (int i = 0; i < m; i++) hsa[i] = 0.01f * (1.5f + frand());
    for (int i = 0; i < n; i++) hsw[i] = 0.01f * (1.5f + frand());
    uint8_t *a, *w;
    float *sa, *sw;
    __nv_bfloat16 *y0, *y1;
    CHECK(cudaMalloc(&a, na)); CHECK(cudaMalloc(&w, nw)); CHECK(cudaMalloc(&sa, sizeof(float) * m)); CHECK(cudaMalloc(&sw, sizeof(float) * n));
    CHECK(cudaMalloc(&y0, 2 * ny)); CHECK(cudaMalloc(&y1, 2 * ny));
    CHECK(cudaMemcpy(a, ha, na, cudaMemcpyHostToDevice)); CHECK(cudaMemcpy(w, hw, nw, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(sa, hsa, sizeof(float) * m, cudaMemcpyHostToDevice)); CHECK(cudaMemcpy(sw, hsw, sizeof(float) * n, cudaMemcpyHostToDevice));
    lt_gemm g;
    lt_init(&g, m, n, k);
    const CUtensorMap a_map = byte_map(a, m, k, BM), w_map = byte_map(w, n, k, BN);
    const size_t smem = STAGES * STAGE_BYTES + 2 * STAGES * sizeof(uint64_t) + 1024;
    CHECK(cudaFuncSetAttribute(fp8_gemm_wgmma, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    const dim3 grid(n / BN, m / BM);
    lt_run(&g, a, w, sa, sw, y0);
    if (variant == 1) {
        fp8_gemm_wgmma<<<grid, THREADS, smem>>>(a_map, w_map, sa, sw, y1, m, n, k);
        CHECK(cudaGetLastError());
        CHECK(cudaDeviceSynchronize());
        __nv_bfloat16 *h0 = (__nv_bfloat16 *)malloc(2 * ny), *h1 = (__nv_bfloat16 *)malloc(2 * ny);
        CHECK(cudaMemcpy(h0, y0, 2 * ny, cudaMemcpyDeviceToHost)); CHECK(cudaMemcpy(h1, y1, 2 * ny, cudaMemcpyDeviceToHost));
        double worst = 0, scale = 0;
        for (size_t i = 0; i < ny; i++) scale = fmax(scale, fabs((double)__bfloat162float(h0[i])));
        for (size_t i = 0; i < ny; i++) worst = fmax(worst, fabs((double)__bfloat162float(h1[i]) - __bfloat162float(h0[i])));
        printf("variant 1 vs cuBLASLt: largest |difference| %.3g of outputs up to %.3g (%s)\n", worst, scale,
               worst <= 1e-2 * scale ? "ok" : "WRONG");
        free(h0), free(h1);
    }
    cudaEvent_t e0, e1;
    CHECK(cudaEventCreate(&e0)); CHECK(cudaEventCreate(&e1));
    const double flop = 2.0 * m * n * (double)k;
    for (int v = 0; v <= variant; v++) {
        for (int r = 0; r < 3 + 20; r++) {
            if (r == 3) CHECK(cudaEventRecord(e0));
            if (v == 0) lt_run(&g, a, w, sa, sw, y0);
            else fp8_gemm_wgmma<<<grid, THREADS, smem>>>(a_map, w_map, sa, sw, y1, m, n, k);
        }
        CHECK(cudaEventRecord(e1)); CHECK(cudaEventSynchronize(e1));
        float ms = 0;
        CHECK(cudaEventElapsedTime(&ms, e0, e1));
        printf("| variant %d (%s) | M %d K %d N %d | %.3f ms | %.1f TFLOP/s |\n", v, v ? "TMA + wgmma" : "cuBLASLt", m, k, n, ms / 20,
               flop / (ms / 20 * 1e-3) / 1e12);
    }
    return 0;
}
