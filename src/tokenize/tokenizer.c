/* The tokenizer pipeline: added tokens are split out of the raw text first, each remaining piece is
 * normalized, pre-tokenized and run through the model, and the post-processor's special tokens go
 * around the result. Also: opening a component folder, decoding, and the per-pipeline prompt rules
 * (spec/models.md §2.4 CLIP and T5, §3.4 Qwen3's chat template). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/status.h"
#include "io/fs.h"
#include "io/json.h"
#include "tokenize/tokenizer_internal.h"

static qd_status oom(void) { return qd_fail(QD_ENOMEM, "tokenizer: out of memory"); }

void qd_tokenizer_close(qd_tokenizer *t) {
    if (!t) return;
    tk_model_free(&t->model);
    for (size_t i = 0; i < t->n_norms; i++) tk_normalizer_free(&t->norms[i]);
    free(t->norms);
    for (size_t i = 0; i < t->n_pres; i++) tk_pretok_free(&t->pres[i]);
    free(t->pres);
    for (size_t i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    tk_charsmap_free(&t->spm.map);
    free(t->source);
    free(t);
}

/* ---- opening ---- */

static qd_status finish_open(qd_tokenizer *t, qd_status st, qd_tokenizer **out) {
    if (!st) st = tk_model_finish(t);
    if (st) {
        qd_tokenizer_close(t);
        return st;
    }
    *out = t;
    return QD_OK;
}

/* A fresh tokenizer filled by one loader from a buffer (a file's contents, or fuzz input). */
static qd_status open_buffer(const char *label, const void *buf, size_t len, bool spiece, qd_tokenizer **out) {
    qd_tokenizer *t = tk_new(label);
    if (!t) return oom();
    return finish_open(t, spiece ? tk_load_spiece(t, buf, len) : tk_load_json(t, buf, len), out);
}

static qd_status open_file(const char *path, size_t max, bool spiece, qd_tokenizer **out) {
    char *buf;
    size_t len;
    qd_status st = qd_read_small_file(path, max, &buf, &len);
    if (st) return st;
    st = open_buffer(path, buf, len, spiece, out);
    free(buf);
    return st;
}

qd_status qd_tokenizer_open_json_buffer(const char *label, const char *buf, size_t len, qd_tokenizer **out) {
    return open_buffer(label, buf, len, false, out);
}

qd_status qd_tokenizer_open_json(const char *path, qd_tokenizer **out) {
    return open_file(path, QD_JSON_MAX_FILE, false, out);
}

qd_status qd_tokenizer_open_spiece_buffer(const char *label, const uint8_t *buf, size_t len, qd_tokenizer **out) {
    return open_buffer(label, buf, len, true, out);
}

qd_status qd_tokenizer_open_spiece(const char *path, qd_tokenizer **out) {
    return open_file(path, 1u << 30, true, out);
}

qd_status qd_tokenizer_open_vocab_merges(const char *vocab_path, const char *merges_path, qd_tokenizer **out) {
    qd_tokenizer *t = tk_new(vocab_path);
    if (!t) return oom();
    return finish_open(t, tk_load_vocab_merges(t, vocab_path, merges_path), out);
}

/* The pad token named by tokenizer_config.json or special_tokens_map.json (a string or an object
 * with "content"), when the folder has one. */
static void pad_from_config(qd_tokenizer *t, const char *dir) {
    static const char *files[] = {"special_tokens_map.json", "tokenizer_config.json"};
    for (size_t i = 0; i < 2 && t->pad_id < 0; i++) {
        char *p = qd_path_join(dir, files[i]);
        json_t *j = NULL;
        if (p && qd_is_file(p) && qd_json_load_object(p, &j) == QD_OK) {
            json_t *pad = json_object_get(j, "pad_token");
            const char *s = json_is_string(pad) ? json_string_value(pad) : qd_json_string(pad, "content");
            if (s) t->pad_id = qd_tokenizer_token_id(t, s);
        }
        json_decref(j);
        free(p);
    }
    qd_clear_error();
}

qd_status qd_tokenizer_open(const char *dir, qd_tokenizer **out) {
    if (!qd_is_dir(dir)) return qd_fail(QD_ENOTFOUND, "%s: tokenizer folder not found", dir);
    char *json = qd_path_join(dir, "tokenizer.json"), *vocab = qd_path_join(dir, "vocab.json"),
         *merges = qd_path_join(dir, "merges.txt"), *sp = qd_path_join(dir, "spiece.model"),
         *tm = qd_path_join(dir, "tokenizer.model");
    qd_status st;
    if (!json || !vocab || !merges || !sp || !tm) st = oom();
    else if (qd_is_file(json)) st = qd_tokenizer_open_json(json, out);
    else if (qd_is_file(vocab) && qd_is_file(merges)) st = qd_tokenizer_open_vocab_merges(vocab, merges, out);
    else if (qd_is_file(sp)) st = qd_tokenizer_open_spiece(sp, out);
    else if (qd_is_file(tm)) st = qd_tokenizer_open_spiece(tm, out);
    else if (qd_is_file(vocab)) st = qd_fail(QD_ENOTFOUND, "%s: has vocab.json but no merges.txt beside it", dir);
    else
        st = qd_fail(QD_ENOTFOUND, "%s: no tokenizer found (looked for tokenizer.json, vocab.json + merges.txt, spiece.model, tokenizer.model)", dir);
    if (!st) pad_from_config(*out, dir);
    free(json), free(vocab), free(merges), free(sp), free(tm);
    return st;
}

/* ---- lookups ---- */

int32_t qd_tokenizer_token_id(const qd_tokenizer *t, const char *token) {
    for (size_t i = 0; i < t->n_added; i++)
        if (strcmp(t->added[i].content, token) == 0) return t->added[i].id;
    return tk_model_id(&t->model, token, strlen(token));
}

const char *qd_tokenizer_token(const qd_tokenizer *t, int32_t id) {
    if (id < 0 || (size_t)id >= t->model.n_tokens) return NULL;
    return t->model.tokens[id];
}

size_t qd_tokenizer_vocab_size(const qd_tokenizer *t) { return t->model.n_tokens; }
int32_t qd_tokenizer_pad_id(const qd_tokenizer *t) { return t->pad_id; }

/* ---- encoding ---- */

static bool is_ws_at(const char *s, size_t n, size_t *len) {
    size_t l = tk_utf8_len(s, n);
    if (!l) return false;
    utf8proc_int32_t cp = (utf8proc_int32_t)tk_utf8_get(s, l);
    const utf8proc_property_t *p = utf8proc_get_property(cp);
    *len = l;
    return p->category == UTF8PROC_CATEGORY_ZS || (cp >= 0x09 && cp <= 0x0D) || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
}

static bool is_word_byte(unsigned char c) { return c >= 0x80 || c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'); }

/* The leftmost, then longest, added token of the given kind (matched on raw or on normalized text) at
 * or after `from`: [*a, *b) is the matched span with the lstrip / rstrip whitespace it takes.
 * Returns its index, or -1. */
static long find_added(const qd_tokenizer *t, const char *s, size_t n, size_t from, bool normalized, size_t *a, size_t *b) {
    size_t floor = from;
    for (size_t i = from; i < n; i++) {
        long best = -1;
        for (size_t k = 0; k < t->n_added; k++) {
            const tk_added *x = &t->added[k];
            if (x->normalized != normalized || x->len == 0 || x->len > n - i || s[i] != x->content[0] || memcmp(s + i, x->content, x->len) != 0) continue;
            if (x->single_word && ((i > 0 && is_word_byte((unsigned char)s[i - 1])) ||
                                   (i + x->len < n && is_word_byte((unsigned char)s[i + x->len]))))
                continue;
            if (best < 0 || x->len > t->added[best].len) best = (long)k;
        }
        if (best >= 0) {
            const tk_added *x = &t->added[best];
            size_t sa = i, sb = i + x->len, l;
            if (x->lstrip) /* take the whitespace before it (not past the previous match) */
                while (sa > floor) {
                    size_t p = sa - 1;
                    while (p > floor && ((unsigned char)s[p] & 0xC0) == 0x80) p--;
                    if (!is_ws_at(s + p, sa - p, &l) || l != sa - p) break;
                    sa = p;
                }
            if (x->rstrip)
                while (sb < n && is_ws_at(s + sb, n - sb, &l)) sb += l;
            *a = sa, *b = sb;
            return best;
        }
    }
    return -1;
}

static qd_status encode_words(const qd_tokenizer *t, const char *s, size_t n, bool first, tk_ids *ids) {
    tk_list words = {0};
    qd_status st = tk_pretokenize(t, s, n, first, &words);
    for (size_t i = 0; i < words.n && !st; i++)
        st = t->model.kind == TK_MODEL_UNIGRAM ? tk_unigram_word(&t->model, words.v[i].s, words.v[i].n, ids)
                                               : tk_bpe_word(&t->model, words.v[i].s, words.v[i].n, ids);
    tk_list_free(&words);
    return st;
}

static qd_status split_added(const qd_tokenizer *t, const char *s, size_t n, bool normalized, bool first, tk_ids *ids);

/* Text between raw-matched added tokens: normalized, then split again on the added tokens HF matches
 * on normalized text ("normalized": true), then pre-tokenized and run through the model. */
static qd_status encode_gap(const qd_tokenizer *t, const char *s, size_t n, bool first, tk_ids *ids) {
    tk_buf norm = {0};
    qd_status st;
    if (t->spm.on) {
        st = tk_spm_normalize(t, s, n, &norm);
        if (!st) st = t->model.kind == TK_MODEL_UNIGRAM ? tk_unigram_word(&t->model, norm.s, norm.n, ids)
                                                       : tk_bpe_word(&t->model, norm.s, norm.n, ids);
    } else if (!tk_buf_add(&norm, s, n)) {
        st = oom();
    } else {
        st = tk_normalize(t, &norm);
        if (!st) st = split_added(t, norm.s, norm.n, true, first, ids);
    }
    tk_buf_free(&norm);
    return st;
}

static qd_status split_added(const qd_tokenizer *t, const char *s, size_t n, bool normalized, bool first, tk_ids *ids) {
    qd_status st = QD_OK;
    for (size_t pos = 0; !st && pos <= n;) {
        size_t a = n, b = n;
        long k = find_added(t, s, n, pos, normalized, &a, &b);
        if (k < 0) a = b = n;
        if (a > pos) st = normalized ? encode_words(t, s + pos, a - pos, first && pos == 0, ids)
                                     : encode_gap(t, s + pos, a - pos, first && pos == 0, ids);
        if (k < 0 || st) break;
        if (!tk_ids_add(ids, t->added[k].id)) st = oom();
        pos = b;
    }
    return st;
}

qd_status qd_tokenizer_encode(const qd_tokenizer *t, const char *text, size_t len, bool add_special, int32_t **ids_out,
                              size_t *n_out) {
    if (len > TK_MAX_TEXT) return qd_fail(QD_EINVAL, "tokenizer: text of %zu bytes is longer than the %u allowed", len, TK_MAX_TEXT);
    for (size_t i = 0; i < len;) {
        size_t l = tk_utf8_len(text + i, len - i);
        if (!l) return qd_fail(QD_EINVAL, "tokenizer: the text is not valid UTF-8 at byte %zu", i);
        i += l;
    }
    tk_ids ids = {0};
    qd_status st = QD_OK;
    if (add_special)
        for (size_t i = 0; i < t->n_prefix && !st; i++)
            if (!tk_ids_add(&ids, t->prefix_ids[i])) st = oom();
    if (!st) st = split_added(t, text, len, false, true, &ids);
    if (add_special)
        for (size_t i = 0; i < t->n_suffix && !st; i++)
            if (!tk_ids_add(&ids, t->suffix_ids[i])) st = oom();
    if (!st && !ids.v && !(ids.v = malloc(sizeof *ids.v))) st = oom();
    if (st) {
        free(ids.v);
        return st;
    }
    *ids_out = ids.v;
    *n_out = ids.n;
    return QD_OK;
}

/* ---- decoding ---- */

static bool is_special_id(const qd_tokenizer *t, int32_t id) {
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id == id && t->added[i].special) return true;
    if (t->model.types && (size_t)id < t->model.n_tokens)
        return t->model.types[id] == TK_PIECE_CONTROL;
    return false;
}

qd_status qd_tokenizer_decode(const qd_tokenizer *t, const int32_t *ids, size_t n, bool skip_special, char **text) {
    tk_buf raw = {0}, out = {0};
    if (!tk_buf_add(&raw, "", 0) || !tk_buf_add(&out, "", 0)) goto fail;
    for (size_t i = 0; i < n; i++) {
        const char *tok = qd_tokenizer_token(t, ids[i]);
        if (!tok) {
            tk_buf_free(&raw), tk_buf_free(&out);
            return qd_fail(QD_EINVAL, "%s: cannot decode id %d: not in the vocabulary of %zu ids", t->source, ids[i], t->model.n_tokens);
        }
        if (skip_special && is_special_id(t, ids[i])) continue;
        size_t l = strlen(tok);
        int byte = -1;
        if (l == 6 && strncmp(tok, "<0x", 3) == 0 && tok[5] == '>' && t->model.byte_ids[0] >= 0) byte = (int)strtol(tok + 3, NULL, 16);
        if (byte >= 0) {
            if (!tk_buf_addc(&raw, (char)byte)) goto fail;
            continue;
        }
        size_t sl = t->model.eow_suffix ? strlen(t->model.eow_suffix) : 0;
        if (sl && l >= sl && strcmp(tok + l - sl, t->model.eow_suffix) == 0) {
            if (!tk_buf_add(&raw, tok, l - sl) || !tk_buf_add(&raw, "\x20", 1)) goto fail;
        } else if (!tk_buf_add(&raw, tok, l)) {
            goto fail;
        }
    }
    for (size_t i = 0; i < raw.n;) {
        size_t l = tk_utf8_len(raw.s + i, raw.n - i);
        if (!l) l = 1;
        uint32_t cp = l > 1 || (unsigned char)raw.s[i] < 0x80 ? tk_utf8_get(raw.s + i, l) : 0xFFFD;
        bool ok;
        if (t->decoder == TK_DECODE_BYTELEVEL && l > 1 && tk_cp_to_byte(cp) >= 0) ok = tk_buf_addc(&out, (char)tk_cp_to_byte(cp));
        else if (t->decoder == TK_DECODE_BYTELEVEL && l == 1 && tk_cp_to_byte(cp) >= 0) ok = tk_buf_addc(&out, raw.s[i]);
        else if (t->decoder == TK_DECODE_METASPACE && cp == 0x2581) ok = (out.n == 0) ? true : tk_buf_addc(&out, ' ');
        else ok = tk_buf_add(&out, raw.s + i, l);
        if (!ok) goto fail;
        i += l;
    }
    if (t->model.eow_suffix && out.n && out.s[out.n - 1] == ' ') out.s[--out.n] = '\0';
    tk_buf_free(&raw);
    *text = out.s;
    return QD_OK;
fail:
    tk_buf_free(&raw), tk_buf_free(&out);
    return oom();
}

/* ---- prompts ---- */

qd_prompt_opts qd_prompt_defaults(qd_prompt_style style) {
    qd_prompt_opts o = {style, 0, style != QD_PROMPT_PLAIN, true};
    return o;
}

static size_t default_max(qd_prompt_style s) {
    return s == QD_PROMPT_CLIP ? 77 : (s == QD_PROMPT_T5 || s == QD_PROMPT_QWEN3_CHAT) ? 512 : 0;
}

/* Pad token when none was configured: the convention of each pipeline's tokenizer. */
static int32_t style_pad(const qd_tokenizer *t, qd_prompt_style s) {
    if (t->pad_id >= 0) return t->pad_id;
    if (s == QD_PROMPT_T5) return qd_tokenizer_token_id(t, "<pad>");
    return qd_tokenizer_token_id(t, "<|endoftext|>");
}

void qd_token_ids_free(qd_token_ids *x) {
    free(x->ids);
    free(x->mask);
    memset(x, 0, sizeof *x);
}

qd_status qd_tokenize_prompt(const qd_tokenizer *t, const qd_prompt_opts *o, const char *prompt, qd_token_ids *out) {
    memset(out, 0, sizeof *out);
    size_t max = o->max_length ? o->max_length : default_max(o->style);
    tk_buf text = {0};
    bool wrap = o->style != QD_PROMPT_QWEN3_CHAT; /* the post-processor's tokens, kept inside max */
    qd_status st = QD_OK;
    if (o->style == QD_PROMPT_QWEN3_CHAT) {
        /* Qwen3's template for [{"role":"user","content":p}], add_generation_prompt=True; with
         * enable_thinking=False it also writes an empty think block. */
        static const char *head = "<|im_start|>user\n", *tail = "<|im_end|>\n<|im_start|>assistant\n",
                          *nothink = "<think>\n\n</think>\n\n";
        if (!tk_buf_add(&text, head, strlen(head)) || !tk_buf_add(&text, prompt, strlen(prompt)) ||
            !tk_buf_add(&text, tail, strlen(tail)) || (!o->enable_thinking && !tk_buf_add(&text, nothink, strlen(nothink))))
            return oom();
    } else if (!tk_buf_add(&text, prompt, strlen(prompt))) {
        return oom();
    }
    int32_t *ids = NULL;
    size_t n = 0;
    st = qd_tokenizer_encode(t, text.s, text.n, false, &ids, &n);
    tk_buf_free(&text);
    if (st) return st;
    size_t extra = wrap ? t->n_prefix + t->n_suffix : 0;
    if (max && max < extra + (o->style == QD_PROMPT_PLAIN ? 0 : 1)) {
        free(ids);
        return qd_fail(QD_EINVAL, "tokenizer: max_length %zu leaves no room beside the %zu special tokens", max, extra);
    }
    size_t keep = (max && n > max - extra) ? max - extra : n;
    size_t total = keep + extra, padded = (o->pad && max > total) ? max : total;
    int32_t pad = style_pad(t, o->style);
    if (padded > total && pad < 0) {
        free(ids);
        return qd_fail(QD_EINVAL, "%s: padding asked for, but the tokenizer names no pad token", t->source);
    }
    out->ids = malloc((padded ? padded : 1) * sizeof *out->ids);
    out->mask = malloc(padded ? padded : 1);
    if (!out->ids || !out->mask) {
        free(ids);
        qd_token_ids_free(out);
        return oom();
    }
    size_t k = 0;
    if (wrap)
        for (size_t i = 0; i < t->n_prefix; i++) out->ids[k++] = t->prefix_ids[i];
    for (size_t i = 0; i < keep; i++) out->ids[k++] = ids[i];
    if (wrap)
        for (size_t i = 0; i < t->n_suffix; i++) out->ids[k++] = t->suffix_ids[i];
    memset(out->mask, 1, k);
    for (; k < padded; k++) out->ids[k] = pad, out->mask[k] = 0;
    out->n = padded;
    free(ids);
    return QD_OK;
}
