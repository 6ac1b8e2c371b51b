/* The older BPE file pair: vocab.json (token → id) and merges.txt ("#version" line, then "a b" per
 * line, rank = line order). Without tokenizer.json the pipeline around the model is implied by the
 * vocabulary: CLIP's (its "</w>" suffix and <|startoftext|>) gets CLIPTokenizer's lower-casing,
 * whitespace folding, split regex and BOS/EOS; any other gets GPT-2's byte-level pre-tokenizer. */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "io/json.h"
#include "tokenize/tokenizer_internal.h"

static qd_status oom(void) { return qd_fail(QD_ENOMEM, "tokenizer: out of memory while loading"); }

static const char CLIP_PATTERN[] =
    "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+";
static const char GPT2_PATTERN[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static qd_status add_special(qd_tokenizer *t, const char *tok, bool normalized) {
    int32_t id = tk_model_id(&t->model, tok, strlen(tok));
    if (id < 0) return QD_OK;
    tk_added *v = realloc(t->added, (t->n_added + 1) * sizeof *v);
    if (!v) return oom();
    t->added = v;
    tk_added *a = &t->added[t->n_added];
    memset(a, 0, sizeof *a);
    if (!(a->content = strdup(tok))) return oom();
    a->len = strlen(tok);
    a->id = id;
    a->special = true;
    a->normalized = normalized;
    t->n_added++;
    return QD_OK;
}

static qd_status setup_pipeline(qd_tokenizer *t) {
    tk_model *m = &t->model;
    char err[200];
    int32_t bos = tk_model_id(m, "<|startoftext|>", 15), eos = tk_model_id(m, "<|endoftext|>", 13);
    bool clip = bos >= 0 && eos >= 0 && tk_model_id(m, "a</w>", 5) >= 0;
    t->decoder = TK_DECODE_BYTELEVEL;
    if (clip) {
        t->norms = calloc(3, sizeof *t->norms);
        t->pres = calloc(2, sizeof *t->pres);
        if (!t->norms || !t->pres) return oom();
        t->n_norms = 3;
        t->norms[0].kind = TK_NORM_NFC;
        t->norms[1].kind = TK_NORM_REPLACE;
        t->norms[1].re = tk_regex_compile("\\s+", 3, err, sizeof err);
        t->norms[1].content = strdup(" ");
        t->norms[1].content_len = 1;
        t->norms[2].kind = TK_NORM_LOWERCASE;
        t->n_pres = 2;
        t->pres[0].kind = TK_PRE_SPLIT;
        t->pres[0].re = tk_regex_compile(CLIP_PATTERN, sizeof CLIP_PATTERN - 1, err, sizeof err);
        t->pres[0].behavior = TK_SPLIT_REMOVED;
        t->pres[0].invert = true;
        t->pres[1].kind = TK_PRE_BYTELEVEL;
        if (!t->norms[1].re || !t->norms[1].content || !t->pres[0].re) return qd_fail(QD_ENOMEM, "tokenizer: cannot compile CLIP's patterns: %s", err);
        if (!(m->eow_suffix = strdup("</w>"))) return oom();
        m->unk_id = eos;
        t->prefix_ids[0] = bos, t->suffix_ids[0] = eos;
        t->n_prefix = t->n_suffix = 1;
        t->pad_id = eos;
        /* as in CLIP's published tokenizer.json: BOS is matched after lower-casing, EOS before */
        qd_status st = add_special(t, "<|startoftext|>", true);
        return st ? st : add_special(t, "<|endoftext|>", false);
    }
    t->pres = calloc(1, sizeof *t->pres);
    if (!t->pres) return oom();
    t->n_pres = 1;
    t->pres[0].kind = TK_PRE_BYTELEVEL;
    t->pres[0].re = tk_regex_compile(GPT2_PATTERN, sizeof GPT2_PATTERN - 1, err, sizeof err);
    if (!t->pres[0].re) return qd_fail(QD_ENOMEM, "tokenizer: cannot compile GPT-2's pattern: %s", err);
    return add_special(t, "<|endoftext|>", false);
}

qd_status tk_load_vocab_merges(qd_tokenizer *t, const char *vocab_path, const char *merges_path) {
    json_t *vocab;
    qd_status st = qd_json_load_object(vocab_path, &vocab);
    if (st) return st;
    t->model.kind = TK_MODEL_BPE;
    st = tk_model_reserve(t, json_object_size(vocab));
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        if (st) break;
        if (!json_is_integer(val) || json_integer_value(val) < 0 || json_integer_value(val) >= TK_MAX_VOCAB) {
            st = qd_fail(QD_EFORMAT, "%s: token \"%.40s\" has no id in 0..%u", vocab_path, key, TK_MAX_VOCAB - 1);
            break;
        }
        st = tk_model_set_token(t, (int32_t)json_integer_value(val), key, strlen(key), "(vocabulary)");
    }
    json_decref(vocab);
    if (st) return st;
    char *text;
    size_t len;
    st = qd_read_small_file(merges_path, QD_JSON_MAX_FILE, &text, &len);
    if (st) return st;
    size_t rank = 0, line = 0;
    for (char *p = text; !st && p < text + len; line++) {
        char *end = memchr(p, '\n', (size_t)(text + len - p));
        if (!end) end = text + len;
        size_t n = (size_t)(end - p);
        if (n && p[n - 1] == '\r') n--;
        if (n && !(line == 0 && strncmp(p, "#version", 8) == 0)) {
            char *sp = memchr(p, ' ', n);
            if (!sp || memchr(sp + 1, ' ', (size_t)(p + n - sp - 1)))
                st = qd_fail(QD_EFORMAT, "%s: line %zu: expected two tokens separated by one space", merges_path, line + 1);
            else
                st = tk_bpe_add_merge(t, rank++, p, (size_t)(sp - p), sp + 1, (size_t)(p + n - sp - 1), merges_path);
        }
        p = end + 1;
    }
    free(text);
    return st ? st : setup_pipeline(t);
}
