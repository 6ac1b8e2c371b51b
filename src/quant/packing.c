/* Layout transforms between logical matrices and on-disk quantized layouts: swizzled block scales
 * (formats.md §3.7, §4.4), Nunchaku SVDQuant packing (§5.5.1–5.5.5), AWQ W4A16 qweight and the
 * modulation interleave (§5.6), msModelSlim W4A8 packing along N (§6.4). Nibble order per §2.3.
 *
 * Each layout is written once, as the closed-form "logical (row, col) → storage index" map of the spec,
 * and both directions use that same map (scatter to pack, gather to unpack), so they cannot disagree.
 * The tests check the maps against storage-order walks written from the spec's tensor-view wording,
 * against the spec's vectors and against files made by Nunchaku's own packer.
 * All index math is int64_t: a FLUX MLP weight alone has 37M codes, and products of tile counts must
 * not wrap even on a platform with a 32-bit int. These run once per layer at load, so clarity wins
 * over speed; only the innermost runs (8 codes of one qweight word) are unrolled by hand. */
#include "quant/packing.h"

#include <stdbool.h>
#include <string.h>

#include "core/status.h"

/* ---- validation ---- */

static qd_status check_dim(const char *what, const char *name, int64_t v, int64_t multiple,
                           const char *section) {
    if (v < 0) return qd_fail(QD_EINVAL, "%s: %s = %lld must not be negative", what, name, (long long)v);
    if (multiple > 1 && v % multiple != 0)
        return qd_fail(QD_EINVAL, "%s: %s = %lld must be a multiple of %lld (formats.md %s)", what, name,
                       (long long)v, (long long)multiple, section);
    return QD_OK;
}

/* a·b without overflow, and small enough to index memory (size_t may be 32-bit). */
static qd_status check_product(const char *what, int64_t a, int64_t b, int64_t *out) {
    if (a != 0 && b > INT64_MAX / a)
        return qd_fail(QD_EINVAL, "%s: %lld x %lld overflows 64 bits", what, (long long)a, (long long)b);
    if ((uint64_t)(a * b) > (uint64_t)SIZE_MAX)
        return qd_fail(QD_EINVAL, "%s: %lld bytes do not fit in memory on this platform", what,
                       (long long)(a * b));
    *out = a * b;
    return QD_OK;
}

static qd_status check_buffers(const char *what, int64_t bytes, const void *in, const void *out) {
    if (bytes > 0 && (in == NULL || out == NULL))
        return qd_fail(QD_EINVAL, "%s: NULL buffer for %lld bytes", what, (long long)bytes);
    return QD_OK;
}

/* A two-dimensional transform: rows and cols non-negative multiples of the given steps, the
 * rows·cols·elem_bytes bytes addressable, buffers present. */
static qd_status check_2d(const char *what, const char *section, const char *rows_name, int64_t rows,
                          int64_t rows_multiple, const char *cols_name, int64_t cols, int64_t cols_multiple,
                          int64_t elem_bytes, const void *in, const void *out) {
    qd_status s;
    int64_t count = 0, bytes = 0;
    if ((s = check_dim(what, rows_name, rows, rows_multiple, section)) != QD_OK) return s;
    if ((s = check_dim(what, cols_name, cols, cols_multiple, section)) != QD_OK) return s;
    if ((s = check_product(what, rows, cols, &count)) != QD_OK) return s;
    if ((s = check_product(what, count, elem_bytes, &bytes)) != QD_OK) return s;
    return check_buffers(what, bytes, in, out);
}

static qd_status check_1d(const char *what, const char *section, const char *name, int64_t len,
                          int64_t multiple, int64_t elem_bytes, const void *in, const void *out) {
    qd_status s;
    int64_t bytes = 0;
    if ((s = check_dim(what, name, len, multiple, section)) != QD_OK) return s;
    if ((s = check_product(what, len, elem_bytes, &bytes)) != QD_OK) return s;
    return check_buffers(what, bytes, in, out);
}

/* Copy one 16-bit element between possibly unaligned buffers (mmap'd checkpoints need not align). */
static inline void move16(void *dst, int64_t di, const void *src, int64_t si) {
    memcpy((uint8_t *)dst + 2 * di, (const uint8_t *)src + 2 * si, 2);
}

/* ---- block-scale layouts (§3.7) ---- */

static int64_t sf_tile_rows(qd_sf_layout layout) { return layout == QD_SF_LAYOUT_8X4 ? 8 : 128; }

/* Byte offset of sf[m][j] in the swizzled buffer; col_tiles = cols_padded / 4. */
static inline int64_t sf_offset(qd_sf_layout layout, int64_t m, int64_t j, int64_t col_tiles) {
    if (layout == QD_SF_LAYOUT_8X4) return ((m / 8) * col_tiles + j / 4) * 32 + (m % 8) * 4 + j % 4;
    /* 128×4: a 512-byte tile is [32][4][4] = (m%32, (m%128)/32, j%4), so rows 0, 32, 64, 96 of a tile
     * share one 16-byte line — what one thread of the block-scaled MMA loads. */
    return ((m / 128) * col_tiles + j / 4) * 512 + (m % 32) * 16 + ((m % 128) / 32) * 4 + j % 4;
}

qd_status qd_sf_swizzled_dims(qd_sf_layout layout, int64_t rows, int64_t cols, int64_t *rows_padded,
                              int64_t *cols_padded, size_t *bytes) {
    const char *what = "swizzled scale layout";
    if (layout != QD_SF_LAYOUT_128X4 && layout != QD_SF_LAYOUT_8X4)
        return qd_fail(QD_EINVAL, "%s: unknown layout %d", what, (int)layout);
    qd_status s;
    if ((s = check_dim(what, "rows", rows, 1, "§3.7")) != QD_OK) return s;
    if ((s = check_dim(what, "cols", cols, 1, "§3.7")) != QD_OK) return s;
    const int64_t tr = sf_tile_rows(layout);
    if (rows > INT64_MAX - tr || cols > INT64_MAX - 4)
        return qd_fail(QD_EINVAL, "%s: %lld x %lld scales overflow 64 bits when padded", what,
                       (long long)rows, (long long)cols);
    const int64_t rp = (rows + tr - 1) / tr * tr, cp = (cols + 3) / 4 * 4;
    int64_t total = 0;
    if ((s = check_product(what, rp, cp, &total)) != QD_OK) return s;
    if (rows_padded) *rows_padded = rp;
    if (cols_padded) *cols_padded = cp;
    if (bytes) *bytes = (size_t)total;
    return QD_OK;
}

qd_status qd_sf_swizzle(qd_sf_layout layout, const uint8_t *linear, int64_t rows, int64_t cols,
                        uint8_t *swizzled) {
    int64_t cp;
    size_t bytes;
    qd_status s = qd_sf_swizzled_dims(layout, rows, cols, NULL, &cp, &bytes);
    if (s != QD_OK) return s;
    if ((s = check_buffers("swizzle scales", (int64_t)bytes, linear, swizzled)) != QD_OK) return s;
    if (bytes == 0) return QD_OK;
    /* Kernels read whole tiles, so the padding must be defined; zero bytes are what the spec and every
     * producer write (§3.7), and the padded blocks only ever scale zero elements. */
    memset(swizzled, 0, bytes);
    for (int64_t m = 0; m < rows; m++)
        for (int64_t j = 0; j < cols; j++) swizzled[sf_offset(layout, m, j, cp / 4)] = linear[m * cols + j];
    return QD_OK;
}

qd_status qd_sf_unswizzle(qd_sf_layout layout, const uint8_t *swizzled, int64_t rows, int64_t cols,
                          uint8_t *linear) {
    int64_t cp;
    size_t bytes;
    qd_status s = qd_sf_swizzled_dims(layout, rows, cols, NULL, &cp, &bytes);
    if (s != QD_OK) return s;
    if ((s = check_buffers("unswizzle scales", (int64_t)bytes, swizzled, linear)) != QD_OK) return s;
    for (int64_t m = 0; m < rows; m++)
        for (int64_t j = 0; j < cols; j++) linear[m * cols + j] = swizzled[sf_offset(layout, m, j, cp / 4)];
    return QD_OK;
}

/* ---- Nunchaku SVDQuant (§5.5) ---- */

/* §5.5.1: the uint32 word holding Q[n][k..k+7] (k a multiple of 8; nibble r of the word = k + r).
 * Tiles of 128 n × 64 k; inside, 8 n-packs of 16 rows, then the MMA lane (nl·4 + kl), then the lane's
 * 4 registers (n+0,k+0), (n+0,k+32), (n+8,k+0), (n+8,k+32). */
static inline int64_t svdq_qweight_word(int64_t n, int64_t k, int64_t k_tiles) {
    const int64_t nt = n / 128, npack = (n % 128) / 16, nps = (n % 16) / 8, nl = n % 8;
    const int64_t kt = k / 64, kps = (k % 64) / 32, kl = (k % 32) / 8;
    return ((((nt * k_tiles + kt) * 8 + npack) * 8 + nl) * 4 + kl) * 4 + nps * 2 + kps;
}

qd_status qd_svdq_qweight_unpack(const uint8_t *packed, int64_t np, int64_t kp, uint8_t *codes) {
    qd_status s = check_2d("svdq qweight unpack", "§5.5.1", "Np", np, 128, "Kp", kp, 128, 1, packed, codes);
    if (s != QD_OK) return s;
    for (int64_t n = 0; n < np; n++)
        for (int64_t k = 0; k < kp; k += 8) {
            const uint8_t *w = packed + 4 * svdq_qweight_word(n, k, kp / 64);
            uint8_t *q = codes + n * kp + k;
            for (int b = 0; b < 4; b++) { /* §2.3: the even k in the low nibble */
                q[2 * b] = (uint8_t)(w[b] & 0x0F);
                q[2 * b + 1] = (uint8_t)(w[b] >> 4);
            }
        }
    return QD_OK;
}

qd_status qd_svdq_qweight_pack(const uint8_t *codes, int64_t np, int64_t kp, uint8_t *packed) {
    qd_status s = check_2d("svdq qweight pack", "§5.5.1", "Np", np, 128, "Kp", kp, 128, 1, codes, packed);
    if (s != QD_OK) return s;
    /* The map is a bijection onto the Np·Kp/2 bytes, so every byte is written exactly once. */
    for (int64_t n = 0; n < np; n++)
        for (int64_t k = 0; k < kp; k += 8) {
            uint8_t *w = packed + 4 * svdq_qweight_word(n, k, kp / 64);
            const uint8_t *q = codes + n * kp + k;
            for (int b = 0; b < 4; b++) w[b] = (uint8_t)((q[2 * b] & 0x0F) | (q[2 * b + 1] & 0x0F) << 4);
        }
    return QD_OK;
}

/* §5.5.2 / §5.5.4: position of channel m (0..127) inside its 128-channel run. With m = a·16 + b·8 + c·2
 * + d, MMA lane c of n-pack a holds accumulator columns {0,1} + 2c of rows +0 and +8 — hence the order
 * 0 1 8 9 2 3 10 11 … */
static inline int64_t svdq_channel_slot(int64_t m) {
    const int64_t a = m / 16, b = (m / 8) % 2, c = (m % 8) / 2, d = m % 2;
    return a * 16 + c * 4 + b * 2 + d;
}

static inline int64_t svdq_wscale_int4_index(int64_t n, int64_t g, int64_t groups) {
    return ((n / 128) * groups + g) * 128 + svdq_channel_slot(n % 128);
}

/* §5.5.3: one 32-bit word = the 4 E4M3 scales of channel n for one 64-wide k-step (groups 4·(g/4) ..
 * +3, lowest group in the low byte); lane l·4 + q holds channels +0/+32/+64/+96 of n%128 = q·8 + l. */
static inline int64_t svdq_wscale_fp4_index(int64_t n, int64_t g, int64_t groups) {
    const int64_t m = n % 128, sub = m / 32, q = (m % 32) / 8, l = m % 8;
    return ((((n / 128) * (groups / 4) + g / 4) * 8 + l) * 4 + q) * 16 + sub * 4 + g % 4;
}

/* §5.5.5: both low-rank matrices use 16×16 fragments of 256 elements. `frow` is the fragment's row
 * role (r for down, n for up), `fcol` its column role (k for down, r for up). Fragments are ordered
 * by the tile of the non-rank dimension (`outer_tile`: k/16 for down, n/16 for up), then by the rank
 * tile; inside, lane nl·4 + kl holds 2 registers per row half × column half, each register 2
 * consecutive columns. */
static inline int64_t svdq_lowrank_index(int64_t frow, int64_t fcol, int64_t outer_tile, int64_t rank_tile,
                                         int64_t rank_tiles) {
    const int64_t nl = frow % 8, row_half = (frow % 16) / 8;
    const int64_t kl = (fcol % 8) / 2, col_half = (fcol % 16) / 8, rk = fcol % 2;
    const int64_t inner = (((nl * 4 + kl) * 2 + row_half) * 2 + col_half) * 2 + rk;
    return (outer_tile * rank_tiles + rank_tile) * 256 + inner;
}

/* The element-permuting SVDQ layouts, one worker each. `pack` picks the direction: logical → stored
 * (scatter) or stored → logical (gather), always through the same index map. */
typedef enum {
    SVDQ_WSCALES_INT4,
    SVDQ_WSCALES_FP4,
    SVDQ_VECTOR,
    SVDQ_LOWRANK_DOWN,
    SVDQ_LOWRANK_UP,
} svdq_layout;

static void svdq_permute(svdq_layout layout, bool pack, const void *from, void *to, int64_t rows,
                         int64_t cols) {
    const uint8_t *src = from;
    uint8_t *dst = to;
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) {
            const int64_t logical = i * cols + j;
            int64_t stored = 0;
            switch (layout) {
            case SVDQ_WSCALES_INT4: stored = svdq_wscale_int4_index(i, j, cols); break;
            case SVDQ_WSCALES_FP4: stored = svdq_wscale_fp4_index(i, j, cols); break;
            case SVDQ_VECTOR: stored = svdq_wscale_int4_index(i, 0, 1); break; /* rows = length, cols = 1 */
            case SVDQ_LOWRANK_DOWN: stored = svdq_lowrank_index(i, j, j / 16, i / 16, rows / 16); break;
            case SVDQ_LOWRANK_UP: stored = svdq_lowrank_index(i, j, i / 16, j / 16, cols / 16); break;
            }
            if (layout == SVDQ_WSCALES_FP4) { /* E4M3 bytes; everything else is 16-bit */
                if (pack)
                    dst[stored] = src[logical];
                else
                    dst[logical] = src[stored];
            } else if (pack) {
                move16(dst, stored, src, logical);
            } else {
                move16(dst, logical, src, stored);
            }
        }
}

qd_status qd_svdq_wscales_int4_unpack(const void *packed, int64_t np, int64_t kp, void *scales) {
    qd_status s = check_2d("svdq int4 wscales unpack", "§5.5.2",
                           "Np", np, 128, "Kp", kp, 128, 2, packed, scales);
    if (s == QD_OK) svdq_permute(SVDQ_WSCALES_INT4, false, packed, scales, np, kp / 64);
    return s;
}

qd_status qd_svdq_wscales_int4_pack(const void *scales, int64_t np, int64_t kp, void *packed) {
    qd_status s = check_2d("svdq int4 wscales pack", "§5.5.2",
                           "Np", np, 128, "Kp", kp, 128, 2, scales, packed);
    if (s == QD_OK) svdq_permute(SVDQ_WSCALES_INT4, true, scales, packed, np, kp / 64);
    return s;
}

qd_status qd_svdq_wscales_fp4_unpack(const uint8_t *packed, int64_t np, int64_t kp, uint8_t *scales) {
    qd_status s = check_2d("svdq fp4 wscales unpack", "§5.5.3",
                           "Np", np, 128, "Kp", kp, 128, 1, packed, scales);
    if (s == QD_OK) svdq_permute(SVDQ_WSCALES_FP4, false, packed, scales, np, kp / 16);
    return s;
}

qd_status qd_svdq_wscales_fp4_pack(const uint8_t *scales, int64_t np, int64_t kp, uint8_t *packed) {
    qd_status s = check_2d("svdq fp4 wscales pack", "§5.5.3",
                           "Np", np, 128, "Kp", kp, 128, 1, scales, packed);
    if (s == QD_OK) svdq_permute(SVDQ_WSCALES_FP4, true, scales, packed, np, kp / 16);
    return s;
}

qd_status qd_svdq_vector_unpack(const void *packed, int64_t len, void *v) {
    qd_status s = check_1d("svdq vector unpack", "§5.5.4", "length", len, 128, 2, packed, v);
    if (s == QD_OK) svdq_permute(SVDQ_VECTOR, false, packed, v, len, 1);
    return s;
}

qd_status qd_svdq_vector_pack(const void *v, int64_t len, void *packed) {
    qd_status s = check_1d("svdq vector pack", "§5.5.4", "length", len, 128, 2, v, packed);
    if (s == QD_OK) svdq_permute(SVDQ_VECTOR, true, v, packed, len, 1);
    return s;
}

qd_status qd_svdq_lowrank_down_unpack(const void *packed, int64_t rank, int64_t kp, void *down) {
    qd_status s = check_2d("svdq proj_down unpack", "§5.5.5",
                           "rank", rank, 16, "Kp", kp, 128, 2, packed, down);
    if (s == QD_OK) svdq_permute(SVDQ_LOWRANK_DOWN, false, packed, down, rank, kp);
    return s;
}

qd_status qd_svdq_lowrank_down_pack(const void *down, int64_t rank, int64_t kp, void *packed) {
    qd_status s = check_2d("svdq proj_down pack", "§5.5.5", "rank", rank, 16, "Kp", kp, 128, 2, down, packed);
    if (s == QD_OK) svdq_permute(SVDQ_LOWRANK_DOWN, true, down, packed, rank, kp);
    return s;
}

qd_status qd_svdq_lowrank_up_unpack(const void *packed, int64_t np, int64_t rank, void *up) {
    qd_status s = check_2d("svdq proj_up unpack", "§5.5.5", "Np", np, 128, "rank", rank, 16, 2, packed, up);
    if (s == QD_OK) svdq_permute(SVDQ_LOWRANK_UP, false, packed, up, np, rank);
    return s;
}

qd_status qd_svdq_lowrank_up_pack(const void *up, int64_t np, int64_t rank, void *packed) {
    qd_status s = check_2d("svdq proj_up pack", "§5.5.5", "Np", np, 128, "rank", rank, 16, 2, up, packed);
    if (s == QD_OK) svdq_permute(SVDQ_LOWRANK_UP, true, up, packed, np, rank);
    return s;
}

/* ---- AWQ W4A16 (§5.6) ---- */

/* Nibble index (byte = index/2, high nibble when odd) of Q[n][k]. Each uint16 holds k = j, j+8, j+16,
 * j+24 of one 32-run at nibbles 0..3 (the GEMV kernel expands one uint16 into 4 strided halves), two
 * 32-runs of a 64-group side by side (t = 0..15), and 4 output rows interleaved per 64-group. */
static inline int64_t awq_nibble_index(int64_t n, int64_t k, int64_t k_groups) {
    const int64_t a = (k % 32) / 8, t = ((k / 32) % 2) * 8 + k % 8;
    const int64_t idx16 = (((n / 4) * k_groups + k / 64) * 4 + n % 4) * 16 + t;
    return idx16 * 4 + a;
}

qd_status qd_awq_qweight_unpack(const uint8_t *packed, int64_t n, int64_t k, uint8_t *codes) {
    qd_status s = check_2d("awq qweight unpack", "§5.6", "N", n, 4, "K", k, 64, 1, packed, codes);
    if (s != QD_OK) return s;
    for (int64_t row = 0; row < n; row++)
        for (int64_t col = 0; col < k; col++) {
            const int64_t nib = awq_nibble_index(row, col, k / 64);
            codes[row * k + col] = (uint8_t)((packed[nib / 2] >> (4 * (nib % 2))) & 0x0F);
        }
    return QD_OK;
}

qd_status qd_awq_qweight_pack(const uint8_t *codes, int64_t n, int64_t k, uint8_t *packed) {
    qd_status s = check_2d("awq qweight pack", "§5.6", "N", n, 4, "K", k, 64, 1, codes, packed);
    if (s != QD_OK) return s;
    /* The two nibbles of a byte come from k and k+8, not neighbours, so fill by OR into a cleared buffer. */
    memset(packed, 0, (size_t)(n * k / 2));
    for (int64_t row = 0; row < n; row++)
        for (int64_t col = 0; col < k; col++) {
            const int64_t nib = awq_nibble_index(row, col, k / 64);
            packed[nib / 2] |= (uint8_t)((codes[row * k + col] & 0x0F) << (4 * (nib % 2)));
        }
    return QD_OK;
}

static qd_status awq_mod_check(const char *what, const void *in, int64_t outer, int64_t n, size_t inner_bytes,
                               int64_t chunks, const void *out) {
    qd_status s;
    if (chunks < 1) return qd_fail(QD_EINVAL, "%s: chunks = %lld must be at least 1", what, (long long)chunks);
    if ((s = check_dim(what, "outer", outer, 1, "§5.6")) != QD_OK) return s;
    if ((s = check_dim(what, "N", n, chunks, "§5.6")) != QD_OK) return s;
    if (inner_bytes > (size_t)INT64_MAX)
        return qd_fail(QD_EINVAL, "%s: inner_bytes = %zu is too large", what, inner_bytes);
    int64_t rows = 0, bytes = 0;
    if ((s = check_product(what, outer, n, &rows)) != QD_OK) return s;
    if ((s = check_product(what, rows, (int64_t)inner_bytes, &bytes)) != QD_OK) return s;
    return check_buffers(what, bytes, in, out);
}

qd_status qd_awq_mod_interleave(const void *original, int64_t outer, int64_t n, size_t inner_bytes,
                                int64_t chunks, void *stored) {
    qd_status s = awq_mod_check("awq modulation interleave", original, outer, n, inner_bytes, chunks, stored);
    if (s != QD_OK) return s;
    const int64_t per = n / chunks, ib = (int64_t)inner_bytes;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < per; i++)
            for (int64_t c = 0; c < chunks; c++)
                memcpy((uint8_t *)stored + (o * n + i * chunks + c) * ib,
                       (const uint8_t *)original + (o * n + c * per + i) * ib, inner_bytes);
    return QD_OK;
}

qd_status qd_awq_mod_deinterleave(const void *stored, int64_t outer, int64_t n, size_t inner_bytes,
                                  int64_t chunks, void *original) {
    qd_status s = awq_mod_check("awq modulation deinterleave", stored, outer, n, inner_bytes, chunks, original);
    if (s != QD_OK) return s;
    const int64_t per = n / chunks, ib = (int64_t)inner_bytes;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < per; i++)
            for (int64_t c = 0; c < chunks; c++)
                memcpy((uint8_t *)original + (o * n + c * per + i) * ib,
                       (const uint8_t *)stored + (o * n + i * chunks + c) * ib, inner_bytes);
    return QD_OK;
}

/* ---- msModelSlim W4A8 (§6.4) ---- */

qd_status qd_modelslim_w4a8_pack(const int8_t *q, int64_t n, int64_t k, uint8_t *packed) {
    qd_status s = check_2d("msmodelslim w4a8 pack", "§6.4", "N", n, 2, "K", k, 1, 1, q, packed);
    if (s != QD_OK) return s;
    for (int64_t n2 = 0; n2 < n / 2; n2++)
        for (int64_t col = 0; col < k; col++)
            packed[n2 * k + col] = (uint8_t)(((uint8_t)q[2 * n2 * k + col] & 0x0F) |
                                             ((uint8_t)q[(2 * n2 + 1) * k + col] & 0x0F) << 4);
    return QD_OK;
}

qd_status qd_modelslim_w4a8_unpack(const uint8_t *packed, int64_t n, int64_t k, int8_t *q) {
    qd_status s = check_2d("msmodelslim w4a8 unpack", "§6.4", "N", n, 2, "K", k, 1, 1, packed, q);
    if (s != QD_OK) return s;
    for (int64_t n2 = 0; n2 < n / 2; n2++)
        for (int64_t col = 0; col < k; col++) {
            const uint8_t b = packed[n2 * k + col];
            /* Sign-extend a nibble without relying on implementation-defined shifts of negatives. */
            q[2 * n2 * k + col] = (int8_t)((int)(b & 0x0F) - ((b & 0x08) ? 16 : 0));
            q[(2 * n2 + 1) * k + col] = (int8_t)((int)(b >> 4) - ((b & 0x80) ? 16 : 0));
        }
    return QD_OK;
}
