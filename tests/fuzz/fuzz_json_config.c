/* libFuzzer target: the JSON files a repository brings with it.
 *
 * The first input byte picks the reader (selector % 3), the rest is the file's text:
 *   0  model_index.json   qd_model_index_parse (load/repo.h)
 *   1  *.index.json       qd_ckpt_parse_index  (io/ckpt.h)
 *   2  config.json        qd_json_parse plus the lookups qd_component_class makes (that function
 *                         reads files, so the same walk is repeated here on the parsed document),
 *                         then the quantization declaration readers on it: quantization_config (or
 *                         the document itself, as safetensors metadata holds it) through
 *                         qd_quant_normalize_metadata_form and qd_quant_from_declaration.
 * One target rather than three so the three readers share one corpus: their inputs are all small
 * JSON objects, and a mutation useful for one is often useful for another.
 *
 * The invariants are what callers rely on without re-checking — component names usable as folder
 * names, shard names that cannot leave the index's folder — and a violation is a __builtin_trap(). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/status.h"
#include "io/ckpt.h"
#include "io/json.h"
#include "load/repo.h"
#include "quant/declaration.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_model_index(const char *text, size_t len) {
    char *pipeline_class = (char *)1; /* poisoned: the parser must reset every output */
    qd_model_index_entry *entries = (qd_model_index_entry *)1;
    size_t n = 1;
    qd_status s = qd_model_index_parse("model_index.json", text, len, &pipeline_class, &entries, &n);
    if (s) {
        check_failed(s);
        CHECK(pipeline_class == NULL && entries == NULL && n == 0);
        return;
    }
    CHECK(entries != NULL);
    for (size_t i = 0; i < n; i++) {
        const qd_model_index_entry *e = &entries[i];
        /* The name becomes a folder below the pipeline root. */
        CHECK(e->name != NULL && e->name[0] != '\0' && e->name[0] != '_');
        CHECK(strchr(e->name, '/') == NULL);
        CHECK(strcmp(e->name, ".") != 0 && strcmp(e->name, "..") != 0);
        /* [null, null] entries are skipped, so at least one half is present. */
        CHECK(e->library != NULL || e->class_name != NULL);
        for (size_t j = 0; j < i; j++) CHECK(strcmp(entries[j].name, e->name) != 0);
    }
    qd_model_index_free(entries, n);
    free(pipeline_class);
}

/* The rule the index parser promises (ckpt.h): relative, no ".." component; also no empty
 * component, so "a//b" and a trailing "/" cannot name the folder itself. */
static bool shard_name_is_safe(const char *name) {
    if (name[0] == '\0' || name[0] == '/') return false;
    const char *p = name;
    for (;;) {
        const char *slash = strchr(p, '/');
        size_t n = slash ? (size_t)(slash - p) : strlen(p);
        if (n == 0) return false;
        if (n == 2 && p[0] == '.' && p[1] == '.') return false;
        if (!slash) return true;
        p = slash + 1;
    }
}

static void fuzz_index(const char *text, size_t len) {
    char **shards = (char **)1;
    size_t n = 1;
    qd_status s = qd_ckpt_parse_index("model.safetensors.index.json", text, len, &shards, &n);
    if (s) {
        check_failed(s);
        CHECK(shards == NULL && n == 0);
        return;
    }
    CHECK(shards != NULL && n > 0);
    for (size_t i = 0; i < n; i++) {
        CHECK(shards[i] != NULL && shard_name_is_safe(shards[i]));
        if (i) CHECK(strcmp(shards[i - 1], shards[i]) < 0); /* sorted and unique */
    }
    for (size_t i = 0; i < n; i++) free(shards[i]);
    free(shards);
}

/* Visit every value, as a consumer reading an arbitrary config would. jansson bounds the nesting
 * depth while parsing, so the recursion is bounded too. */
static size_t walk(const json_t *v) {
    size_t count = 1;
    if (json_is_object(v)) {
        const char *key;
        json_t *child;
        json_object_foreach((json_t *)v, key, child) {
            CHECK(key != NULL && child != NULL);
            CHECK(json_object_get(v, key) == child);
            count += walk(child);
        }
    } else if (json_is_array(v)) {
        for (size_t i = 0; i < json_array_size(v); i++) count += walk(json_array_get(v, i));
    } else if (json_is_string(v)) {
        CHECK(json_string_value(v) != NULL);
        CHECK(strlen(json_string_value(v)) <= json_string_length(v));
    }
    return count;
}

static void fuzz_config(const char *text, size_t len) {
    json_t *root = NULL;
    qd_status s = qd_json_parse("config.json", text, len, &root);
    if (s) {
        check_failed(s);
        return;
    }
    CHECK(root != NULL);
    walk(root);

    /* The class lookups of qd_component_class, in its order; non-objects simply have no keys. */
    static const char *const keys[] = {"_class_name", "architectures", "tokenizer_class",
                                       "image_processor_type"};
    char *class_name = NULL;
    for (size_t i = 0; i < sizeof keys / sizeof *keys && !class_name; i++) {
        json_t *v = json_object_get(root, keys[i]);
        if (json_is_array(v)) v = json_array_get(v, 0);
        if (json_is_string(v)) {
            class_name = strdup(json_string_value(v));
            CHECK(class_name != NULL);
        }
    }
    const char *direct = qd_json_string(root, "_class_name");
    if (direct) CHECK(class_name != NULL && strcmp(direct, class_name) == 0);
    free(class_name);

    /* The quantization declaration it may carry, or the document itself read as one (the form shard
     * metadata uses); what the reader accepts must be a usable configuration. */
    if (json_is_object(root)) {
        json_t *decl = qd_quant_config_in(root);
        json_t *norm = qd_quant_normalize_metadata_form(decl ? decl : root);
        CHECK(norm != NULL);
        qd_quant_config cfg;
        qd_clear_error();
        qd_status qs = qd_quant_from_declaration("config.json", "fuzz", norm, &cfg);
        if (qs) {
            check_failed(qs);
        } else {
            CHECK(cfg.method > QD_QM_NONE && cfg.method < QD_QM_COUNT);
            for (size_t i = 0; i < cfg.n_ignore; i++) CHECK(cfg.ignore[i] != NULL);
            CHECK((cfg.block_n == 0) == (cfg.block_k == 0));
            CHECK(cfg.block_n >= 0 && cfg.block_k >= 0);
            if (cfg.method == QD_QM_MODELOPT_FP4) CHECK(cfg.group_size > 0);
            CHECK(cfg.declaration != NULL);
            qd_quant_config_free(&cfg);
        }
        json_decref(norm);
    }

    /* What qdit writes back (inspect reports, converted checkpoints' configs) must read back the
     * same through the duplicate-rejecting parser. */
    char *dumped = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
    CHECK(dumped != NULL);
    json_t *again = NULL;
    CHECK(qd_json_parse("config.json (re-read)", dumped, strlen(dumped), &again) == QD_OK);
    CHECK(json_equal(root, again));
    json_decref(again);
    free(dumped);
    json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    qd_clear_error();
    switch (data[0] % 3) {
    case 0: fuzz_model_index(text, len); break;
    case 1: fuzz_index(text, len); break;
    default: fuzz_config(text, len); break;
    }
    return 0;
}
