/* Layout transforms between logical matrices and the on-disk layouts of quantized checkpoints.
 *
 * Every function here is an exact permutation (plus 4-bit packing where a layout packs nibbles): no
 * value is scaled, rounded or converted, so a pack followed by an unpack, or the reverse, gives back
 * the same bits. Scaling math belongs to the schemes that call these.
 *
 * Spec (../shared/spec/formats.md):
 *   §2.3        nibble order: element 2j in the low nibble; a hi-first file is fixed with
 *               qd_swap_nibbles() from core/codec.h (not repeated here).
 *   §3.7, §4.4  NVFP4 / MX block-scale layouts: linear vs swizzled 128×4 (and 8×4).
 *   §5.5        Nunchaku SVDQuant W4A4: qweight, int4 and fp4 wscales, per-channel vectors, low-rank.
 *   §5.6        AWQ W4A16 layers of the same files: qweight, and the modulation row interleave.
 *   §6.4        msModelSlim W4A8: int4 packed along N.
 *
 * Conventions: sizes are in elements unless a name says bytes; a "logical" matrix is row-major with
 * the dimensions in the order given, e.g. codes[n][k] is at n·K + k. 16-bit elements (bf16 / f16) are
 * moved as opaque 2-byte patterns and may sit at any alignment (checkpoint data is mmap'd and need not
 * be aligned), hence `void *` for them. Input and output buffers must not overlap. On bad dimensions a
 * function writes nothing and returns QD_EINVAL with a message naming the dimension and the rule. */
#ifndef QD_QUANT_PACKING_H
#define QD_QUANT_PACKING_H

#include <stddef.h>
#include <stdint.h>

#include "qdit.h"

/* ---- block-scale layouts (formats.md §3.7; MX E8M0 scales use the same layouts, §4.4) ----
 * The logical scale matrix is linear: sf[m][j] at m·cols + j (m = row of the weight or activation,
 * j = block index along K). Scales are single bytes (E4M3 or E8M0). */
typedef enum {
    /* cuBLAS / CUTLASS / TRT-LLM R128c4 (torch SWIZZLE_32_4_4): rows padded to 128, cols to 4; byte of
     * sf[m][j] = ((m/128)·(cols_p/4) + j/4)·512 + (m%32)·16 + ((m%128)/32)·4 + j%4. */
    QD_SF_LAYOUT_128X4,
    /* FlashInfer / TRT-LLM R8c4 (small-M activations): rows padded to 8, cols to 4; byte of sf[m][j] =
     * ((m/8)·(cols_p/4) + j/4)·32 + (m%8)·4 + j%4. */
    QD_SF_LAYOUT_8X4,
} qd_sf_layout;

/* Padded shape and byte size of the swizzled form of a rows × cols scale matrix. Any of the three
 * outputs may be NULL. rows, cols ≥ 0. */
qd_status qd_sf_swizzled_dims(qd_sf_layout layout, int64_t rows, int64_t cols, int64_t *rows_padded,
                              int64_t *cols_padded, size_t *bytes);

/* linear[rows][cols] → swizzled (qd_sf_swizzled_dims bytes); padding bytes are written as 0. */
qd_status qd_sf_swizzle(qd_sf_layout layout, const uint8_t *linear, int64_t rows, int64_t cols,
                        uint8_t *swizzled);

/* swizzled → linear[rows][cols], dropping the padding (rows and cols are the unpadded sizes). */
qd_status qd_sf_unswizzle(qd_sf_layout layout, const uint8_t *swizzled, int64_t rows, int64_t cols,
                          uint8_t *linear);

/* ---- Nunchaku SVDQuant W4A4 (formats.md §5.5) ----
 * Np, Kp are the padded sizes stored in the file (multiples of 128: the packer asserts N % 128 and
 * K % 128 and pads to them, §5.2); rank is a multiple of 16. Padding is part of the logical matrix:
 * callers crop to N, K themselves. */

/* §5.5.1 qweight (int4 and fp4 alike): packed = Np·Kp/2 bytes (stored int8 [Np, Kp/2]) ⇄
 * codes[Np][Kp], one 4-bit code per byte as stored in the nibble (int4: two's complement, 0x8..0xF =
 * −8..−1; fp4: E2M1 code). Packing reads only the low 4 bits of each code, so int8 values −8..7 may be
 * passed as they are. */
qd_status qd_svdq_qweight_unpack(const uint8_t *packed, int64_t np, int64_t kp, uint8_t *codes);
qd_status qd_svdq_qweight_pack(const uint8_t *codes, int64_t np, int64_t kp, uint8_t *packed);

/* §5.5.2 int4 wscales (group 64, 16-bit): packed = (Kp/64)·Np elements (stored [Kp/64, Np]) ⇄
 * scales[Np][Kp/64] — logical order [n][g], the same orientation as an NVFP4 weight_scale [N, K/16]. */
qd_status qd_svdq_wscales_int4_unpack(const void *packed, int64_t np, int64_t kp, void *scales);
qd_status qd_svdq_wscales_int4_pack(const void *scales, int64_t np, int64_t kp, void *packed);

/* §5.5.3 fp4 wscales (group 16, E4M3 bytes): packed = (Kp/16)·Np bytes (stored [Kp/16, Np]) ⇄
 * scales[Np][Kp/16], logical order [n][g]. */
qd_status qd_svdq_wscales_fp4_unpack(const uint8_t *packed, int64_t np, int64_t kp, uint8_t *scales);
qd_status qd_svdq_wscales_fp4_pack(const uint8_t *scales, int64_t np, int64_t kp, uint8_t *packed);

/* §5.5.4 per-channel vectors of 16-bit elements — bias, wcscales (length Np), smooth / smooth_factor,
 * smooth_orig / smooth_factor_orig (length Kp): packed[len] ⇄ v[len]; len a multiple of 128. */
qd_status qd_svdq_vector_unpack(const void *packed, int64_t len, void *v);
qd_status qd_svdq_vector_pack(const void *v, int64_t len, void *packed);

/* §5.5.5 low-rank down (proj_down / lora_down, stored [Kp, rank]) ⇄ down[rank][Kp] (nn.Linear layout:
 * lora_act = x·downᵀ), 16-bit elements. */
qd_status qd_svdq_lowrank_down_unpack(const void *packed, int64_t rank, int64_t kp, void *down);
qd_status qd_svdq_lowrank_down_pack(const void *down, int64_t rank, int64_t kp, void *packed);

/* §5.5.5 low-rank up (proj_up / lora_up, stored [Np, rank]) ⇄ up[Np][rank], 16-bit elements. */
qd_status qd_svdq_lowrank_up_unpack(const void *packed, int64_t np, int64_t rank, void *up);
qd_status qd_svdq_lowrank_up_pack(const void *up, int64_t np, int64_t rank, void *packed);

/* ---- AWQ W4A16 (formats.md §5.6) ----
 * wscales and wzeros [G, N] (16-bit, G = K/64 padded by the converter with zero rows) are stored
 * plainly, [g][n], with no permutation beyond the modulation interleave below: a caller reads them
 * directly and ignores rows g ≥ K/64. */

/* qweight (stored int32 [N/4, K/2], little-endian, taken here as its N·K/2 bytes) ⇄ codes[N][K], one
 * unsigned 4-bit code (0..15) per byte. N a multiple of 4, K a multiple of 64. Packing reads only the
 * low 4 bits of each code. */
qd_status qd_awq_qweight_unpack(const uint8_t *packed, int64_t n, int64_t k, uint8_t *codes);
qd_status qd_awq_qweight_pack(const uint8_t *codes, int64_t n, int64_t k, uint8_t *packed);

/* Modulation-layer output interleave (Flux / Qwen-Image norm*.linear, img_mod / txt_mod): with C chunks
 * (6 for a joint block, 3 for a single block), stored row i·C + c = original row c·(N/C) + i.
 * Both operate on a tensor viewed as [outer][n][inner_bytes] and permute the middle axis:
 *   a [N][K] matrix of codes         outer = 1, inner_bytes = K
 *   a [N] vector of 16-bit elements  outer = 1, inner_bytes = 2
 *   wscales / wzeros [G][N]          outer = G, inner_bytes = 2
 * n must be a multiple of chunks (chunks ≥ 1). The +1 baked into the bias of the "scale" chunks is
 * value math and stays with the caller. */
qd_status qd_awq_mod_interleave(const void *original, int64_t outer, int64_t n, size_t inner_bytes,
                                int64_t chunks, void *stored);
qd_status qd_awq_mod_deinterleave(const void *stored, int64_t outer, int64_t n, size_t inner_bytes,
                                  int64_t chunks, void *original);

/* ---- msModelSlim W4A8_DYNAMIC (formats.md §6.4) ----
 * q[N][K] int4 values −8..7 (one per int8) ⇄ packed[N/2][K] bytes, byte [n2][k] = (q[2·n2][k] & 0xF) |
 * (q[2·n2+1][k] << 4) (even n in the low nibble). N must be even. Unpacking sign-extends. */
qd_status qd_modelslim_w4a8_pack(const int8_t *q, int64_t n, int64_t k, uint8_t *packed);
qd_status qd_modelslim_w4a8_unpack(const uint8_t *packed, int64_t n, int64_t k, int8_t *q);

#endif
