/* Hugging Face tokenizer.json: model (BPE or Unigram), added_tokens, normalizer, pre_tokenizer,
 * post_processor, decoder and padding. Anything qdit does not implement is refused by name (the
 * field and its "type"), so a tokenizer is never silently run with a step missing. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/json.h"
#include "tokenize/tokenizer_internal.h"

#define FAIL(t, field, ...) tk_json_fail(t, field, __VA_ARGS__)

static qd_status tk_json_fail(const qd_tokenizer *t, const char *field, const char *fmt, ...) QD_PRINTF(3, 4);
static qd_status tk_json_fail(const qd_tokenizer *t, const char *field, const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qd_fail(QD_EFORMAT, "%s: field %s: %s", t->source, field, msg);
}

static qd_status oom(void) { return qd_fail(QD_ENOMEM, "tokenizer: out of memory while loading"); }

static bool get_bool(const json_t *o, const char *key, bool dflt) {
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static char *dup_n(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* ---- base64 (the Precompiled charsmap) ---- */
static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

static bool b64_decode(const char *s, size_t n, uint8_t **out, size_t *len) {
    uint8_t *o = malloc(n / 4 * 3 + 3);
    if (!o) return false;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '=') break;
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) {
            free(o);
            return false;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (uint8_t)(acc >> bits);
        }
    }
    *out = o;
    *len = k;
    return true;
}

/* A "pattern" object: {"String": s} or {"Regex": r}. */
static qd_status get_pattern(qd_tokenizer *t, const json_t *o, const char *field, pcre2_code **re, char **lit, size_t *lit_len) {
    json_t *p = json_object_get(o, "pattern");
    json_t *str = json_object_get(p, "String"), *rx = json_object_get(p, "Regex");
    if (json_is_string(rx)) {
        char err[200];
        *re = tk_regex_compile(json_string_value(rx), json_string_length(rx), err, sizeof err);
        if (!*re) return FAIL(t, field, "regex \"%.80s\" does not compile: %s", json_string_value(rx), err);
        return QD_OK;
    }
    if (json_is_string(str)) {
        *lit = dup_n(json_string_value(str), json_string_length(str));
        *lit_len = json_string_length(str);
        return *lit ? QD_OK : oom();
    }
    return FAIL(t, field, "expected \"pattern\": {\"String\": …} or {\"Regex\": …}");
}

/* ---- normalizer ---- */
static qd_status add_normalizer(qd_tokenizer *t, const json_t *o, const char *field, int depth) {
    if (json_is_null(o) || !o) return QD_OK;
    const char *type = qd_json_string(o, "type");
    if (!json_is_object(o) || !type) return FAIL(t, field, "expected an object with a \"type\"");
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(o, "normalizers");
        if (!json_is_array(list) || depth > 4) return FAIL(t, field, "Sequence needs a \"normalizers\" array (nested at most 4 deep)");
        for (size_t i = 0; i < json_array_size(list); i++) {
            qd_status st = add_normalizer(t, json_array_get(list, i), field, depth + 1);
            if (st) return st;
        }
        return QD_OK;
    }
    tk_normalizer x = {0};
    qd_status st = QD_OK;
    if (strcmp(type, "NFC") == 0) x.kind = TK_NORM_NFC;
    else if (strcmp(type, "NFD") == 0) x.kind = TK_NORM_NFD;
    else if (strcmp(type, "NFKC") == 0) x.kind = TK_NORM_NFKC;
    else if (strcmp(type, "NFKD") == 0) x.kind = TK_NORM_NFKD;
    else if (strcmp(type, "Lowercase") == 0) x.kind = TK_NORM_LOWERCASE;
    else if (strcmp(type, "Strip") == 0) {
        x.kind = TK_NORM_STRIP;
        x.left = get_bool(o, "strip_left", true);
        x.right = get_bool(o, "strip_right", true);
    } else if (strcmp(type, "Prepend") == 0 || strcmp(type, "Replace") == 0) {
        const char *c = qd_json_string(o, strcmp(type, "Prepend") == 0 ? "prepend" : "content");
        if (!c) return FAIL(t, field, "%s needs a string \"%s\"", type, strcmp(type, "Prepend") == 0 ? "prepend" : "content");
        x.kind = strcmp(type, "Prepend") == 0 ? TK_NORM_PREPEND : TK_NORM_REPLACE;
        x.content = strdup(c);
        x.content_len = strlen(c);
        if (!x.content) return oom();
        if (x.kind == TK_NORM_REPLACE) st = get_pattern(t, o, field, &x.re, &x.pattern, &x.pattern_len);
    } else if (strcmp(type, "Precompiled") == 0) {
        x.kind = TK_NORM_PRECOMPILED;
        json_t *b = json_object_get(o, "precompiled_charsmap");
        if (json_is_null(b) || (json_is_string(b) && json_string_length(b) == 0)) return QD_OK; /* identity */
        if (!json_is_string(b)) return FAIL(t, field, "Precompiled needs a base64 string \"precompiled_charsmap\"");
        uint8_t *blob;
        size_t len;
        if (!b64_decode(json_string_value(b), json_string_length(b), &blob, &len))
            return FAIL(t, field, "Precompiled \"precompiled_charsmap\" is not valid base64");
        st = tk_charsmap_init(&x.map, blob, len, t->source);
        free(blob);
    } else {
        return qd_fail(QD_EUNSUPPORTED, "%s: field %s: normalizer type \"%s\" is not supported (supported: NFC, NFD, NFKC, NFKD, Lowercase, Replace, Strip, Prepend, Precompiled, Sequence)",
                       t->source, field, type);
    }
    if (st) {
        tk_normalizer_free(&x);
        return st;
    }
    tk_normalizer *v = realloc(t->norms, (t->n_norms + 1) * sizeof *v);
    if (!v) {
        tk_normalizer_free(&x);
        return oom();
    }
    t->norms = v;
    t->norms[t->n_norms++] = x;
    return QD_OK;
}

/* ---- pre-tokenizer ---- */
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static qd_status add_pretok(qd_tokenizer *t, const json_t *o, const char *field, int depth) {
    if (json_is_null(o) || !o) return QD_OK;
    const char *type = qd_json_string(o, "type");
    if (!json_is_object(o) || !type) return FAIL(t, field, "expected an object with a \"type\"");
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(o, "pretokenizers");
        if (!json_is_array(list) || depth > 4) return FAIL(t, field, "Sequence needs a \"pretokenizers\" array (nested at most 4 deep)");
        for (size_t i = 0; i < json_array_size(list); i++) {
            qd_status st = add_pretok(t, json_array_get(list, i), field, depth + 1);
            if (st) return st;
        }
        return QD_OK;
    }
    tk_pretok x = {0};
    qd_status st = QD_OK;
    char err[200];
    if (strcmp(type, "Split") == 0) {
        x.kind = TK_PRE_SPLIT;
        st = get_pattern(t, o, field, &x.re, &x.literal, &x.literal_len);
        const char *b = qd_json_string(o, "behavior");
        static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
        int found = -1;
        for (int i = 0; b && i < 5; i++)
            if (strcmp(b, names[i]) == 0) found = i;
        if (!st && found < 0) st = FAIL(t, field, "Split \"behavior\" must be one of Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous");
        x.behavior = (tk_split_behavior)(found < 0 ? 0 : found);
        x.invert = get_bool(o, "invert", false);
    } else if (strcmp(type, "ByteLevel") == 0) {
        x.kind = TK_PRE_BYTELEVEL;
        x.add_prefix_space = get_bool(o, "add_prefix_space", true);
        if (get_bool(o, "use_regex", true) && !(x.re = tk_regex_compile(GPT2_PATTERN, sizeof GPT2_PATTERN - 1, err, sizeof err)))
            st = FAIL(t, field, "GPT-2 regex does not compile: %s", err);
        t->decoder = TK_DECODE_BYTELEVEL;
    } else if (strcmp(type, "Metaspace") == 0) {
        x.kind = TK_PRE_METASPACE;
        const char *r = qd_json_string(o, "replacement");
        if (!r) r = "\xE2\x96\x81";
        if (strlen(r) == 0 || strlen(r) >= sizeof x.replacement) st = FAIL(t, field, "Metaspace \"replacement\" must be one character");
        else strcpy(x.replacement, r);
        const char *ps = qd_json_string(o, "prepend_scheme");
        if (ps && strcmp(ps, "always") == 0) x.prepend = TK_PREPEND_ALWAYS;
        else if (ps && strcmp(ps, "first") == 0) x.prepend = TK_PREPEND_FIRST;
        else if (ps && strcmp(ps, "never") == 0) x.prepend = TK_PREPEND_NEVER;
        else if (ps) st = FAIL(t, field, "Metaspace \"prepend_scheme\" must be always, first or never, not \"%s\"", ps);
        else x.prepend = get_bool(o, "add_prefix_space", true) ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
        x.split = get_bool(o, "split", true);
    } else if (strcmp(type, "WhitespaceSplit") == 0) {
        x.kind = TK_PRE_WHITESPACE_SPLIT;
    } else if (strcmp(type, "Whitespace") == 0) {
        x.kind = TK_PRE_WHITESPACE;
        x.invert = true; /* the words are the matches */
        if (!(x.re = tk_regex_compile("\\w+|[^\\w\\s]+", 13, err, sizeof err))) st = FAIL(t, field, "regex: %s", err);
    } else if (strcmp(type, "Digits") == 0) {
        x.kind = TK_PRE_DIGITS;
        x.individual_digits = get_bool(o, "individual_digits", false);
    } else {
        return qd_fail(QD_EUNSUPPORTED, "%s: field %s: pre-tokenizer type \"%s\" is not supported (supported: Split, ByteLevel, Metaspace, WhitespaceSplit, Whitespace, Digits, Sequence)",
                       t->source, field, type);
    }
    if (st) {
        tk_pretok_free(&x);
        return st;
    }
    tk_pretok *v = realloc(t->pres, (t->n_pres + 1) * sizeof *v);
    if (!v) {
        tk_pretok_free(&x);
        return oom();
    }
    t->pres = v;
    t->pres[t->n_pres++] = x;
    return QD_OK;
}

/* ---- model ---- */
static qd_status load_bpe(qd_tokenizer *t, const json_t *m) {
    tk_model *md = &t->model;
    md->kind = TK_MODEL_BPE;
    json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
    if (!json_is_object(vocab)) return FAIL(t, "model.vocab", "expected an object of token → id");
    if (!json_is_array(merges)) return FAIL(t, "model.merges", "expected an array of merges");
    json_t *d = json_object_get(m, "dropout");
    if (json_is_number(d) && json_number_value(d) > 0) return qd_fail(QD_EUNSUPPORTED, "%s: field model.dropout: BPE dropout is for training, not supported", t->source);
    const char *cont = qd_json_string(m, "continuing_subword_prefix");
    if (cont && *cont) return qd_fail(QD_EUNSUPPORTED, "%s: field model.continuing_subword_prefix: \"%s\" is not supported (only empty)", t->source, cont);
    const char *eow = qd_json_string(m, "end_of_word_suffix");
    if (eow && *eow) {
        if (strlen(eow) > 16) return FAIL(t, "model.end_of_word_suffix", "longer than 16 bytes");
        if (!(md->eow_suffix = strdup(eow))) return oom();
    }
    md->fuse_unk = get_bool(m, "fuse_unk", false);
    md->byte_fallback = get_bool(m, "byte_fallback", false);
    md->ignore_merges = get_bool(m, "ignore_merges", false);
    qd_status st = tk_model_reserve(t, json_object_size(vocab));
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (st) break;
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= TK_MAX_VOCAB)
            return FAIL(t, "model.vocab", "token \"%.40s\" has no id in 0..%u", key, TK_MAX_VOCAB - 1);
        st = tk_model_set_token(t, (int32_t)json_integer_value(val), key, strlen(key), "model.vocab");
    }
    for (size_t i = 0; i < json_array_size(merges) && !st; i++) {
        json_t *e = json_array_get(merges, i);
        const char *a, *b;
        size_t na, nb;
        if (json_is_string(e)) { /* "a b" */
            const char *s = json_string_value(e), *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) return FAIL(t, "model.merges", "entry %zu \"%.60s\" is not two tokens separated by one space", i, s);
            a = s, na = (size_t)(sp - s), b = sp + 1, nb = strlen(sp + 1);
        } else if (json_is_array(e) && json_array_size(e) == 2 && json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
            a = json_string_value(json_array_get(e, 0)), na = json_string_length(json_array_get(e, 0));
            b = json_string_value(json_array_get(e, 1)), nb = json_string_length(json_array_get(e, 1));
        } else {
            return FAIL(t, "model.merges", "entry %zu is neither \"a b\" nor [\"a\", \"b\"]", i);
        }
        st = tk_bpe_add_merge(t, i, a, na, b, nb, "model.merges");
    }
    if (st) return st;
    const char *unk = qd_json_string(m, "unk_token");
    if (unk) {
        md->unk_id = tk_model_id(md, unk, strlen(unk));
        if (md->unk_id < 0) return FAIL(t, "model.unk_token", "\"%.40s\" is not in the vocabulary", unk);
    }
    return QD_OK;
}

static qd_status load_unigram(qd_tokenizer *t, const json_t *m) {
    tk_model *md = &t->model;
    md->kind = TK_MODEL_UNIGRAM;
    json_t *vocab = json_object_get(m, "vocab");
    if (!json_is_array(vocab)) return FAIL(t, "model.vocab", "expected an array of [piece, score]");
    qd_status st = tk_model_reserve(t, json_array_size(vocab));
    for (size_t i = 0; i < json_array_size(vocab) && !st; i++) {
        json_t *e = json_array_get(vocab, i);
        json_t *p = json_array_get(e, 0), *s = json_array_get(e, 1);
        if (!json_is_array(e) || json_array_size(e) != 2 || !json_is_string(p) || !json_is_number(s))
            return FAIL(t, "model.vocab", "entry %zu is not [piece, score]", i);
        st = tk_model_set_token(t, (int32_t)i, json_string_value(p), json_string_length(p), "model.vocab");
        if (!st) md->scores[i] = json_number_value(s), md->types[i] = TK_PIECE_NORMAL;
    }
    if (st) return st;
    json_t *unk = json_object_get(m, "unk_id");
    if (json_is_integer(unk)) {
        if (json_integer_value(unk) < 0 || (size_t)json_integer_value(unk) >= md->n_tokens)
            return FAIL(t, "model.unk_id", "%lld is outside the vocabulary of %zu pieces", (long long)json_integer_value(unk), md->n_tokens);
        md->unk_id = (int32_t)json_integer_value(unk);
    } else if (unk && !json_is_null(unk)) {
        return FAIL(t, "model.unk_id", "expected an integer or null");
    }
    md->byte_fallback = get_bool(m, "byte_fallback", false);
    return QD_OK;
}

/* ---- added tokens, post-processor, decoder ---- */
static qd_status load_added(qd_tokenizer *t, const json_t *list) {
    if (!list || json_is_null(list)) return QD_OK;
    if (!json_is_array(list)) return FAIL(t, "added_tokens", "expected an array");
    t->added = calloc(json_array_size(list) + 1, sizeof *t->added);
    if (!t->added) return oom();
    for (size_t i = 0; i < json_array_size(list); i++) {
        json_t *e = json_array_get(list, i), *id = json_object_get(e, "id"), *c = json_object_get(e, "content");
        if (!json_is_integer(id) || !json_is_string(c) || json_integer_value(id) < 0 || json_integer_value(id) >= TK_MAX_VOCAB)
            return FAIL(t, "added_tokens", "entry %zu needs an integer \"id\" in 0..%u and a string \"content\"", i, TK_MAX_VOCAB - 1);
        int32_t tid = (int32_t)json_integer_value(id);
        const char *s = json_string_value(c);
        size_t n = json_string_length(c);
        /* An added token may repeat its vocabulary entry; a different string on the same id is an error. */
        if ((size_t)tid < t->model.n_tokens && t->model.tokens[tid]) {
            if (strlen(t->model.tokens[tid]) != n || memcmp(t->model.tokens[tid], s, n) != 0)
                return FAIL(t, "added_tokens", "entry %zu gives id %d to \"%.40s\", but the vocabulary has \"%.40s\" there", i, tid, s, t->model.tokens[tid]);
        } else {
            qd_status st = tk_model_set_token(t, tid, s, n, "added_tokens");
            if (st) return st;
        }
        tk_added *a = &t->added[t->n_added++];
        if (!(a->content = dup_n(s, n))) return oom();
        a->len = n;
        a->id = tid;
        a->special = get_bool(e, "special", false);
        a->lstrip = get_bool(e, "lstrip", false);
        a->rstrip = get_bool(e, "rstrip", false);
        a->single_word = get_bool(e, "single_word", false);
        a->normalized = get_bool(e, "normalized", !a->special);
    }
    return QD_OK;
}

/* [token, id] pairs of RobertaProcessing / BertProcessing. */
static qd_status pair_id(qd_tokenizer *t, const json_t *pp, const char *key, int32_t *id) {
    json_t *p = json_object_get(pp, key);
    json_t *v = json_array_get(p, 1);
    if (!json_is_array(p) || !json_is_integer(v)) return FAIL(t, "post_processor", "\"%s\" must be [token, id]", key);
    *id = (int32_t)json_integer_value(v);
    return QD_OK;
}

static qd_status load_post(qd_tokenizer *t, const json_t *pp, int depth) {
    if (!pp || json_is_null(pp)) return QD_OK;
    const char *type = qd_json_string(pp, "type");
    if (!type) return FAIL(t, "post_processor", "expected an object with a \"type\"");
    qd_status st = QD_OK;
    if (strcmp(type, "ByteLevel") == 0) return QD_OK; /* offsets only */
    if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(pp, "processors");
        if (!json_is_array(list) || depth > 4) return FAIL(t, "post_processor", "Sequence needs a \"processors\" array");
        for (size_t i = 0; i < json_array_size(list) && !st; i++) st = load_post(t, json_array_get(list, i), depth + 1);
        return st;
    }
    if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        t->n_prefix = t->n_suffix = 1;
        st = pair_id(t, pp, "cls", &t->prefix_ids[0]);
        if (!st) st = pair_id(t, pp, "sep", &t->suffix_ids[0]);
        return st;
    }
    if (strcmp(type, "TemplateProcessing") == 0) {
        json_t *single = json_object_get(pp, "single"), *specials = json_object_get(pp, "special_tokens");
        if (!json_is_array(single)) return FAIL(t, "post_processor.single", "expected an array");
        bool after = false;
        t->n_prefix = t->n_suffix = 0;
        for (size_t i = 0; i < json_array_size(single); i++) {
            json_t *e = json_array_get(single, i), *sp = json_object_get(e, "SpecialToken");
            if (json_object_get(e, "Sequence")) {
                after = true;
                continue;
            }
            const char *name = qd_json_string(sp, "id");
            json_t *def = json_object_get(specials, name ? name : "");
            json_t *ids = json_object_get(def, "ids");
            if (!name || !json_is_array(ids))
                return FAIL(t, "post_processor.single", "entry %zu names a special token missing from \"special_tokens\"", i);
            for (size_t k = 0; k < json_array_size(ids); k++) {
                json_t *v = json_array_get(ids, k);
                size_t *cnt = after ? &t->n_suffix : &t->n_prefix;
                if (!json_is_integer(v) || *cnt >= 4) return FAIL(t, "post_processor.special_tokens", "\"%s\": at most 4 integer ids around a sequence", name);
                (after ? t->suffix_ids : t->prefix_ids)[(*cnt)++] = (int32_t)json_integer_value(v);
            }
        }
        return QD_OK;
    }
    return qd_fail(QD_EUNSUPPORTED, "%s: field post_processor: type \"%s\" is not supported (supported: TemplateProcessing, RobertaProcessing, BertProcessing, ByteLevel, Sequence)",
                   t->source, type);
}

static void load_decoder(qd_tokenizer *t, const json_t *d) {
    const char *type = qd_json_string(d, "type");
    if (!type) return;
    if (strcmp(type, "ByteLevel") == 0) t->decoder = TK_DECODE_BYTELEVEL;
    else if (strcmp(type, "Metaspace") == 0) t->decoder = TK_DECODE_METASPACE;
    else if (strcmp(type, "Sequence") == 0) {
        json_t *list = json_object_get(d, "decoders");
        for (size_t i = 0; i < json_array_size(list); i++) {
            const char *ty = qd_json_string(json_array_get(list, i), "type");
            if (ty && (strcmp(ty, "Metaspace") == 0 || strcmp(ty, "Replace") == 0)) t->decoder = TK_DECODE_METASPACE;
        }
    }
}

qd_status tk_load_json(qd_tokenizer *t, const char *buf, size_t len) {
    json_t *root;
    qd_status st = qd_json_parse(t->source, buf, len, &root);
    if (st) return st;
    if (!json_is_object(root)) {
        json_decref(root);
        return FAIL(t, "(top level)", "expected an object");
    }
    json_t *m = json_object_get(root, "model");
    const char *type = qd_json_string(m, "type");
    if (!json_is_object(m)) st = FAIL(t, "model", "missing or not an object");
    else if (!type) /* older files leave the type out: BPE has merges, Unigram a list vocabulary */
        type = json_object_get(m, "merges") ? "BPE" : json_is_array(json_object_get(m, "vocab")) ? "Unigram" : "?";
    if (!st) {
        if (strcmp(type, "BPE") == 0) st = load_bpe(t, m);
        else if (strcmp(type, "Unigram") == 0) st = load_unigram(t, m);
        else st = qd_fail(QD_EUNSUPPORTED, "%s: field model.type: \"%s\" is not supported (supported: BPE, Unigram)", t->source, type);
    }
    if (!st) st = load_added(t, json_object_get(root, "added_tokens"));
    if (!st) st = add_normalizer(t, json_object_get(root, "normalizer"), "normalizer", 0);
    if (!st) st = add_pretok(t, json_object_get(root, "pre_tokenizer"), "pre_tokenizer", 0);
    if (!st) st = load_post(t, json_object_get(root, "post_processor"), 0);
    if (!st) load_decoder(t, json_object_get(root, "decoder"));
    json_t *pad = json_object_get(root, "padding");
    json_t *pad_id = json_object_get(pad, "pad_id");
    if (!st && json_is_integer(pad_id)) {
        json_int_t v = json_integer_value(pad_id);
        if (v < 0 || (size_t)v >= t->model.n_tokens || !t->model.tokens[v])
            st = FAIL(t, "padding.pad_id", "%lld is not an id of the vocabulary", (long long)v);
        else
            t->pad_id = (int32_t)v;
    }
    for (size_t i = 0; !st && i < t->n_prefix + t->n_suffix; i++) {
        int32_t id = i < t->n_prefix ? t->prefix_ids[i] : t->suffix_ids[i - t->n_prefix];
        if (id < 0 || (size_t)id >= t->model.n_tokens || !t->model.tokens[id])
            st = FAIL(t, "post_processor", "special id %d is not in the vocabulary", id);
    }
    json_decref(root);
    return st;
}
