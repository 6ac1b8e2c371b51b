/* Tests for quant/packing.c: the layout transforms of formats.md §3.7 (swizzled block scales), §5.5
 * (Nunchaku SVDQuant), §5.6 (AWQ W4A16 and the modulation interleave) and §6.4 (msModelSlim W4A8).
 *
 * Three kinds of evidence, each independent of the library's index formulas:
 *  - storage-order walks: for every layout the expected packed buffer is built here by nested loops
 *    that visit the stored elements in memory order, following the spec's tensor-view wording
 *    ("[Mp/128, Kp/4, 32, 4, 4]", "8 n-packs of 16 rows, then lane, then 4 registers", …), while the
 *    library computes one closed-form index per logical element. Random data and random sizes are
 *    drawn fresh on every run (seed printed; replay with QDIT_TEST_SEED);
 *  - the vectors of formats.md §7 (TRT-LLM row pattern, qweight byte map, scale orders, proj_down);
 *  - ../shared/fixtures/nunchaku_packing, written by Nunchaku's real packer: every packed.* tensor is
 *    unpacked and compared with its plain.* source, and packing it again reproduces the file bytes.
 * Round trips (pack ∘ unpack and unpack ∘ pack) and the dimension checks complete it. */
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "io/safetensors.h"
#include "quant/packing.h"
#include "qdit.h"

static uint64_t rng;

static int64_t rand_between(int64_t lo, int64_t hi) { /* inclusive */
    return lo + (int64_t)(qt_rand_u64(&rng) % (uint64_t)(hi - lo + 1));
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static void *random_bytes(size_t n) {
    uint8_t *p = xmalloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)qt_rand_u64(&rng);
    return p;
}

static uint8_t *random_codes(size_t n) { /* 4-bit codes, one per byte */
    uint8_t *p = xmalloc(n);
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(qt_rand_u64(&rng) & 0x0F);
    return p;
}

/* Nibble o of a buffer in memory order: byte o/2, the low nibble first (formats.md §2.3). */
static void put_nibble(uint8_t *buf, int64_t o, uint8_t v) {
    buf[o / 2] |= (uint8_t)((v & 0x0F) << (4 * (o % 2)));
}

static uint8_t get_nibble(const uint8_t *buf, int64_t o) {
    return (uint8_t)((buf[o / 2] >> (4 * (o % 2))) & 0x0F);
}

static void expect_einval(qd_status s, const char *needle) {
    assert_int_equal(s, QD_EINVAL);
    if (!strstr(qd_last_error(), needle)) fail_msg("message \"%s\" lacks \"%s\"", qd_last_error(), needle);
}

/* ================================ block-scale layouts (§3.7) ================================ */

static int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

/* Expected swizzled buffer by walking the stored tensor in memory order:
 * 128×4 = [Mp/128][Kp/4][32][4][4] indexed (m/128, j/4, m%32, (m%128)/32, j%4);
 * 8×4   = [Mp/8][Kp/4][8][4]        indexed (m/8, j/4, m%8, j%4). Padding reads as 0. */
static uint8_t *walk_swizzle(qd_sf_layout layout, const uint8_t *lin, int64_t rows, int64_t cols,
                             size_t *size) {
    const int64_t tr = layout == QD_SF_LAYOUT_8X4 ? 8 : 128;
    const int64_t mp = round_up(rows, tr), cp = round_up(cols, 4);
    uint8_t *out = xmalloc((size_t)(mp * cp));
    int64_t o = 0;
    for (int64_t mt = 0; mt < mp / tr; mt++)
        for (int64_t jt = 0; jt < cp / 4; jt++) {
            if (layout == QD_SF_LAYOUT_8X4) {
                for (int64_t r = 0; r < 8; r++)
                    for (int64_t j4 = 0; j4 < 4; j4++) {
                        const int64_t m = mt * 8 + r, j = jt * 4 + j4;
                        out[o++] = (m < rows && j < cols) ? lin[m * cols + j] : 0;
                    }
            } else {
                for (int64_t r32 = 0; r32 < 32; r32++)
                    for (int64_t q = 0; q < 4; q++)
                        for (int64_t j4 = 0; j4 < 4; j4++) {
                            const int64_t m = mt * 128 + q * 32 + r32, j = jt * 4 + j4;
                            out[o++] = (m < rows && j < cols) ? lin[m * cols + j] : 0;
                        }
            }
        }
    assert_int_equal(o, mp * cp);
    *size = (size_t)(mp * cp);
    return out;
}

static void test_sf_swizzle_random(void **state) {
    (void)state;
    const qd_sf_layout layouts[] = {QD_SF_LAYOUT_128X4, QD_SF_LAYOUT_8X4};
    for (int li = 0; li < 2; li++)
        for (int iter = 0; iter < 12; iter++) {
            /* Half the draws are exact multiples, half are ragged, so both padding paths are hit. */
            int64_t rows = rand_between(1, 300), cols = rand_between(1, 40);
            if (iter % 2 == 0) {
                rows = round_up(rows, layouts[li] == QD_SF_LAYOUT_8X4 ? 8 : 128);
                cols = round_up(cols, 4);
            }
            uint8_t *lin = random_bytes((size_t)(rows * cols));
            size_t want_size;
            uint8_t *want = walk_swizzle(layouts[li], lin, rows, cols, &want_size);

            int64_t rp, cp;
            size_t size;
            assert_int_equal(qd_sf_swizzled_dims(layouts[li], rows, cols, &rp, &cp, &size), QD_OK);
            assert_int_equal(size, want_size);
            assert_int_equal(rp, round_up(rows, layouts[li] == QD_SF_LAYOUT_8X4 ? 8 : 128));
            assert_int_equal(cp, round_up(cols, 4));

            uint8_t *swz = xmalloc(size);
            memset(swz, 0xAA, size); /* the padding must be written as zero, not left alone */
            assert_int_equal(qd_sf_swizzle(layouts[li], lin, rows, cols, swz), QD_OK);
            assert_memory_equal(swz, want, size);

            uint8_t *back = xmalloc((size_t)(rows * cols));
            assert_int_equal(qd_sf_unswizzle(layouts[li], swz, rows, cols, back), QD_OK);
            assert_memory_equal(back, lin, (size_t)(rows * cols));
            free(lin), free(want), free(swz), free(back);
        }
}

/* Where the single nonzero byte of linear[m][j] lands in the swizzled form. */
static int64_t landing(qd_sf_layout layout, int64_t rows, int64_t cols, int64_t m, int64_t j) {
    size_t size;
    assert_int_equal(qd_sf_swizzled_dims(layout, rows, cols, NULL, NULL, &size), QD_OK);
    uint8_t *lin = calloc((size_t)(rows * cols), 1), *swz = xmalloc(size);
    assert_non_null(lin);
    lin[m * cols + j] = 0x5C;
    assert_int_equal(qd_sf_swizzle(layout, lin, rows, cols, swz), QD_OK);
    int64_t at = -1, hits = 0;
    for (size_t i = 0; i < size; i++)
        if (swz[i]) at = (int64_t)i, hits++;
    assert_int_equal(hits, 1);
    assert_int_equal(swz[at], 0x5C);
    free(lin), free(swz);
    return at;
}

static void test_sf_swizzle_spec_offsets(void **state) {
    (void)state;
    /* formats.md §7 (TRT-LLM SfLayoutDecl.h R128c4): the first 16 bytes of a 128×4 tile hold
     * (0,0) (0,1) (0,2) (0,3) (32,0) … (32,3) (64,0) … (96,3). */
    static const int rc[16][2] = {{0, 0},  {0, 1},  {0, 2},  {0, 3},  {32, 0}, {32, 1}, {32, 2}, {32, 3},
                                  {64, 0}, {64, 1}, {64, 2}, {64, 3}, {96, 0}, {96, 1}, {96, 2}, {96, 3}};
    for (int i = 0; i < 16; i++) assert_int_equal(landing(QD_SF_LAYOUT_128X4, 128, 4, rc[i][0], rc[i][1]), i);
    /* The next 16-byte line is row 1 (rows 1, 33, 65, 97); the next 512-byte tile continues along K;
     * the next row of tiles starts after all K tiles (here 2 of them: 256 × 8 scales). */
    assert_int_equal(landing(QD_SF_LAYOUT_128X4, 128, 4, 1, 0), 16);
    assert_int_equal(landing(QD_SF_LAYOUT_128X4, 128, 4, 97, 3), 16 + 15);
    assert_int_equal(landing(QD_SF_LAYOUT_128X4, 128, 4, 31, 0), 31 * 16);
    assert_int_equal(landing(QD_SF_LAYOUT_128X4, 256, 8, 0, 4), 512);
    assert_int_equal(landing(QD_SF_LAYOUT_128X4, 256, 8, 128, 0), 1024);
    assert_int_equal(landing(QD_SF_LAYOUT_128X4, 256, 8, 255, 7), 2047);
    /* Ragged: 130 × 5 pads to 256 × 8; (129, 4) sits in tile (1, 1) at line 1, slot 0. */
    assert_int_equal(landing(QD_SF_LAYOUT_128X4, 130, 5, 129, 4), 3 * 512 + 16);
    /* 8×4 (R8c4): [ceil(M/8)][ceil(Kc/4)][8][4]. */
    assert_int_equal(landing(QD_SF_LAYOUT_8X4, 8, 4, 1, 0), 4);
    assert_int_equal(landing(QD_SF_LAYOUT_8X4, 8, 4, 7, 3), 31);
    assert_int_equal(landing(QD_SF_LAYOUT_8X4, 16, 8, 0, 4), 32);
    assert_int_equal(landing(QD_SF_LAYOUT_8X4, 16, 8, 8, 0), 64);
    assert_int_equal(landing(QD_SF_LAYOUT_8X4, 9, 5, 8, 4), 3 * 32);

    size_t size = 1;
    assert_int_equal(qd_sf_swizzled_dims(QD_SF_LAYOUT_128X4, 0, 0, NULL, NULL, &size), QD_OK);
    assert_int_equal(size, 0);
    assert_int_equal(qd_sf_swizzled_dims(QD_SF_LAYOUT_128X4, 1, 1, NULL, NULL, &size), QD_OK);
    assert_int_equal(size, 512);
}

static void test_sf_swizzle_errors(void **state) {
    (void)state;
    uint8_t buf[512] = {0};
    expect_einval(qd_sf_swizzle(QD_SF_LAYOUT_128X4, buf, -1, 4, buf), "rows = -1 must not be negative");
    expect_einval(qd_sf_unswizzle(QD_SF_LAYOUT_8X4, buf, 4, -3, buf), "cols = -3 must not be negative");
    expect_einval(qd_sf_swizzled_dims(QD_SF_LAYOUT_128X4, INT64_MAX, 4, NULL, NULL, NULL), "overflow");
    expect_einval(qd_sf_swizzled_dims(QD_SF_LAYOUT_128X4, INT64_MAX / 64, 1024, NULL, NULL, NULL), "overflow");
    expect_einval(qd_sf_swizzle(QD_SF_LAYOUT_128X4, NULL, 4, 4, buf), "NULL buffer");
    expect_einval(qd_sf_swizzled_dims((qd_sf_layout)7, 4, 4, NULL, NULL, NULL), "unknown layout");
}

/* ============================== Nunchaku SVDQuant (§5.5) ============================== */

/* §5.5.1 in memory order: [Np/128][Kp/64] tiles; in a tile 8 n-packs of 16 rows, 32 lanes (nl·4 + kl),
 * 4 registers {(n+0,k+0), (n+0,k+32), (n+8,k+0), (n+8,k+32)}, 8 consecutive k per register. */
static uint8_t *walk_svdq_qweight(const uint8_t *codes, int64_t np, int64_t kp) {
    uint8_t *out = calloc((size_t)(np * kp / 2), 1);
    assert_non_null(out);
    int64_t o = 0;
    for (int64_t nt = 0; nt < np / 128; nt++)
        for (int64_t kt = 0; kt < kp / 64; kt++)
            for (int64_t npack = 0; npack < 8; npack++)
                for (int64_t nl = 0; nl < 8; nl++)
                    for (int64_t kl = 0; kl < 4; kl++)
                        for (int64_t nhalf = 0; nhalf < 2; nhalf++)
                            for (int64_t khalf = 0; khalf < 2; khalf++)
                                for (int64_t rk = 0; rk < 8; rk++) {
                                    const int64_t n = nt * 128 + npack * 16 + nhalf * 8 + nl;
                                    const int64_t k = kt * 64 + khalf * 32 + kl * 8 + rk;
                                    put_nibble(out, o++, codes[n * kp + k]);
                                }
    assert_int_equal(o, np * kp);
    return out;
}

/* §5.5.2 / §5.5.4: per n-tile and group, the 128 channels in the order lane-pair by lane-pair:
 * for n%128 = a·16 + b·8 + c·2 + d the memory order is (a, c, b, d). */
static uint16_t *walk_svdq_scales16(const uint16_t *s, int64_t np, int64_t groups) {
    uint16_t *out = xmalloc((size_t)(np * groups) * 2);
    int64_t o = 0;
    for (int64_t nt = 0; nt < np / 128; nt++)
        for (int64_t g = 0; g < groups; g++)
            for (int64_t a = 0; a < 8; a++)
                for (int64_t c = 0; c < 4; c++)
                    for (int64_t b = 0; b < 2; b++)
                        for (int64_t d = 0; d < 2; d++)
                            out[o++] = s[(nt * 128 + a * 16 + b * 8 + c * 2 + d) * groups + g];
    return out;
}

/* §5.5.3: per n-tile and 4-group step, lane l·4 + q holds 4 words for channels s·32 + q·8 + l
 * (s = 0..3), each word the 4 groups of the step. */
static uint8_t *walk_svdq_scales_fp4(const uint8_t *s, int64_t np, int64_t groups) {
    uint8_t *out = xmalloc((size_t)(np * groups));
    int64_t o = 0;
    for (int64_t nt = 0; nt < np / 128; nt++)
        for (int64_t g4 = 0; g4 < groups / 4; g4++)
            for (int64_t l = 0; l < 8; l++)
                for (int64_t q = 0; q < 4; q++)
                    for (int64_t sub = 0; sub < 4; sub++)
                        for (int64_t gi = 0; gi < 4; gi++)
                            out[o++] = s[(nt * 128 + sub * 32 + q * 8 + l) * groups + g4 * 4 + gi];
    return out;
}

/* §5.5.5: 16×16 fragments ordered (non-rank tile, rank tile); inside, lane (nl, kl), row half, column
 * half, 2 consecutive columns. down: fragment rows are r, columns k; up: rows n, columns r. */
static uint16_t *walk_svdq_lowrank(const uint16_t *m, int64_t rows, int64_t cols, int down) {
    uint16_t *out = xmalloc((size_t)(rows * cols) * 2);
    const int64_t outer_tiles = (down ? cols : rows) / 16, rank_tiles = (down ? rows : cols) / 16;
    int64_t o = 0;
    for (int64_t ot = 0; ot < outer_tiles; ot++)
        for (int64_t rt = 0; rt < rank_tiles; rt++)
            for (int64_t nl = 0; nl < 8; nl++)
                for (int64_t kl = 0; kl < 4; kl++)
                    for (int64_t rh = 0; rh < 2; rh++)
                        for (int64_t ch = 0; ch < 2; ch++)
                            for (int64_t rk = 0; rk < 2; rk++) {
                                const int64_t row_tile = down ? rt : ot, col_tile = down ? ot : rt;
                                const int64_t i = row_tile * 16 + rh * 8 + nl;
                                const int64_t j = col_tile * 16 + ch * 8 + kl * 2 + rk;
                                out[o++] = m[i * cols + j];
                            }
    return out;
}

static void test_svdq_random(void **state) {
    (void)state;
    for (int iter = 0; iter < 6; iter++) {
        const int64_t np = 128 * rand_between(1, 3), kp = 128 * rand_between(1, 4);
        const int64_t rank = 16 * rand_between(1, 5);
        print_message("[ sizes    ] Np=%lld Kp=%lld rank=%lld\n", (long long)np, (long long)kp,
                      (long long)rank);

        /* qweight: pack against the walk, unpack back, and unpack∘pack on arbitrary bytes. */
        uint8_t *codes = random_codes((size_t)(np * kp));
        uint8_t *want = walk_svdq_qweight(codes, np, kp);
        uint8_t *packed = xmalloc((size_t)(np * kp / 2)), *back = xmalloc((size_t)(np * kp));
        assert_int_equal(qd_svdq_qweight_pack(codes, np, kp, packed), QD_OK);
        assert_memory_equal(packed, want, (size_t)(np * kp / 2));
        assert_int_equal(qd_svdq_qweight_unpack(packed, np, kp, back), QD_OK);
        assert_memory_equal(back, codes, (size_t)(np * kp));
        /* int8 values −8..7 go in as they are: only the low nibble is read. */
        for (int64_t i = 0; i < np * kp; i++)
            back[i] = (uint8_t)(int8_t)((int)codes[i] - ((codes[i] & 8) ? 16 : 0));
        assert_int_equal(qd_svdq_qweight_pack(back, np, kp, packed), QD_OK);
        assert_memory_equal(packed, want, (size_t)(np * kp / 2));
        uint8_t *raw = random_bytes((size_t)(np * kp / 2));
        assert_int_equal(qd_svdq_qweight_unpack(raw, np, kp, back), QD_OK);
        assert_int_equal(qd_svdq_qweight_pack(back, np, kp, packed), QD_OK);
        assert_memory_equal(packed, raw, (size_t)(np * kp / 2));
        free(codes), free(want), free(packed), free(back), free(raw);

        /* int4 wscales [n][g], g < Kp/64. */
        const int64_t g64 = kp / 64, g16 = kp / 16;
        uint16_t *s = random_bytes((size_t)(np * g64) * 2), *w16 = walk_svdq_scales16(s, np, g64);
        uint16_t *p16 = xmalloc((size_t)(np * g64) * 2), *b16 = xmalloc((size_t)(np * g64) * 2);
        assert_int_equal(qd_svdq_wscales_int4_pack(s, np, kp, p16), QD_OK);
        assert_memory_equal(p16, w16, (size_t)(np * g64) * 2);
        assert_int_equal(qd_svdq_wscales_int4_unpack(p16, np, kp, b16), QD_OK);
        assert_memory_equal(b16, s, (size_t)(np * g64) * 2);
        free(s), free(w16), free(p16), free(b16);

        /* fp4 wscales [n][g], g < Kp/16. */
        uint8_t *s8 = random_bytes((size_t)(np * g16)), *w8 = walk_svdq_scales_fp4(s8, np, g16);
        uint8_t *p8 = xmalloc((size_t)(np * g16)), *b8 = xmalloc((size_t)(np * g16));
        assert_int_equal(qd_svdq_wscales_fp4_pack(s8, np, kp, p8), QD_OK);
        assert_memory_equal(p8, w8, (size_t)(np * g16));
        assert_int_equal(qd_svdq_wscales_fp4_unpack(p8, np, kp, b8), QD_OK);
        assert_memory_equal(b8, s8, (size_t)(np * g16));
        free(s8), free(w8), free(p8), free(b8);

        /* vectors (length Np and Kp): the int4 scale order with one group. The buffers are offset by
         * one byte to check that unaligned 16-bit data (as in a mapped checkpoint) is fine. */
        const int64_t lens[2] = {np, kp};
        for (int li = 0; li < 2; li++) {
            const int64_t len = lens[li];
            uint16_t *v = random_bytes((size_t)len * 2), *wv = walk_svdq_scales16(v, len, 1);
            uint8_t *pv = xmalloc((size_t)len * 2 + 1), *bv = xmalloc((size_t)len * 2 + 1);
            assert_int_equal(qd_svdq_vector_pack(v, len, pv + 1), QD_OK);
            assert_memory_equal(pv + 1, wv, (size_t)len * 2);
            assert_int_equal(qd_svdq_vector_unpack(pv + 1, len, bv + 1), QD_OK);
            assert_memory_equal(bv + 1, v, (size_t)len * 2);
            free(v), free(wv), free(pv), free(bv);
        }

        /* low-rank down [rank][Kp] and up [Np][rank]. */
        uint16_t *d = random_bytes((size_t)(rank * kp) * 2), *wd = walk_svdq_lowrank(d, rank, kp, 1);
        uint16_t *pd = xmalloc((size_t)(rank * kp) * 2), *bd = xmalloc((size_t)(rank * kp) * 2);
        assert_int_equal(qd_svdq_lowrank_down_pack(d, rank, kp, pd), QD_OK);
        assert_memory_equal(pd, wd, (size_t)(rank * kp) * 2);
        assert_int_equal(qd_svdq_lowrank_down_unpack(pd, rank, kp, bd), QD_OK);
        assert_memory_equal(bd, d, (size_t)(rank * kp) * 2);
        free(d), free(wd), free(pd), free(bd);
        uint16_t *u = random_bytes((size_t)(np * rank) * 2), *wu = walk_svdq_lowrank(u, np, rank, 0);
        uint16_t *pu = xmalloc((size_t)(np * rank) * 2), *bu = xmalloc((size_t)(np * rank) * 2);
        assert_int_equal(qd_svdq_lowrank_up_pack(u, np, rank, pu), QD_OK);
        assert_memory_equal(pu, wu, (size_t)(np * rank) * 2);
        assert_int_equal(qd_svdq_lowrank_up_unpack(pu, np, rank, bu), QD_OK);
        assert_memory_equal(bu, u, (size_t)(np * rank) * 2);
        free(u), free(wu), free(pu), free(bu);
    }
}

static void test_svdq_spec_vectors(void **state) {
    (void)state;
    const int64_t np = 128, kp = 128;
    /* formats.md §7 qweight byte map: the (n, k) of each byte's low nibble (high nibble = k + 1).
     * Bytes 0..7 → row 0, k 0..7 and 32..39; 8..15 → row 8; 16..31 → rows 0/8, k 8..15 and 40..47. */
    static const int byte_nk[32][2] = {
        {0, 0},  {0, 2},  {0, 4},  {0, 6},  {0, 32}, {0, 34}, {0, 36}, {0, 38},
        {8, 0},  {8, 2},  {8, 4},  {8, 6},  {8, 32}, {8, 34}, {8, 36}, {8, 38},
        {0, 8},  {0, 10}, {0, 12}, {0, 14}, {0, 40}, {0, 42}, {0, 44}, {0, 46},
        {8, 8},  {8, 10}, {8, 12}, {8, 14}, {8, 40}, {8, 42}, {8, 44}, {8, 46},
    };
    uint8_t *raw = random_bytes((size_t)(np * kp / 2)), *codes = xmalloc((size_t)(np * kp));
    assert_int_equal(qd_svdq_qweight_unpack(raw, np, kp, codes), QD_OK);
    for (int b = 0; b < 32; b++) {
        const int64_t n = byte_nk[b][0], k = byte_nk[b][1];
        assert_int_equal(codes[n * kp + k], raw[b] & 0x0F);
        assert_int_equal(codes[n * kp + k + 1], raw[b] >> 4);
    }
    free(raw), free(codes);

    /* int4 wscales / bias: the first 16 entries of a 128-channel tile are channels
     * 0 1 8 9 2 3 10 11 4 5 12 13 6 7 14 15; lane 4 (entries 16..19) holds 16 17 24 25 and the last
     * lane (124..127) 118 119 126 127 (nunchaku gemm_base.cuh's table). */
    static const int ch16[16] = {0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15};
    const int64_t g64 = kp / 64;
    uint16_t *p16 = random_bytes((size_t)(np * g64) * 2), *s16 = xmalloc((size_t)(np * g64) * 2);
    uint16_t *v16 = xmalloc((size_t)np * 2);
    assert_int_equal(qd_svdq_wscales_int4_unpack(p16, np, kp, s16), QD_OK);
    assert_int_equal(qd_svdq_vector_unpack(p16, np, v16), QD_OK);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(s16[ch16[i] * g64 + 0], p16[i]);
        assert_int_equal(v16[ch16[i]], p16[i]);
        assert_int_equal(s16[ch16[i] * g64 + 1], p16[128 + i]); /* group 1 follows the whole tile */
    }
    assert_int_equal(v16[16], p16[16]);
    assert_int_equal(v16[17], p16[17]);
    assert_int_equal(v16[24], p16[18]);
    assert_int_equal(v16[25], p16[19]);
    assert_int_equal(v16[118], p16[124]);
    assert_int_equal(v16[119], p16[125]);
    assert_int_equal(v16[126], p16[126]);
    assert_int_equal(v16[127], p16[127]);
    free(p16), free(s16), free(v16);

    /* fp4 wscales: the first 16 bytes are (n, g) = (0,0..3) (32,0..3) (64,0..3) (96,0..3); lane 1
     * (bytes 16..31) holds channels 8 40 72 104. */
    const int64_t g16 = kp / 16;
    uint8_t *p8 = random_bytes((size_t)(np * g16)), *s8 = xmalloc((size_t)(np * g16));
    assert_int_equal(qd_svdq_wscales_fp4_unpack(p8, np, kp, s8), QD_OK);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(s8[(i / 4) * 32 * g16 + i % 4], p8[i]);
        assert_int_equal(s8[(8 + (i / 4) * 32) * g16 + i % 4], p8[16 + i]);
    }
    free(p8), free(s8);

    /* proj_down: the first 8 stored elements are D[0][0] D[0][1] D[0][8] D[0][9] D[8][0] D[8][1]
     * D[8][8] D[8][9]. */
    static const int first_d[8][2] = {{0, 0}, {0, 1}, {0, 8}, {0, 9}, {8, 0}, {8, 1}, {8, 8}, {8, 9}};
    const int64_t rank = 32;
    uint16_t *pd = random_bytes((size_t)(rank * kp) * 2), *d = xmalloc((size_t)(rank * kp) * 2);
    assert_int_equal(qd_svdq_lowrank_down_unpack(pd, rank, kp, d), QD_OK);
    for (int i = 0; i < 8; i++) assert_int_equal(d[first_d[i][0] * kp + first_d[i][1]], pd[i]);
    free(pd), free(d);
}

static void test_svdq_errors(void **state) {
    (void)state;
    uint8_t buf[16] = {0};
    expect_einval(qd_svdq_qweight_unpack(buf, 200, 128, buf), "Np = 200 must be a multiple of 128");
    expect_einval(qd_svdq_qweight_pack(buf, 128, 320, buf), "Kp = 320 must be a multiple of 128");
    expect_einval(qd_svdq_wscales_int4_unpack(buf, 128, 64, buf), "Kp = 64 must be a multiple of 128");
    expect_einval(qd_svdq_wscales_fp4_pack(buf, -128, 128, buf), "Np = -128 must not be negative");
    expect_einval(qd_svdq_vector_unpack(buf, 320, buf), "length = 320 must be a multiple of 128");
    expect_einval(qd_svdq_lowrank_down_unpack(buf, 20, 128, buf), "rank = 20 must be a multiple of 16");
    expect_einval(qd_svdq_lowrank_up_pack(buf, 128, 24, buf), "rank = 24 must be a multiple of 16");
    expect_einval(qd_svdq_lowrank_up_unpack(buf, 100, 32, buf), "Np = 100 must be a multiple of 128");
    expect_einval(qd_svdq_qweight_unpack(NULL, 128, 128, buf), "NULL buffer");
    expect_einval(qd_svdq_qweight_unpack(buf, INT64_MAX / 128 * 128, INT64_MAX / 128 * 128, buf), "overflow");
    /* Empty is not an error: nothing to move. */
    assert_int_equal(qd_svdq_qweight_unpack(NULL, 0, 128, NULL), QD_OK);
}

/* ================================ AWQ W4A16 (§5.6) ================================ */

/* In memory order: per 4 output rows and 64-group, the 4 rows one after another, each as 16 uint16
 * (t = 0..15: 32-run t/8, offset t%8), each uint16 holding k = run·32 + offset + 0, 8, 16, 24 at
 * nibbles 0..3. */
static uint8_t *walk_awq_qweight(const uint8_t *codes, int64_t n, int64_t k) {
    uint8_t *out = calloc((size_t)(n * k / 2), 1);
    assert_non_null(out);
    int64_t o = 0;
    for (int64_t n4 = 0; n4 < n / 4; n4++)
        for (int64_t c64 = 0; c64 < k / 64; c64++)
            for (int64_t nr = 0; nr < 4; nr++)
                for (int64_t t = 0; t < 16; t++)
                    for (int64_t a = 0; a < 4; a++)
                        put_nibble(out, o++,
                                   codes[(n4 * 4 + nr) * k + c64 * 64 + (t / 8) * 32 + a * 8 + t % 8]);
    assert_int_equal(o, n * k);
    return out;
}

static void test_awq_random(void **state) {
    (void)state;
    for (int iter = 0; iter < 8; iter++) {
        const int64_t n = 4 * rand_between(1, 100), k = 64 * rand_between(1, 6);
        uint8_t *codes = random_codes((size_t)(n * k)), *want = walk_awq_qweight(codes, n, k);
        uint8_t *packed = xmalloc((size_t)(n * k / 2)), *back = xmalloc((size_t)(n * k));
        assert_int_equal(qd_awq_qweight_pack(codes, n, k, packed), QD_OK);
        assert_memory_equal(packed, want, (size_t)(n * k / 2));
        assert_int_equal(qd_awq_qweight_unpack(packed, n, k, back), QD_OK);
        assert_memory_equal(back, codes, (size_t)(n * k));
        uint8_t *raw = random_bytes((size_t)(n * k / 2));
        assert_int_equal(qd_awq_qweight_unpack(raw, n, k, back), QD_OK);
        assert_int_equal(qd_awq_qweight_pack(back, n, k, packed), QD_OK);
        assert_memory_equal(packed, raw, (size_t)(n * k / 2));
        free(codes), free(want), free(packed), free(back), free(raw);
    }
    /* The spec's words: the first uint16 holds Q[0][0], Q[0][8], Q[0][16], Q[0][24] at nibbles 0..3;
     * uint16 #8 starts the second 32-run (Q[0][32]); #16 is row 1; with K = 128, #64 is row 0, k 64. */
    const int64_t n = 8, k = 128;
    uint8_t *raw = random_bytes((size_t)(n * k / 2)), *codes = xmalloc((size_t)(n * k));
    assert_int_equal(qd_awq_qweight_unpack(raw, n, k, codes), QD_OK);
    for (int a = 0; a < 4; a++) {
        assert_int_equal(codes[0 * k + a * 8], get_nibble(raw, a));
        assert_int_equal(codes[0 * k + 1 + a * 8], get_nibble(raw, 4 + a));
        assert_int_equal(codes[0 * k + 32 + a * 8], get_nibble(raw, 8 * 4 + a));
        assert_int_equal(codes[1 * k + a * 8], get_nibble(raw, 16 * 4 + a));
        assert_int_equal(codes[0 * k + 64 + a * 8], get_nibble(raw, 64 * 4 + a));
        assert_int_equal(codes[4 * k + a * 8], get_nibble(raw, 128 * 4 + a));
    }
    free(raw), free(codes);
}

static void test_awq_mod_interleave(void **state) {
    (void)state;
    const int64_t chunk_counts[2] = {6, 3};
    for (int ci = 0; ci < 2; ci++)
        for (int iter = 0; iter < 4; iter++) {
            const int64_t c = chunk_counts[ci], n = c * rand_between(1, 50), outer = rand_between(1, 5);
            const size_t inner = (size_t)rand_between(1, 9);
            const size_t bytes = (size_t)(outer * n) * inner;
            uint8_t *orig = random_bytes(bytes), *stored = xmalloc(bytes), *back = xmalloc(bytes);
            assert_int_equal(qd_awq_mod_interleave(orig, outer, n, inner, c, stored), QD_OK);
            /* stored row i·C + c = original row c·(N/C) + i, in every outer slice */
            for (int64_t o = 0; o < outer; o++)
                for (int64_t i = 0; i < n / c; i++)
                    for (int64_t cc = 0; cc < c; cc++)
                        assert_memory_equal(stored + ((o * n + i * c + cc) * (int64_t)inner),
                                            orig + ((o * n + cc * (n / c) + i) * (int64_t)inner), inner);
            assert_int_equal(qd_awq_mod_deinterleave(stored, outer, n, inner, c, back), QD_OK);
            assert_memory_equal(back, orig, bytes);
            /* and the other way round, starting from arbitrary stored bytes */
            assert_int_equal(qd_awq_mod_deinterleave(orig, outer, n, inner, c, stored), QD_OK);
            assert_int_equal(qd_awq_mod_interleave(stored, outer, n, inner, c, back), QD_OK);
            assert_memory_equal(back, orig, bytes);
            free(orig), free(stored), free(back);
        }
    /* A concrete case: N = 6, C = 3, vector of bytes: original 0 1 | 2 3 | 4 5 → stored 0 2 4 1 3 5. */
    const uint8_t o6[6] = {0, 1, 2, 3, 4, 5}, s6[6] = {0, 2, 4, 1, 3, 5};
    uint8_t got[6];
    assert_int_equal(qd_awq_mod_interleave(o6, 1, 6, 1, 3, got), QD_OK);
    assert_memory_equal(got, s6, 6);
}

static void test_awq_errors(void **state) {
    (void)state;
    uint8_t buf[16] = {0};
    expect_einval(qd_awq_qweight_unpack(buf, 6, 64, buf), "N = 6 must be a multiple of 4");
    expect_einval(qd_awq_qweight_pack(buf, 4, 96, buf), "K = 96 must be a multiple of 64");
    expect_einval(qd_awq_mod_interleave(buf, 1, 10, 1, 3, buf), "N = 10 must be a multiple of 3");
    expect_einval(qd_awq_mod_deinterleave(buf, 1, 6, 1, 0, buf), "chunks = 0 must be at least 1");
    expect_einval(qd_awq_mod_deinterleave(buf, -1, 6, 1, 3, buf), "outer = -1 must not be negative");
    expect_einval(qd_awq_mod_interleave(NULL, 1, 6, 1, 3, buf), "NULL buffer");
}

/* ============================== msModelSlim W4A8 (§6.4) ============================== */

static void test_modelslim_w4a8(void **state) {
    (void)state;
    /* byte [n2][k] = (q[2·n2][k] & 0xF) | (q[2·n2+1][k] << 4) */
    const int8_t q[2][2] = {{1, -2}, {-8, 7}};
    uint8_t packed[2];
    assert_int_equal(qd_modelslim_w4a8_pack(&q[0][0], 2, 2, packed), QD_OK);
    assert_int_equal(packed[0], 0x81);
    assert_int_equal(packed[1], 0x7E);
    for (int iter = 0; iter < 8; iter++) {
        const int64_t n = 2 * rand_between(1, 40), k = rand_between(1, 70);
        int8_t *v = xmalloc((size_t)(n * k)), *back = xmalloc((size_t)(n * k));
        for (int64_t i = 0; i < n * k; i++) v[i] = (int8_t)rand_between(-8, 7);
        uint8_t *p = xmalloc((size_t)(n / 2 * k));
        assert_int_equal(qd_modelslim_w4a8_pack(v, n, k, p), QD_OK);
        for (int64_t n2 = 0; n2 < n / 2; n2++)
            for (int64_t j = 0; j < k; j++) {
                const uint8_t b = p[n2 * k + j];
                assert_int_equal(b & 0x0F, (uint8_t)v[2 * n2 * k + j] & 0x0F);
                assert_int_equal(b >> 4, (uint8_t)v[(2 * n2 + 1) * k + j] & 0x0F);
            }
        assert_int_equal(qd_modelslim_w4a8_unpack(p, n, k, back), QD_OK);
        assert_memory_equal(back, v, (size_t)(n * k));
        uint8_t *raw = random_bytes((size_t)(n / 2 * k));
        assert_int_equal(qd_modelslim_w4a8_unpack(raw, n, k, back), QD_OK);
        for (int64_t i = 0; i < n * k; i++) assert_true(back[i] >= -8 && back[i] <= 7);
        assert_int_equal(qd_modelslim_w4a8_pack(back, n, k, p), QD_OK);
        assert_memory_equal(p, raw, (size_t)(n / 2 * k));
        free(v), free(back), free(p), free(raw);
    }
    expect_einval(qd_modelslim_w4a8_pack(q[0], 3, 2, packed), "N = 3 must be a multiple of 2");
}

/* ============================ fixtures: Nunchaku's own packer ============================ */

#define FIXTURES QDIT_SHARED_DIR "/fixtures/nunchaku_packing/"

/* The named tensor, checked for dtype and shape (d1 < 0: rank 1), and a private aligned copy of its
 * bytes (the mapping need not be aligned for 16-bit reads). */
static void *fixture_tensor(const qd_st_file *f, const char *name, qd_dtype dtype, int64_t d0, int64_t d1,
                            size_t *bytes) {
    const qd_st_tensor *t = qd_st_find(f, name);
    if (!t) fail_msg("%s: no tensor %s", f->path, name);
    if (t->dtype != dtype)
        fail_msg("%s: dtype %s, expected %s", name, qd_dtype_name(t->dtype), qd_dtype_name(dtype));
    assert_int_equal(t->rank, d1 < 0 ? 1 : 2);
    assert_int_equal(t->shape[0], d0);
    if (d1 >= 0) assert_int_equal(t->shape[1], d1);
    const size_t n = (size_t)(t->end - t->begin);
    void *copy = xmalloc(n);
    memcpy(copy, qd_st_data(f, t), n);
    if (bytes) *bytes = n;
    return copy;
}

#define BF16_ONE 0x3F80u

/* A 16-bit vector of the file against its plain version (length `len`), padding up to `padded` equal
 * to `pad_value`; packing the unpacked vector must give the file's bytes back. */
static void check_svdq_vector(const qd_st_file *f, const char *packed_name, const uint16_t *plain, int64_t len,
                              int64_t padded, uint16_t pad_value) {
    uint16_t *packed = fixture_tensor(f, packed_name, QD_DTYPE_BF16, padded, -1, NULL);
    uint16_t *v = xmalloc((size_t)padded * 2), *again = xmalloc((size_t)padded * 2);
    assert_int_equal(qd_svdq_vector_unpack(packed, padded, v), QD_OK);
    for (int64_t i = 0; i < padded; i++) {
        const uint16_t want = i < len ? plain[i] : pad_value;
        if (v[i] != want) fail_msg("%s[%lld] = 0x%04x, expected 0x%04x", packed_name, (long long)i, v[i], want);
    }
    assert_int_equal(qd_svdq_vector_pack(v, padded, again), QD_OK);
    assert_memory_equal(again, packed, (size_t)padded * 2);
    free(packed), free(v), free(again);
}

/* svdq_int4_a: W4A4 int4, group 64, rank 32, N = 200, K = 320, padded by the packer to Np = 256,
 * Kp = 384 (G = 6 groups, even as §5.5.2 says).
 *   plain.q          I8   [200, 320]  codes −8..7           packed.qweight     I8   [256, 192]
 *   plain.wscales    BF16 [200, 5]    [n][g]                packed.wscales     BF16 [6, 256]
 *   plain.bias       BF16 [200]                             packed.bias        BF16 [256]
 *   plain.smooth     BF16 [320]                             packed.smooth, packed.smooth_orig BF16 [384]
 *   plain.proj_down  BF16 [32, 320]   already ÷ smooth      packed.lora_down   BF16 [384, 32]
 *   plain.proj_up    BF16 [200, 32]                         packed.lora_up     BF16 [256, 32]
 * Fixture facts settled here (formats.md §5.3 / §8.9 leave them open): padded wscales, bias, smooth
 * and smooth_orig entries are 1.0 (this packer pads every scale-like vector, bias included, with 1);
 * padded qweight codes and low-rank entries are 0; smooth_orig equals smooth (no smooth fusion);
 * int4 wscales are BF16. */
static void test_fixture_svdq_int4(void **state) {
    (void)state;
    qd_st_file *f;
    assert_int_equal(qd_st_open(FIXTURES "svdq_int4_a.safetensors", &f), QD_OK);
    const int64_t n = 200, k = 320, np = 256, kp = 384, rank = 32, g = k / 64, gp = kp / 64;
    size_t nb;

    int8_t *q = fixture_tensor(f, "plain.q", QD_DTYPE_I8, n, k, NULL);
    uint8_t *qw = fixture_tensor(f, "packed.qweight", QD_DTYPE_I8, np, kp / 2, &nb);
    uint8_t *codes = xmalloc((size_t)(np * kp)), *again = xmalloc(nb);
    assert_int_equal(qd_svdq_qweight_unpack(qw, np, kp, codes), QD_OK);
    for (int64_t i = 0; i < np; i++)
        for (int64_t j = 0; j < kp; j++) {
            const uint8_t c = codes[i * kp + j];
            /* stored nibble = two's complement of the int8 code; sign-extend it back */
            const int value = (int)c - ((c & 8) ? 16 : 0);
            const int want = (i < n && j < k) ? q[i * k + j] : 0;
            if (value != want)
                fail_msg("qweight (%lld,%lld) = %d, plain %d", (long long)i, (long long)j, value, want);
        }
    assert_int_equal(qd_svdq_qweight_pack(codes, np, kp, again), QD_OK);
    assert_memory_equal(again, qw, nb);
    free(q), free(qw), free(codes), free(again);

    uint16_t *ws_plain = fixture_tensor(f, "plain.wscales", QD_DTYPE_BF16, n, g, NULL);
    uint16_t *ws = fixture_tensor(f, "packed.wscales", QD_DTYPE_BF16, gp, np, &nb);
    uint16_t *s = xmalloc((size_t)(np * gp) * 2), *ws_again = xmalloc(nb);
    assert_int_equal(qd_svdq_wscales_int4_unpack(ws, np, kp, s), QD_OK);
    for (int64_t i = 0; i < np; i++)
        for (int64_t j = 0; j < gp; j++) {
            const uint16_t want = (i < n && j < g) ? ws_plain[i * g + j] : BF16_ONE;
            if (s[i * gp + j] != want)
                fail_msg("wscales (%lld,%lld) = 0x%04x, expected 0x%04x", (long long)i, (long long)j,
                         s[i * gp + j], want);
        }
    assert_int_equal(qd_svdq_wscales_int4_pack(s, np, kp, ws_again), QD_OK);
    assert_memory_equal(ws_again, ws, nb);
    free(ws_plain), free(ws), free(s), free(ws_again);

    uint16_t *bias = fixture_tensor(f, "plain.bias", QD_DTYPE_BF16, n, -1, NULL);
    check_svdq_vector(f, "packed.bias", bias, n, np, BF16_ONE);
    free(bias);
    uint16_t *smooth = fixture_tensor(f, "plain.smooth", QD_DTYPE_BF16, k, -1, NULL);
    check_svdq_vector(f, "packed.smooth", smooth, k, kp, BF16_ONE);
    check_svdq_vector(f, "packed.smooth_orig", smooth, k, kp, BF16_ONE);
    free(smooth);

    /* proj_down is stored already divided by smooth (§5.3); plain.proj_down holds that quotient. */
    uint16_t *down_plain = fixture_tensor(f, "plain.proj_down", QD_DTYPE_BF16, rank, k, NULL);
    uint16_t *down_packed = fixture_tensor(f, "packed.lora_down", QD_DTYPE_BF16, kp, rank, &nb);
    uint16_t *down = xmalloc((size_t)(rank * kp) * 2), *down_again = xmalloc(nb);
    assert_int_equal(qd_svdq_lowrank_down_unpack(down_packed, rank, kp, down), QD_OK);
    for (int64_t r = 0; r < rank; r++)
        for (int64_t j = 0; j < kp; j++) {
            const uint16_t want = j < k ? down_plain[r * k + j] : 0;
            if (down[r * kp + j] != want) fail_msg("lora_down (r=%lld, k=%lld)", (long long)r, (long long)j);
        }
    assert_int_equal(qd_svdq_lowrank_down_pack(down, rank, kp, down_again), QD_OK);
    assert_memory_equal(down_again, down_packed, nb);
    free(down_plain), free(down_packed), free(down), free(down_again);

    uint16_t *up_plain = fixture_tensor(f, "plain.proj_up", QD_DTYPE_BF16, n, rank, NULL);
    uint16_t *up_packed = fixture_tensor(f, "packed.lora_up", QD_DTYPE_BF16, np, rank, &nb);
    uint16_t *up = xmalloc((size_t)(np * rank) * 2), *up_again = xmalloc(nb);
    assert_int_equal(qd_svdq_lowrank_up_unpack(up_packed, np, rank, up), QD_OK);
    for (int64_t i = 0; i < np; i++)
        for (int64_t r = 0; r < rank; r++) {
            const uint16_t want = i < n ? up_plain[i * rank + r] : 0;
            if (up[i * rank + r] != want) fail_msg("lora_up (n=%lld, r=%lld)", (long long)i, (long long)r);
        }
    assert_int_equal(qd_svdq_lowrank_up_pack(up, np, rank, up_again), QD_OK);
    assert_memory_equal(up_again, up_packed, nb);
    free(up_plain), free(up_packed), free(up), free(up_again);

    assert_null(qd_st_find(f, "packed.wtscale")); /* int4 files have neither wtscale nor wcscales (§8.8) */
    assert_null(qd_st_find(f, "packed.wcscales"));
    qd_st_close(f);
}

/* svdq_fp4_a: W4A4 NVFP4, group 16 + per-tensor wtscale, rank 32, N = K = 256 (no padding).
 *   plain.codes     U8      [256, 256]  E2M1 codes          packed.qweight    I8      [256, 128]
 *   plain.wscales   F8_E4M3 [256, 16]   [n][g]              packed.wscales    F8_E4M3 [16, 256]
 *   plain.wtscale   F32     [1]                             packed.wtscale    BF16    [1]
 *   plain.bias, plain.smooth BF16 [256]                     packed.bias, packed.smooth, packed.smooth_orig
 *   plain.proj_down BF16 [32, 256]                          packed.lora_down  BF16    [256, 32]
 *   plain.proj_up   BF16 [256, 32]                          packed.lora_up    BF16    [256, 32]
 * Fixture facts: a non-fused fp4 layer carries `wtscale` (BF16, shape [1], the model dtype, equal to
 * the F32 scale exactly) and no `wcscales`; fp4 wscales are F8_E4M3 stored [Kp/16, Np]. */
static void test_fixture_svdq_fp4(void **state) {
    (void)state;
    qd_st_file *f;
    assert_int_equal(qd_st_open(FIXTURES "svdq_fp4_a.safetensors", &f), QD_OK);
    const int64_t n = 256, k = 256, rank = 32;
    size_t nb;

    uint8_t *plain = fixture_tensor(f, "plain.codes", QD_DTYPE_U8, n, k, NULL);
    uint8_t *qw = fixture_tensor(f, "packed.qweight", QD_DTYPE_I8, n, k / 2, &nb);
    uint8_t *codes = xmalloc((size_t)(n * k)), *again = xmalloc(nb);
    assert_int_equal(qd_svdq_qweight_unpack(qw, n, k, codes), QD_OK);
    assert_memory_equal(codes, plain, (size_t)(n * k));
    assert_int_equal(qd_svdq_qweight_pack(codes, n, k, again), QD_OK);
    assert_memory_equal(again, qw, nb);
    free(plain), free(qw), free(codes), free(again);

    uint8_t *ws_plain = fixture_tensor(f, "plain.wscales", QD_DTYPE_F8_E4M3, n, k / 16, NULL);
    uint8_t *ws = fixture_tensor(f, "packed.wscales", QD_DTYPE_F8_E4M3, k / 16, n, &nb);
    uint8_t *s = xmalloc(nb), *ws_again = xmalloc(nb);
    assert_int_equal(qd_svdq_wscales_fp4_unpack(ws, n, k, s), QD_OK);
    assert_memory_equal(s, ws_plain, nb);
    assert_int_equal(qd_svdq_wscales_fp4_pack(s, n, k, ws_again), QD_OK);
    assert_memory_equal(ws_again, ws, nb);
    free(ws_plain), free(ws), free(s), free(ws_again);

    float *wt_plain = fixture_tensor(f, "plain.wtscale", QD_DTYPE_F32, 1, -1, NULL);
    uint16_t *wt = fixture_tensor(f, "packed.wtscale", QD_DTYPE_BF16, 1, -1, NULL);
    assert_true(qd_bf16_to_f32(wt[0]) == wt_plain[0]);
    print_message("[ fixture  ] svdq_fp4_a wtscale = %.9g (BF16 [1])\n", (double)wt_plain[0]);
    free(wt_plain), free(wt);
    assert_null(qd_st_find(f, "packed.wcscales"));

    uint16_t *bias = fixture_tensor(f, "plain.bias", QD_DTYPE_BF16, n, -1, NULL);
    check_svdq_vector(f, "packed.bias", bias, n, n, 0);
    free(bias);
    uint16_t *smooth = fixture_tensor(f, "plain.smooth", QD_DTYPE_BF16, k, -1, NULL);
    check_svdq_vector(f, "packed.smooth", smooth, k, k, 0);
    check_svdq_vector(f, "packed.smooth_orig", smooth, k, k, 0);
    free(smooth);

    uint16_t *down_plain = fixture_tensor(f, "plain.proj_down", QD_DTYPE_BF16, rank, k, NULL);
    uint16_t *down_packed = fixture_tensor(f, "packed.lora_down", QD_DTYPE_BF16, k, rank, &nb);
    uint16_t *down = xmalloc(nb), *down_again = xmalloc(nb);
    assert_int_equal(qd_svdq_lowrank_down_unpack(down_packed, rank, k, down), QD_OK);
    assert_memory_equal(down, down_plain, nb);
    assert_int_equal(qd_svdq_lowrank_down_pack(down, rank, k, down_again), QD_OK);
    assert_memory_equal(down_again, down_packed, nb);
    free(down_plain), free(down_packed), free(down), free(down_again);

    uint16_t *up_plain = fixture_tensor(f, "plain.proj_up", QD_DTYPE_BF16, n, rank, NULL);
    uint16_t *up_packed = fixture_tensor(f, "packed.lora_up", QD_DTYPE_BF16, n, rank, &nb);
    uint16_t *up = xmalloc(nb), *up_again = xmalloc(nb);
    assert_int_equal(qd_svdq_lowrank_up_unpack(up_packed, n, rank, up), QD_OK);
    assert_memory_equal(up, up_plain, nb);
    assert_int_equal(qd_svdq_lowrank_up_pack(up, n, rank, up_again), QD_OK);
    assert_memory_equal(up_again, up_packed, nb);
    free(up_plain), free(up_packed), free(up), free(up_again);
    qd_st_close(f);
}

/* awq_w4a16_a: AWQ W4A16 modulation layer of a single block (C = 3 chunks: shift, scale, gate),
 * group 64, N = 384, K = 256.
 *   plain.q_u4_zero7  U8   [384, 256]  codes 0..15, original row order     packed.qweight I32 [96, 128]
 *   plain.wscales     BF16 [384, 4]    [n][g], original order              packed.wscales BF16 [16, 384]
 *   plain.bias        BF16 [384]       before the +1                       packed.wzeros  BF16 [16, 384]
 *                                                                          packed.bias    BF16 [384]
 * Every packed tensor has its N axis interleaved (stored i·3 + c = original c·128 + i).
 * Fixture facts: the group axis of wscales / wzeros is padded from K/64 = 4 to 16 rows (§5.6: a
 * multiple of 16) with zeros; wzeros = −7·scale rounded to bf16 (RNE), and bias = original + 1 on the
 * scale chunk rounded to bf16 (RNE) — both exactly, see below. */
static void test_fixture_awq(void **state) {
    (void)state;
    qd_st_file *f;
    assert_int_equal(qd_st_open(FIXTURES "awq_w4a16_a.safetensors", &f), QD_OK);
    const int64_t n = 384, k = 256, chunks = 3, per = n / chunks, g = k / 64, gp = 16;
    size_t nb;

    uint8_t *q = fixture_tensor(f, "plain.q_u4_zero7", QD_DTYPE_U8, n, k, NULL);
    uint8_t *qw = fixture_tensor(f, "packed.qweight", QD_DTYPE_I32, n / 4, k / 2, &nb);
    assert_int_equal(nb, (size_t)(n * k / 2));
    uint8_t *stored = xmalloc((size_t)(n * k)), *orig = xmalloc((size_t)(n * k)), *again = xmalloc(nb);
    assert_int_equal(qd_awq_qweight_unpack(qw, n, k, stored), QD_OK);
    assert_int_equal(qd_awq_mod_deinterleave(stored, 1, n, (size_t)k, chunks, orig), QD_OK);
    assert_memory_equal(orig, q, (size_t)(n * k));
    assert_int_equal(qd_awq_mod_interleave(q, 1, n, (size_t)k, chunks, stored), QD_OK);
    assert_int_equal(qd_awq_qweight_pack(stored, n, k, again), QD_OK);
    assert_memory_equal(again, qw, nb);
    free(q), free(qw), free(stored), free(orig), free(again);

    uint16_t *ws_plain = fixture_tensor(f, "plain.wscales", QD_DTYPE_BF16, n, g, NULL);
    uint16_t *ws = fixture_tensor(f, "packed.wscales", QD_DTYPE_BF16, gp, n, NULL);
    uint16_t *wz = fixture_tensor(f, "packed.wzeros", QD_DTYPE_BF16, gp, n, NULL);
    uint16_t *ws_orig = xmalloc((size_t)(gp * n) * 2), *wz_orig = xmalloc((size_t)(gp * n) * 2);
    /* The interleave runs along N inside each group row: outer = groups, inner = one element. */
    assert_int_equal(qd_awq_mod_deinterleave(ws, gp, n, 2, chunks, ws_orig), QD_OK);
    assert_int_equal(qd_awq_mod_deinterleave(wz, gp, n, 2, chunks, wz_orig), QD_OK);
    int64_t zeros_rounded = 0;
    for (int64_t j = 0; j < gp; j++)
        for (int64_t i = 0; i < n; i++) {
            const uint16_t s = ws_orig[j * n + i], z = wz_orig[j * n + i];
            if (j >= g) { /* padded group rows */
                assert_int_equal(s, 0);
                assert_int_equal(z, 0);
                continue;
            }
            assert_int_equal(s, ws_plain[i * g + j]);
            /* −7·s is exact in f32 (8 + 3 significant bits), so the one rounding is f32 → bf16, the
             * same single RNE torch does for a bf16 multiply: exact equality is the right test. */
            const float z_exact = -7.0f * qd_bf16_to_f32(s);
            if (qd_bf16_to_f32(qd_f32_to_bf16(z_exact)) != z_exact) zeros_rounded++;
            if (z != qd_f32_to_bf16(z_exact))
                fail_msg("wzeros (g=%lld, n=%lld) = 0x%04x, expected bf16(-7*scale) = 0x%04x", (long long)j,
                         (long long)i, z, qd_f32_to_bf16(z_exact));
        }
    print_message("[ fixture  ] awq wzeros: %lld of %lld needed rounding to bf16, all RNE-exact\n",
                  (long long)zeros_rounded, (long long)(g * n));
    free(ws_plain), free(ws), free(wz), free(ws_orig), free(wz_orig);

    uint16_t *b_plain = fixture_tensor(f, "plain.bias", QD_DTYPE_BF16, n, -1, NULL);
    uint16_t *b = fixture_tensor(f, "packed.bias", QD_DTYPE_BF16, n, -1, NULL);
    uint16_t *b_orig = xmalloc((size_t)n * 2);
    assert_int_equal(qd_awq_mod_deinterleave(b, 1, n, 2, chunks, b_orig), QD_OK);
    int64_t bias_rounded = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i / per != 1) { /* shift and gate chunks: a pure permutation */
            assert_int_equal(b_orig[i], b_plain[i]);
            continue;
        }
        /* scale chunk: +1 added by the converter in bf16. A bf16 value plus 1.0 is either exact in f32
         * or so far below 1 that rounding it twice (to f32, then bf16) equals rounding once, so
         * bf16(f32(b) + 1) is what a bf16 add gives; the file matches it bit for bit. */
        const float sum = qd_bf16_to_f32(b_plain[i]) + 1.0f;
        if (qd_bf16_to_f32(qd_f32_to_bf16(sum)) != sum) bias_rounded++;
        if (b_orig[i] != qd_f32_to_bf16(sum))
            fail_msg("bias[%lld] = 0x%04x, expected bf16(plain + 1) = 0x%04x", (long long)i, b_orig[i],
                     qd_f32_to_bf16(sum));
    }
    print_message("[ fixture  ] awq bias: %lld of %lld scale-chunk entries needed rounding after +1\n",
                  (long long)bias_rounded, (long long)per);
    free(b_plain), free(b), free(b_orig);
    qd_st_close(f);
}

static int setup_rng(void **state) {
    (void)state;
    rng = qt_seed();
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sf_swizzle_random),
        cmocka_unit_test(test_sf_swizzle_spec_offsets),
        cmocka_unit_test(test_sf_swizzle_errors),
        cmocka_unit_test(test_svdq_random),
        cmocka_unit_test(test_svdq_spec_vectors),
        cmocka_unit_test(test_svdq_errors),
        cmocka_unit_test(test_awq_random),
        cmocka_unit_test(test_awq_mod_interleave),
        cmocka_unit_test(test_awq_errors),
        cmocka_unit_test(test_modelslim_w4a8),
        cmocka_unit_test(test_fixture_svdq_int4),
        cmocka_unit_test(test_fixture_svdq_fp4),
        cmocka_unit_test(test_fixture_awq),
    };
    return cmocka_run_group_tests(tests, setup_rng, NULL);
}
