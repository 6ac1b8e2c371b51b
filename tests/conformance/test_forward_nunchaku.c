/* Nunchaku SVDQuant checkpoints (nunchaku's own module names and fused layouts, formats.md §5.7) through
 * `qdit forward`: FLUX.1 (legacy names: fused qkv_proj / qkv_proj_context, out_proj*, mlp_*fc1/2, single
 * blocks' proj_out split into out_proj + mlp_fc2, AWQ W4A16 modulation layers with interleaved rows and +1
 * in the scale chunks' bias) and Z-Image (fused attention.to_qkv, feed_forward.net.0.proj = [w3; w1],
 * feed_forward.net.2; N and K padded to 128), int4 and fp4, made by tools/quant-fixtures from the
 * fixtures' weights.
 *
 * How correctness is told apart from quantization noise: tools/quant-fixtures also writes, per family,
 * expected/dequant.safetensors — each quantized layer's effective weight (and bias) under its DIFFUSERS
 * name, computed in numpy from the stored tensors (fused rows split, AWQ rows de-interleaved and the +1
 * removed, int4 fc2 shift compensation added back). The test merges them into the fixture's diffusers
 * checkpoint and runs that dense in f32: the reference the Nunchaku run must reproduce up to its W4A4
 * activation quantization only. Then
 *   (a) nunchaku f32 vs that dequantized reference  ≤ BOUND_DEQ_*  (activation quantization only);
 *   (b) nunchaku f32 and bf16 vs the fixture output   ≤ BOUND_FIX  (weights and activations 4-bit), and
 *       f32 above FLOOR (the layers really ran quantized);
 *   (c) the bound (a) rejects layout errors: references built with a deliberately mis-wired layout (FLUX q
 *       and k exchanged in every block and stream, which is what a wrong [q; k; v] split does; Z-Image w1
 *       and w3 exchanged, which is what reading net.0.proj as [w1; w3] does) lie farther than 1.25 × it.
 * Measured on the CPU backend, f32 (a) / (b) / (c): FLUX int4 1.0e-2 / 1.6e-2 / 3.7e-2, fp4 1.0e-2 /
 * 1.5e-2 / 3.6e-2; Z-Image int4 7.6e-2 / 1.0e-1 / 2.5e-1, fp4 5.7e-2 / 8.1e-2 / 2.4e-1 (Z-Image's sandwich
 * norms rescale each block's output, so its 4-bit noise is larger: the dequantized weights alone already
 * move it 5–6e-2 from the fixture). Bugs injected into the model code for the record, (a) for FLUX int4:
 * AWQ rows left interleaved 0.62, the +1 left in the scale bias 0.13, fc2 run signed 2.9e-2, q/k of the
 * joint blocks' image stream exchanged 3.4e-2; Z-Image: w1/w3 exchanged 0.24, q/k exchanged 0.28. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "test_util.h"

#define FIX QDIT_SHARED_DIR "/fixtures"
#define BOUND_DEQ_FLUX 0.02
#define BOUND_DEQ_ZIMAGE 0.12
#define BOUND_FIX 0.3
#define FLOOR 1e-3

typedef struct {
    char *dir;
    const char *quant; /* generated family files */
} env;

static int setup(void **state) {
    env *e = calloc(1, sizeof *e);
    e->dir = qt_mkdtemp("forward-nunchaku");
    e->quant = getenv("QDIT_QUANT_FIXTURES");
    *state = e;
    return 0;
}

static int teardown(void **state) {
    env *e = *state;
    qt_rmtree(e->dir);
    free(e->dir);
    free(e);
    return 0;
}

/* qdit forward of the fixture module `model` with `weights` as --transformer-weights-path (NULL: the
 * fixture's own weights); returns the output path (caller frees). */
static char *run_forward(env *e, const char *model, const char *weights, const char *precision, const char *tag) {
    char comp[512], io[512], name[256];
    snprintf(comp, sizeof comp, FIX "/%s/transformer", model);
    snprintf(io, sizeof io, FIX "/%s/io.safetensors", model);
    snprintf(name, sizeof name, "%s-%s-%s.safetensors", model, tag, precision);
    char *out_path = qt_path(e->dir, name);
    char *out = NULL, *err = NULL;
    int rc = weights ? qt_run_qdit(&out, &err, "forward", "--component", comp, "--transformer-weights-path", weights, "--inputs", io,
                                   "--output", out_path, "--precision", precision, NULL)
                     : qt_run_qdit(&out, &err, "forward", "--component", comp, "--inputs", io, "--output", out_path,
                                   "--precision", precision, NULL);
    if (rc != 0) fail_msg("qdit forward %s (%s) --precision %s failed (%d): %s", model, tag, precision, rc, err);
    free(out), free(err);
    return out_path;
}

/* `name` with substring a replaced by b or b by a (the first that occurs), into buf; NULL if neither does */
static const char *swapped_name(const char *name, const char *a, const char *b, char *buf, size_t n) {
    const char *from = a, *to = b, *p = strstr(name, a);
    if (!p) from = b, to = a, p = strstr(name, b);
    if (!p) return NULL;
    snprintf(buf, n, "%.*s%s%s", (int)(p - name), name, to, p + strlen(from));
    return buf;
}

/* The fixture's diffusers checkpoint with every tensor that `dequant` holds replaced by the dequantized
 * one (F32), written to `path`. `swap` (NULL, or a NULL-terminated list of substring pairs) exchanges the
 * dequantized tensors whose names differ by one pair: a deliberately mis-wired reference. */
static void write_dequant_reference(const char *src_path, const char *dequant_path, const char *path, const char *const *swap) {
    qd_st_file *src, *dq;
    if (qd_st_open(src_path, &src)) fail_msg("%s: %s", src_path, qd_last_error());
    if (qd_st_open(dequant_path, &dq)) fail_msg("%s: %s", dequant_path, qd_last_error());
    qd_st_writer *w;
    if (qd_st_writer_create(path, &w)) fail_msg("%s: %s", path, qd_last_error());
    size_t replaced = 0;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1 && qd_st_writer_begin(w)) fail_msg("%s: %s", path, qd_last_error());
        for (size_t i = 0; i < src->n_tensors; i++) {
            const qd_st_tensor *t = &src->tensors[i];
            const char *from = t->name;
            char buf[512];
            for (int j = 0; swap && swap[j]; j += 2) {
                const char *o = swapped_name(t->name, swap[j], swap[j + 1], buf, sizeof buf);
                if (o && qd_st_find(dq, o) && qd_st_find(dq, t->name)) {
                    from = o;
                    break;
                }
            }
            const qd_st_tensor *d = qd_st_find(dq, from);
            const qd_st_file *f = d ? dq : src;
            const qd_st_tensor *use = d ? d : t;
            if (d) {
                assert_int_equal(d->elements, t->elements);
                replaced += pass;
            }
            qd_status s = pass == 0 ? qd_st_writer_add(w, t->name, use->dtype, t->rank, t->shape)
                                    : qd_st_writer_put(w, t->name, qd_st_data(f, use), use->end - use->begin);
            if (s) fail_msg("%s: %s", path, qd_last_error());
        }
    }
    if (qd_st_writer_finish(w)) fail_msg("%s: %s", path, qd_last_error());
    /* every dequantized tensor found its diffusers name */
    assert_int_equal(replaced, dq->n_tensors);
    qd_st_close(src), qd_st_close(dq);
}

static void check_le(const char *what, double e, double bound) {
    print_message("%-60s relative L2 %.3e (bound %.2g)\n", what, e, bound);
    if (!(e <= bound)) fail_msg("%s: relative L2 %.3e > %.2g", what, e, bound);
}

static void check_ge(const char *what, double e, double floor_) {
    print_message("%-60s relative L2 %.3e (floor %.2g)\n", what, e, floor_);
    if (!(e >= floor_)) fail_msg("%s: relative L2 %.3e < %.2g", what, e, floor_);
}

static void run_family(env *e, const char *model, const char *precision, double bound_deq, const char *miswiring,
                       const char *const *swap) {
    if (!e->quant) fail_msg("QDIT_QUANT_FIXTURES is not set (ctest sets it after quant_fixtures_generate)");
    char file[768], dequant[768], src[512], ref[512], what[160], name[128];
    snprintf(file, sizeof file, "%s/%s/svdquant_%s/svdq-%s_r32-%s.safetensors", e->quant, model, precision, precision, model);
    snprintf(dequant, sizeof dequant, "%s/%s/svdquant_%s/expected/dequant.safetensors", e->quant, model, precision);
    snprintf(src, sizeof src, FIX "/%s/transformer/diffusion_pytorch_model.safetensors", model);
    snprintf(ref, sizeof ref, FIX "/%s/io.safetensors", model);

    /* the dequantized reference, and one mis-wired on purpose */
    snprintf(name, sizeof name, "%s-%s-dequant.safetensors", model, precision);
    char *deq_w = qt_path(e->dir, name);
    write_dequant_reference(src, dequant, deq_w, NULL);
    snprintf(name, sizeof name, "%s-%s-miswired.safetensors", model, precision);
    char *bad_w = qt_path(e->dir, name);
    write_dequant_reference(src, dequant, bad_w, swap);
    char *deq = run_forward(e, model, deq_w, "f32", "dequant");
    char *bad = run_forward(e, model, bad_w, "f32", "miswired");

    char *nk32 = run_forward(e, model, file, "f32", precision);
    char *nk16 = run_forward(e, model, file, "bf16", precision);
    snprintf(what, sizeof what, "%s svdq %s f32 vs dequantized weights", model, precision);
    const double a = qt_rel_l2(nk32, "output", deq, "output");
    check_le(what, a, bound_deq);
    snprintf(what, sizeof what, "%s svdq %s f32 vs fixture", model, precision);
    const double b = qt_rel_l2(nk32, "output", ref, "output");
    check_le(what, b, BOUND_FIX);
    if (!(b >= FLOOR)) fail_msg("%s: relative L2 %.3e < %.2g: the layers did not run quantized", what, b, FLOOR);
    snprintf(what, sizeof what, "%s svdq %s bf16 vs fixture", model, precision);
    check_le(what, qt_rel_l2(nk16, "output", ref, "output"), BOUND_FIX);
    snprintf(what, sizeof what, "%s dequantized weights f32 vs fixture", model);
    print_message("%-60s relative L2 %.3e\n", what, qt_rel_l2(deq, "output", ref, "output"));
    /* the bound rejects a layout error: the run is farther than it from a mis-wired reference */
    snprintf(what, sizeof what, "%s svdq %s f32 vs mis-wired (%s)", model, precision, miswiring);
    check_ge(what, qt_rel_l2(nk32, "output", bad, "output"), 1.25 * bound_deq);
    free(deq_w), free(bad_w), free(deq), free(bad), free(nk32), free(nk16);
}

/* what a wrong [q; k; v] split does (q and k exchanged, every block and stream) */
static const char *const flux_swap[] = {".attn.to_q.", ".attn.to_k.", ".attn.add_q_proj.", ".attn.add_k_proj.", NULL};
/* what reading net.0.proj as [w1; w3] does (gate and value exchanged, every block) */
static const char *const zimage_swap[] = {".feed_forward.w1.", ".feed_forward.w3.", NULL};

static void test_flux_int4(void **state) { run_family(*state, "flux_tiny_a", "int4", BOUND_DEQ_FLUX, "q<->k", flux_swap); }
static void test_flux_fp4(void **state) { run_family(*state, "flux_tiny_a", "fp4", BOUND_DEQ_FLUX, "q<->k", flux_swap); }
static void test_zimage_int4(void **state) { run_family(*state, "zimage_tiny_a", "int4", BOUND_DEQ_ZIMAGE, "w1<->w3", zimage_swap); }
static void test_zimage_fp4(void **state) { run_family(*state, "zimage_tiny_a", "fp4", BOUND_DEQ_ZIMAGE, "w1<->w3", zimage_swap); }

/* A Nunchaku file missing one of its fused layers: the error names the layer. */
static void test_missing_layer_named(void **state) {
    env *e = *state;
    if (!e->quant) fail_msg("QDIT_QUANT_FIXTURES is not set (ctest sets it after quant_fixtures_generate)");
    char file[768];
    snprintf(file, sizeof file, "%s/flux_tiny_a/svdquant_int4/svdq-int4_r32-flux_tiny_a.safetensors", e->quant);
    qd_st_file *f;
    if (qd_st_open(file, &f)) fail_msg("%s: %s", file, qd_last_error());
    char *path = qt_path(e->dir, "svdq-int4_r32-broken.safetensors");
    qd_st_writer *w;
    if (qd_st_writer_create(path, &w)) fail_msg("%s: %s", path, qd_last_error());
    const char *drop = "transformer_blocks.1.qkv_proj_context.";
    for (size_t i = 0; i < f->n_meta; i++) assert_int_equal(qd_st_writer_meta(w, f->meta[i].key, f->meta[i].value), QD_OK);
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) assert_int_equal(qd_st_writer_begin(w), QD_OK);
        for (size_t i = 0; i < f->n_tensors; i++) {
            const qd_st_tensor *t = &f->tensors[i];
            if (!strncmp(t->name, drop, strlen(drop))) continue;
            qd_status s = pass == 0 ? qd_st_writer_add(w, t->name, t->dtype, t->rank, t->shape)
                                    : qd_st_writer_put(w, t->name, qd_st_data(f, t), t->end - t->begin);
            assert_int_equal(s, QD_OK);
        }
    }
    assert_int_equal(qd_st_writer_finish(w), QD_OK);
    qd_st_close(f);
    char *out = NULL, *err = NULL, *o = qt_path(e->dir, "never.safetensors");
    int rc = qt_run_qdit(&out, &err, "forward", "--component", FIX "/flux_tiny_a/transformer", "--transformer-weights-path", path,
                         "--inputs", FIX "/flux_tiny_a/io.safetensors", "--output", o, NULL);
    assert_true(rc != 0);
    print_message("error: %s", err);
    assert_non_null(strstr(err, "'transformer_blocks.1.qkv_proj_context'"));
    assert_non_null(strstr(err, "svdq-int4_r32-broken.safetensors"));
    free(out), free(err), free(o), free(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flux_int4),   cmocka_unit_test(test_flux_fp4), cmocka_unit_test(test_zimage_int4),
        cmocka_unit_test(test_zimage_fp4),  cmocka_unit_test(test_missing_layer_named),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
