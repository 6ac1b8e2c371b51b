/* Transformer weight offload glue (models/offload.c) in FLUX.1 and Z-Image, checked on a recording backend
 * written here: the CPU backend's ops, plus weights_* ops that record every call and keep a model of
 * residency — a group is resident after its fetch until a fetch of another group of the same slot parity
 * (two slots, as on the GPU) or an eviction, everything after fetch_all — and a linear op that refuses a
 * layer of a group that is not resident, as the CUDA backend does. Tiny random-weight models, inputs drawn
 * fresh (seed printed). Checked:
 *   - layerwise: one group per block, in the order the forward runs the blocks (FLUX double then single;
 *     Z-Image noise refiners, context refiners, layers), each holding exactly that block's prepared linears;
 *     the non-block linears in none; each forward fetches every group once, in order, and every linear of a
 *     group runs after its own group's fetch and before the next one; the output equals the unoffloaded run
 *     bit for bit;
 *   - component: the blocks and one group of every other linear; fetch_all once before the first linear,
 *     no per-block fetches, offload_end evicts, the next forward uploads again;
 *   - off: no group, no fetch; a backend without the ops (the CPU) runs any mode as if off;
 *   - the groups are released once, before the layers are freed (the recorded layers are read then: a
 *     use after free would show under ASan);
 *   - FLUX.1 runs every block's modulation through one linear_many call per forward (its layers resident), except
 *     layerwise, where they run block by block after each fetch;
 *   - linears_ahead (backend.h), not layerwise: each forward hands it block 0, then at the start of each block b
 *     block b + 1 (after the last block: an empty call), each call exactly that block's prepared linears, and every
 *     linear of block b runs between the call for b + 1 and the next call; layerwise never calls it;
 *   - the mode rule (flags, SGLang's ModelOpt FP8 exception, qdit's auto rule) and the weight estimate. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"
#include "core/status.h"
#include "io/ckpt.h"
#include "io/safetensors.h"
#include "models/dit/flux.h"
#include "models/dit/zimage.h"
#include "models/offload.h"
#include "quant/config.h"
#include "test_util.h"

enum { MAX_LAYERS = 512, MAX_GROUPS = 64, MAX_EVENTS = 8192 };
enum { EV_FETCH_ALL = -2, EV_EVICT = -3, EV_LINEAR_REST = -4 }; /* events: g ≥ 0 fetch of g, 1000 + g a linear of g */

typedef struct {
    qd_backend *cpu;
    qd_backend_ops ops;
    qd_backend be;
    const qd_linear *layer[MAX_LAYERS];
    char name[MAX_LAYERS][128];
    int group_of[MAX_LAYERS];
    int n_layers;
    char prepared[MAX_LAYERS][128];
    int n_prepared;
    bool resident[MAX_GROUPS];
    int n_groups;
    int ev[MAX_EVENTS], n_ev;
    int fetches, fetch_alls, evicts, releases, violations;
    /* linears_ahead: calls (block b ≥ 0, −1: empty) and block linears (1000 + b) in issue order */
    const char *(*prefix)(int group, char *buf, size_t len);
    int blocks;
    int seq[MAX_EVENTS], n_seq, aheads;
    int many_layers; /* layers run through linear_many */
} rec_backend;

static rec_backend R;

static int group_of(const qd_linear *l) {
    for (int i = 0; i < R.n_layers; i++)
        if (R.layer[i] == l) return R.group_of[i];
    return -1;
}

static void event(int e) {
    assert_true(R.n_ev < MAX_EVENTS);
    R.ev[R.n_ev++] = e;
}

static qd_status r_prepare(qd_backend *b, qd_linear *l) {
    assert_true(R.n_prepared < MAX_LAYERS);
    snprintf(R.prepared[R.n_prepared++], 128, "%s", l->name);
    const uint64_t bytes = qd_linear_stored_bytes(l);
    qd_status s = R.cpu->ops->prepare_linear(b, l);
    l->device_bytes = bytes; /* as a device backend reports its prepared form */
    return s;
}

static bool starts_with(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

/* the block a layer belongs to by its name (−1: none, or no model set) */
static int block_of_name(const char *name) {
    char p[64];
    for (int b = 0; R.prefix && name && b < R.blocks; b++)
        if (starts_with(name, R.prefix(b, p, sizeof p))) return b;
    return -1;
}

static void seq(int e) {
    assert_true(R.n_seq < MAX_EVENTS);
    R.seq[R.n_seq++] = e;
}

static qd_status r_ahead(qd_backend *be, qd_linear *const *layers, int n) {
    (void)be;
    R.aheads++;
    if (n == 0) return seq(-1), QD_OK;
    const int b = block_of_name(layers[0]->name);
    assert_true(b >= 0);
    char p[64];
    R.prefix(b, p, sizeof p);
    int prepared = 0;
    for (int i = 0; i < R.n_prepared; i++) prepared += starts_with(R.prepared[i], p);
    assert_int_equal(n, prepared); /* every prepared linear of the block, nothing else */
    for (int i = 0; i < n; i++) assert_int_equal(block_of_name(layers[i]->name), b);
    seq(b);
    return QD_OK;
}

static qd_status r_linear(qd_backend *b, qd_linear *l, const qd_tensor *x, qd_tensor *y) {
    const int lb = block_of_name(l->name);
    if (lb >= 0) seq(1000 + lb);
    const int g = group_of(l);
    event(g >= 0 ? 1000 + g : EV_LINEAR_REST);
    if (g >= 0 && !R.resident[g]) {
        R.violations++;
        return qd_fail(QD_EINVAL, "layer '%s': its weights are offloaded and were not fetched (test backend)", l->name);
    }
    return R.cpu->ops->linear(b, l, x, y);
}

/* linear_many (FLUX's modulations of every block, at a step's start): each layer must be resident, as in r_linear; it
   is not a block's linear in the linears_ahead order (backend.h: what linear_many runs needs nothing done ahead) */
static qd_status r_linear_many(qd_backend *b, qd_linear *const *ls, int n, const qd_tensor *x, qd_tensor *const *ys) {
    R.many_layers += n;
    for (int i = 0; i < n; i++) {
        const int g = group_of(ls[i]);
        event(g >= 0 ? 1000 + g : EV_LINEAR_REST);
        if (g >= 0 && !R.resident[g]) {
            R.violations++;
            return qd_fail(QD_EINVAL, "layer '%s': its weights are offloaded and were not fetched (test backend)", ls[i]->name);
        }
        qd_status s = R.cpu->ops->linear(b, ls[i], x, ys[i]);
        if (s) return s;
    }
    return QD_OK;
}

static qd_status r_group(qd_backend *b, qd_linear *const *layers, int n, int *id) {
    (void)b;
    assert_true(n > 0 && R.n_groups < MAX_GROUPS);
    for (int i = 0; i < n; i++) {
        assert_true(layers[i]->out_features > 0 && layers[i]->name); /* only bound layers are grouped */
        assert_int_equal(group_of(layers[i]), -1); /* and each once */
        assert_true(R.n_layers < MAX_LAYERS);
        R.layer[R.n_layers] = layers[i];
        snprintf(R.name[R.n_layers], 128, "%s", layers[i]->name);
        R.group_of[R.n_layers++] = R.n_groups;
    }
    R.resident[R.n_groups] = false;
    *id = R.n_groups++;
    return QD_OK;
}

static qd_status r_fetch(qd_backend *b, int g) {
    (void)b;
    assert_true(g >= 0 && g < R.n_groups);
    event(g);
    R.fetches++;
    for (int h = 0; h < R.n_groups; h++)
        if (h % 2 == g % 2) R.resident[h] = false; /* the slot's previous group is overwritten */
    R.resident[g] = true;
    return QD_OK;
}

/* fetch_all / evict_all: every group resident, or none */
static qd_status all_groups(int ev, int *count, bool resident) {
    event(ev);
    (*count)++;
    for (int g = 0; g < R.n_groups; g++) R.resident[g] = resident;
    return QD_OK;
}

static qd_status r_fetch_all(qd_backend *b) { return (void)b, all_groups(EV_FETCH_ALL, &R.fetch_alls, true); }
static qd_status r_evict_all(qd_backend *b) { return (void)b, all_groups(EV_EVICT, &R.evicts, false); }

static void r_release(qd_backend *b) {
    (void)b;
    R.releases++;
    /* the layers must still be alive: read each one's name through the pointer kept at grouping */
    for (int i = 0; i < R.n_layers; i++) assert_string_equal(R.layer[i]->name, R.name[i]);
    R.n_layers = 0;
}

/* the recording backend (with_ops) or the plain CPU backend */
static qd_backend *backend(bool with_ops) {
    memset(&R, 0, sizeof R);
    assert_int_equal(qd_backend_cpu_create(&R.cpu), QD_OK);
    if (!with_ops) return R.cpu;
    R.ops = *R.cpu->ops;
    R.ops.prepare_linear = r_prepare, R.ops.linear = r_linear, R.ops.linear_many = r_linear_many;
    R.ops.weights_group = r_group, R.ops.weights_fetch = r_fetch, R.ops.weights_fetch_all = r_fetch_all;
    R.ops.weights_evict_all = r_evict_all, R.ops.weights_release = r_release, R.ops.linears_ahead = r_ahead;
    R.be = (qd_backend){.ops = &R.ops, .impl = R.cpu->impl};
    return &R.be;
}

static void backend_done(void) { R.cpu->ops->destroy(R.cpu); }

/* the block prefix a group must hold, in forward order */
typedef const char *(*prefix_fn)(int group, char *buf, size_t len);

static const char *flux_prefix(int g, char *buf, size_t len) {
    if (g < 2) snprintf(buf, len, "transformer_blocks.%d.", g);
    else snprintf(buf, len, "single_transformer_blocks.%d.", g - 2);
    return buf;
}

static const char *zimage_prefix(int g, char *buf, size_t len) {
    if (g == 0) snprintf(buf, len, "noise_refiner.0.");
    else if (g == 1) snprintf(buf, len, "context_refiner.0.");
    else snprintf(buf, len, "layers.%d.", g - 2);
    return buf;
}

/* each block group holds exactly the prepared layers of its block; the rest group (component) the others */
static void check_groups(int blocks, bool rest_group, prefix_fn prefix) {
    assert_int_equal(R.n_groups, blocks + (rest_group ? 1 : 0));
    char p[64];
    for (int g = 0; g < blocks; g++) {
        prefix(g, p, sizeof p);
        int in_group = 0, prepared = 0;
        for (int i = 0; i < R.n_layers; i++)
            if (R.group_of[i] == g) {
                if (!starts_with(R.name[i], p)) fail_msg("group %d holds '%s', not a layer of block '%s'", g, R.name[i], p);
                in_group++;
            }
        for (int i = 0; i < R.n_prepared; i++) prepared += starts_with(R.prepared[i], p);
        assert_true(in_group > 0);
        assert_int_equal(in_group, prepared);
    }
    int rest = 0, grouped_rest = 0;
    for (int i = 0; i < R.n_prepared; i++) {
        bool in_block = false;
        for (int g = 0; g < blocks; g++) in_block |= starts_with(R.prepared[i], prefix(g, p, sizeof p));
        rest += !in_block;
    }
    for (int i = 0; i < R.n_layers; i++) grouped_rest += R.group_of[i] == blocks;
    assert_true(rest > 0);
    assert_int_equal(grouped_rest, rest_group ? rest : 0);
}

/* layerwise: each forward (events from..to) fetches 0..blocks−1 in order, and every linear of group g comes
   after g's fetch and before the next fetch */
static void check_fetch_order(int from, int to, int blocks) {
    int next = 0, last = -1;
    for (int i = from; i < to; i++) {
        const int e = R.ev[i];
        if (e >= 0 && e < 1000) {
            assert_int_equal(e, next % blocks);
            next++;
            last = e;
        } else if (e >= 1000) {
            if (e - 1000 != last) fail_msg("a linear of group %d ran after the fetch of group %d", e - 1000, last);
        }
    }
    assert_int_equal(next, blocks);
}

/* linears_ahead in `forwards` forwards: calls 0, 1, …, blocks − 1, then the empty one, per forward; a block's linears
   run after the call for the next block (at the block's start) and before the call after it — or, for the block
   last handed over, already during the block before it (Z-Image makes the next block's adaLN chunks one block
   early, for its fused norm; what was handed ahead may run as soon as it is handed) */
static void check_ahead(int forwards) {
    int k = 0;
    for (int f = 0; f < forwards; f++) {
        int target = -2; /* the block last handed over; blocks: an empty call */
        for (int want = 0; want <= R.blocks; want++) {
            while (k < R.n_seq && R.seq[k] >= 1000) {
                const int b = R.seq[k++] - 1000;
                if (b != target - 1 && b != target) fail_msg("forward %d: a linear of block %d ran while block %d was handed ahead", f, b, target);
            }
            assert_true(k < R.n_seq);
            const int got = R.seq[k++];
            assert_int_equal(got, want < R.blocks ? want : -1);
            target = want < R.blocks ? want : R.blocks;
        }
        while (k < R.n_seq && R.seq[k] >= 1000) {
            const int b = R.seq[k++] - 1000;
            if (b != R.blocks - 1) fail_msg("forward %d: a linear of block %d ran after the last block was handed ahead", f, b);
        }
    }
    assert_int_equal(k, R.n_seq);
}

typedef struct {
    const char *what;
    int blocks;
    prefix_fn prefix;
    qd_status (*load)(const qd_model_ctx *ctx, void **model);
    qd_status (*forward)(void *model, qd_backend *be, uint64_t seed, float *out);
    qd_status (*end)(void *model);
    void (*free_model)(void *model);
    int64_t n_out;
    int many; /* layers a forward runs through linear_many where the blocks stay resident (FLUX.1's modulations) */
} model_kind;

/* ---- FLUX.1, tiny ---- */

static const char *const FLUX_CFG =
    "{\"num_layers\":2,\"num_single_layers\":3,\"attention_head_dim\":16,\"num_attention_heads\":2,\"joint_attention_dim\":32,"
    "\"pooled_projection_dim\":24,\"in_channels\":8,\"guidance_embeds\":true,\"axes_dims_rope\":[4,6,6]}";

static qd_status flux_load(const qd_model_ctx *ctx, void **model) {
    json_t *cfg = json_loads(FLUX_CFG, 0, NULL);
    qd_flux_config c;
    qd_status s = qd_flux_config_parse("tiny flux", cfg, &c);
    json_decref(cfg);
    return s ? s : qd_flux_load(ctx, &c, (qd_flux **)model);
}

static qd_status flux_forward(void *model, qd_backend *be, uint64_t seed, float *out) {
    enum { N = 4, T = 3 };
    uint64_t rng = seed;
    qd_tensor hs = qt_random_tensor(be, 3, (int64_t[]){1, N, 8}, &rng), enc = qt_random_tensor(be, 3, (int64_t[]){1, T, 32}, &rng);
    qd_tensor pooled = qt_random_tensor(be, 2, (int64_t[]){1, 24}, &rng), y;
    assert_int_equal(qd_tensor_new(be, &y, QD_DTYPE_F32, 3, (int64_t[]){1, N, 8}), QD_OK);
    float img_ids[N * 3] = {0}, txt_ids[T * 3] = {0}, ts = 0.6f, guide = 3.5f;
    for (int i = 0; i < N; i++) img_ids[3 * i + 1] = (float)(i / 2), img_ids[3 * i + 2] = (float)(i % 2);
    qd_flux_inputs in = {.hidden = &hs, .encoder = &enc, .pooled = &pooled, .timestep = &ts, .guidance = &guide, .img_ids = img_ids, .txt_ids = txt_ids};
    qd_status s = qd_flux_forward(model, &in, &y);
    if (!s) s = be->ops->download(be, &y, out);
    qd_tensor_free(&hs), qd_tensor_free(&enc), qd_tensor_free(&pooled), qd_tensor_free(&y);
    return s;
}

static qd_status flux_end(void *model) { return qd_flux_offload_end(model); }
static void flux_free(void *model) { qd_flux_free(model); }

/* ---- Z-Image, tiny ---- */

static const char *const ZIMAGE_CFG =
    "{\"dim\":64,\"n_layers\":2,\"n_refiner_layers\":1,\"n_heads\":2,\"n_kv_heads\":2,\"in_channels\":4,\"cap_feat_dim\":32,"
    "\"axes_dims\":[8,12,12]}";

static qd_status zimage_load(const qd_model_ctx *ctx, void **model) {
    json_t *cfg = json_loads(ZIMAGE_CFG, 0, NULL);
    qd_zimage_config c;
    qd_status s = qd_zimage_config_parse("tiny z-image", cfg, &c);
    json_decref(cfg);
    return s ? s : qd_zimage_load(ctx, &c, (qd_zimage **)model);
}

static qd_status zimage_forward(void *model, qd_backend *be, uint64_t seed, float *out) {
    uint64_t rng = seed;
    qd_tensor x = qt_random_tensor(be, 4, (int64_t[]){4, 1, 8, 8}, &rng), cap = qt_random_tensor(be, 2, (int64_t[]){5, 32}, &rng), y;
    assert_int_equal(qd_tensor_new(be, &y, QD_DTYPE_F32, 4, x.shape), QD_OK);
    qd_status s = qd_zimage_forward(model, &x, 0.3f, &cap, &y);
    if (!s) s = be->ops->download(be, &y, out);
    qd_tensor_free(&x), qd_tensor_free(&cap), qd_tensor_free(&y);
    return s;
}

static qd_status zimage_end(void *model) { return qd_zimage_offload_end(model); }
static void zimage_free(void *model) { qd_zimage_free(model); }

static const model_kind FLUX = {"FLUX.1", 5, flux_prefix, flux_load, flux_forward, flux_end, flux_free, 1 * 4 * 8, 2 * 2 + 3};
static const model_kind ZIMAGE = {"Z-Image", 4, zimage_prefix, zimage_load, zimage_forward, zimage_end, zimage_free, 4 * 8 * 8, 0};

/* Load the model in `mode` on the recording backend (or the plain CPU one), run two forwards on the same
   fresh inputs, end the offload, run one more, free; the outputs into out[3][n_out]. */
static void run_model(const model_kind *k, qd_offload_mode mode, bool with_ops, uint64_t seed, float *out) {
    qd_backend *be = backend(with_ops);
    R.prefix = k->prefix, R.blocks = k->blocks;
    qd_quant_config q;
    qd_quant_config_init(&q);
    qd_model_ctx ctx = {.backend = be, .quant = &q, .act = QD_DTYPE_F32, .random_weights = true, .random_seed = 7, .offload = mode};
    void *m = NULL;
    assert_int_equal(k->load(&ctx, &m), QD_OK);
    const bool offloads = with_ops && mode != QD_OFFLOAD_MODE_NONE;
    if (offloads) check_groups(k->blocks, mode == QD_OFFLOAD_MODE_COMPONENT, k->prefix);
    else assert_int_equal(R.n_groups, 0);
    int marks[4] = {R.n_ev};
    for (int f = 0; f < 3; f++) {
        if (f == 2) assert_int_equal(k->end(m), QD_OK);
        const int before_forward = R.n_ev;
        qd_status s = k->forward(m, be, seed, out + f * k->n_out);
        if (s) fail_msg("%s forward: %s", k->what, qd_last_error());
        marks[f + 1] = R.n_ev;
        if (mode == QD_OFFLOAD_MODE_COMPONENT && offloads) {
            /* uploaded before the first linear of the first forward and of the one after an eviction, not again */
            if (f == 1) assert_true(R.ev[before_forward] >= 1000);
            else assert_int_equal(R.ev[before_forward], EV_FETCH_ALL);
        }
    }
    assert_int_equal(R.violations, 0);
    /* FLUX.1's modulations of every block in one linear_many call per forward, unless the blocks stream in one at a
       time (their weights are not resident together) */
    if (with_ops) assert_int_equal(R.many_layers, mode == QD_OFFLOAD_MODE_LAYERWISE ? 0 : 3 * k->many);
    if (mode == QD_OFFLOAD_MODE_LAYERWISE && offloads) {
        for (int f = 0; f < 3; f++) check_fetch_order(marks[f], marks[f + 1], k->blocks);
        assert_int_equal(R.fetches, 3 * k->blocks);
    } else {
        assert_int_equal(R.fetches, 0);
    }
    if (with_ops && mode != QD_OFFLOAD_MODE_LAYERWISE) {
        assert_int_equal(R.aheads, 3 * (k->blocks + 1));
        check_ahead(3);
    } else {
        assert_int_equal(R.aheads, 0);
    }
    assert_int_equal(R.fetch_alls, mode == QD_OFFLOAD_MODE_COMPONENT && offloads ? 2 : 0);
    assert_int_equal(R.evicts, offloads ? 1 : 0);
    k->free_model(m);
    assert_int_equal(R.releases, offloads ? 1 : 0);
    backend_done();
}

static void check_model(const model_kind *k) {
    const uint64_t seed = qt_seed();
    const size_t n = (size_t)(3 * k->n_out);
    float *ref = malloc(sizeof *ref * n), *got = malloc(sizeof *got * n);
    run_model(k, QD_OFFLOAD_MODE_NONE, true, seed, ref);
    for (size_t i = 0; i < n; i++) assert_true(ref[i] == ref[i] && ref[i] != 0.0f); /* finite, and real numerics */
    const struct {
        qd_offload_mode mode;
        bool ops;
    } runs[] = {{QD_OFFLOAD_MODE_LAYERWISE, true}, {QD_OFFLOAD_MODE_COMPONENT, true}, {QD_OFFLOAD_MODE_LAYERWISE, false},
                {QD_OFFLOAD_MODE_COMPONENT, false}};
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        run_model(k, runs[r].mode, runs[r].ops, seed, got);
        assert_memory_equal(got, ref, sizeof *got * n); /* offload moves bytes, never changes the numbers */
    }
    free(ref), free(got);
}

static void test_flux(void **state) {
    (void)state;
    check_model(&FLUX);
}

/* Layerwise with a budget (--dit-offload-budget-mib): the blocks' bytes measured on a first load; with a budget of
   the slots (twice the first block) plus about half of the other blocks, some blocks stay resident — never the
   first, paced over the forward — the streamed ones are consecutive groups fetched in order, resident ones are
   never fetched, and the output is the unoffloaded one bit for bit. A budget below the slots streams them all. */
static void test_flux_budget(void **state) {
    (void)state;
    const uint64_t seed = qt_seed();
    const int64_t n = 3 * FLUX.n_out;
    float *ref = malloc(sizeof *ref * (size_t)n), *got = malloc(sizeof *got * (size_t)n);
    run_model(&FLUX, QD_OFFLOAD_MODE_NONE, true, seed, ref);
    /* the bytes of each block (in forward order) from a layerwise load that streams them all */
    qd_backend *be = backend(true);
    qd_quant_config q;
    qd_quant_config_init(&q);
    qd_model_ctx ctx = {.backend = be, .quant = &q, .act = QD_DTYPE_F32, .random_weights = true, .random_seed = 7, .offload = QD_OFFLOAD_MODE_LAYERWISE};
    void *m = NULL;
    assert_int_equal(FLUX.load(&ctx, &m), QD_OK);
    uint64_t block_bytes[8] = {0}, total = 0;
    assert_int_equal(R.n_groups, FLUX.blocks);
    for (int i = 0; i < R.n_layers; i++) block_bytes[R.group_of[i]] += R.layer[i]->device_bytes;
    for (int g = 0; g < FLUX.blocks; g++) assert_true(block_bytes[g] > 0), total += block_bytes[g];
    FLUX.free_model(m);
    backend_done();
    const uint64_t budgets[2] = {2 * block_bytes[0] + (total - block_bytes[0]) / 2, block_bytes[0]};
    for (int bi = 0; bi < 2; bi++) {
        be = backend(true);
        ctx.backend = be, ctx.offload_budget = budgets[bi];
        assert_int_equal(FLUX.load(&ctx, &m), QD_OK);
        const int streamed = R.n_groups;
        if (bi == 0) assert_true(streamed > 0 && streamed < FLUX.blocks);
        else assert_int_equal(streamed, FLUX.blocks);
        char p[64];
        for (int i = 0; i < R.n_layers; i++) /* the first block streams: group 0 is block 0 */
            if (R.group_of[i] == 0 && !starts_with(R.name[i], flux_prefix(0, p, sizeof p))) fail_msg("group 0 holds '%s'", R.name[i]);
        for (int f = 0; f < 2; f++) {
            const int from = R.n_ev;
            if (FLUX.forward(m, be, seed, got + f * FLUX.n_out)) fail_msg("forward: %s", qd_last_error());
            int next = 0;
            for (int e = from; e < R.n_ev; e++)
                if (R.ev[e] >= 0 && R.ev[e] < 1000) assert_int_equal(R.ev[e], next++);
            assert_int_equal(next, streamed);
        }
        assert_int_equal(R.violations, 0);
        assert_memory_equal(got, ref, sizeof *got * (size_t)(2 * FLUX.n_out));
        FLUX.free_model(m);
        backend_done();
    }
    free(ref), free(got);
}

static void test_zimage(void **state) {
    (void)state;
    check_model(&ZIMAGE);
}

/* ---- the mode rule ---- */

static void test_choose(void **state) {
    (void)state;
    const uint64_t G = (uint64_t)1 << 30;
    const struct {
        int layerwise, component;
        bool fp8, ops;
        uint64_t weights, free;
        qd_offload_mode want;
        bool warn;
    } cases[] = {
        {-1, -1, false, true, 12 * G, 130 * G, QD_OFFLOAD_MODE_NONE, false},      /* auto, fits (FLUX FP8 on an H200) */
        {-1, -1, false, true, 22 * G, 23 * G, QD_OFFLOAD_MODE_LAYERWISE, false},  /* auto, does not fit */
        {-1, -1, false, true, 20 * G, 23 * G, QD_OFFLOAD_MODE_LAYERWISE, false},  /* fits, but not with the headroom */
        {-1, -1, false, true, 18 * G, 23 * G, QD_OFFLOAD_MODE_NONE, false},       /* fits with the headroom */
        {-1, -1, false, true, 0, 23 * G, QD_OFFLOAD_MODE_NONE, false},            /* size unknown (random weights) */
        {-1, -1, false, true, 22 * G, 0, QD_OFFLOAD_MODE_NONE, false},            /* free memory unknown */
        {-1, 0, false, true, 22 * G, 23 * G, QD_OFFLOAD_MODE_LAYERWISE, false},   /* component false leaves layerwise auto */
        {0, -1, false, true, 22 * G, 23 * G, QD_OFFLOAD_MODE_NONE, false},        /* layerwise false: resident */
        {1, -1, false, true, 1 * G, 130 * G, QD_OFFLOAD_MODE_LAYERWISE, false},   /* explicit */
        {1, 1, false, true, 1 * G, 130 * G, QD_OFFLOAD_MODE_LAYERWISE, false},    /* layerwise wins */
        {-1, 1, false, true, 1 * G, 130 * G, QD_OFFLOAD_MODE_COMPONENT, false},
        {0, 1, false, true, 1 * G, 130 * G, QD_OFFLOAD_MODE_COMPONENT, false},
        {-1, 1, true, true, 1 * G, 130 * G, QD_OFFLOAD_MODE_NONE, true},          /* ModelOpt FP8: no component offload */
        {1, -1, true, true, 1 * G, 130 * G, QD_OFFLOAD_MODE_LAYERWISE, false},    /* ... layerwise stays allowed */
        {1, 1, false, false, 22 * G, 23 * G, QD_OFFLOAD_MODE_NONE, false},        /* no offload ops (CPU) */
        {-1, -1, false, false, 22 * G, 23 * G, QD_OFFLOAD_MODE_NONE, false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        qd_offload_inputs in = {cases[i].layerwise, cases[i].component, cases[i].fp8, cases[i].ops, cases[i].weights, cases[i].free};
        char why[512];
        bool warn = true;
        const qd_offload_mode m = qd_offload_choose(&in, why, sizeof why, &warn);
        if (m != cases[i].want || warn != cases[i].warn) fail_msg("case %zu: mode %d warn %d, want %d %d (%s)", i, m, warn, cases[i].want, cases[i].warn, why);
        if (cases[i].warn) assert_non_null(strstr(why, "ModelOpt FP8"));
        if (cases[i].want == QD_OFFLOAD_MODE_LAYERWISE && cases[i].layerwise < 0) assert_non_null(strstr(why, "do not fit"));
    }
}

/* the flags reach the mode through qd_offload_resolve; on the CPU backend (no ops) it is always none */
static void test_resolve_on_cpu(void **state) {
    (void)state;
    qd_backend *cpu = NULL;
    assert_int_equal(qd_backend_cpu_create(&cpu), QD_OK);
    qd_options o;
    qd_options_init(&o);
    assert_int_equal(o.dit_layerwise_offload, -1);
    assert_int_equal(o.dit_cpu_offload, -1);
    qd_quant_config q;
    qd_quant_config_init(&q);
    o.dit_layerwise_offload = 1;
    assert_int_equal(qd_offload_resolve(&o, NULL, &q, cpu), QD_OFFLOAD_MODE_NONE);
    o.dit_layerwise_offload = -1, o.dit_cpu_offload = 1;
    assert_int_equal(qd_offload_resolve(&o, NULL, &q, cpu), QD_OFFLOAD_MODE_NONE);
    cpu->ops->destroy(cpu);
}

/* the estimate: a checkpoint's bytes, float matrices at an online method's bits */
static void test_estimate(void **state) {
    (void)state;
    /* w: BF16 [16, 32] (1024 bytes), b: BF16 [16] (32 bytes), e: F8_E4M3 [8, 8] (64 bytes, already quantized) */
    const char *hdr = "{\"w\":{\"dtype\":\"BF16\",\"shape\":[16,32],\"data_offsets\":[0,1024]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[16],\"data_offsets\":[1024,1056]},"
                      "\"e\":{\"dtype\":\"F8_E4M3\",\"shape\":[8,8],\"data_offsets\":[1056,1120]}}";
    size_t hl = strlen(hdr), padded = (hl + 7) / 8 * 8;
    uint8_t *img = calloc(1, 8 + padded + 1120);
    for (int i = 0; i < 8; i++) img[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(img + 8, hdr, hl);
    memset(img + 8 + hl, ' ', padded - hl);
    qd_st_file *f = NULL;
    assert_int_equal(qd_st_open_memory("estimate", img, 8 + padded + 1120, &f), QD_OK);
    qd_ckpt *ck = NULL;
    assert_int_equal(qd_ckpt_adopt_files(&f, 1, &ck), QD_OK);
    qd_quant_config q;
    qd_quant_config_init(&q);
    assert_int_equal(qd_offload_weight_estimate(ck, &q), 1120);
    q.method = QD_QM_FP8, q.online = true; /* w at 8 bits: 512 */
    assert_int_equal(qd_offload_weight_estimate(ck, &q), 512 + 32 + 64);
    q.method = QD_QM_MXFP4; /* 512 values at 4.25 bits: 272 */
    assert_int_equal(qd_offload_weight_estimate(ck, &q), 272 + 32 + 64);
    q.online = false; /* a serialized checkpoint: as stored */
    assert_int_equal(qd_offload_weight_estimate(ck, &q), 1120);
    assert_int_equal(qd_offload_weight_estimate(NULL, &q), 0);
    qd_ckpt_close(ck);
    free(img);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_choose),
        cmocka_unit_test(test_resolve_on_cpu),
        cmocka_unit_test(test_estimate),
        cmocka_unit_test(test_flux),
        cmocka_unit_test(test_flux_budget),
        cmocka_unit_test(test_zimage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
