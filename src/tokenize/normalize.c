/* Normalizers: Unicode forms (utf8proc), lower-casing, Replace, Strip, Prepend, and SentencePiece's
 * precompiled charsmap both the way HF tokenizers applies it (per grapheme, first match) and the way
 * SentencePiece itself does (longest match, whitespace folding, dummy prefix). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/status.h"
#include "tokenize/tokenizer_internal.h"

static qd_status oom(void) { return qd_fail(QD_ENOMEM, "tokenizer: out of memory while normalizing"); }

/* ---- the charsmap trie ---- */

qd_status tk_charsmap_init(tk_charsmap *m, const uint8_t *blob, size_t len, const char *label) {
    memset(m, 0, sizeof *m);
    if (len < 4) return qd_fail(QD_EFORMAT, "%s: precompiled charsmap of %zu bytes is too short for its size header", label, len);
    uint32_t trie_bytes = (uint32_t)blob[0] | (uint32_t)blob[1] << 8 | (uint32_t)blob[2] << 16 | (uint32_t)blob[3] << 24;
    if (trie_bytes % 4 || trie_bytes > len - 4 || trie_bytes == 0)
        return qd_fail(QD_EFORMAT, "%s: precompiled charsmap says its trie has %u bytes, which does not fit its %zu bytes in 4-byte units",
                       label, trie_bytes, len);
    /* A copy keeps the units aligned and the pool NUL-terminated whatever the source buffer is. */
    m->blob = malloc(len + 1);
    if (!m->blob) return oom();
    memcpy(m->blob, blob, len);
    m->blob[len] = 0;
    uint32_t *units = malloc(trie_bytes);
    if (!units) {
        free(m->blob);
        m->blob = NULL;
        return oom();
    }
    for (uint32_t i = 0; i < trie_bytes / 4; i++) {
        const uint8_t *p = blob + 4 + 4 * i;
        units[i] = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    }
    m->units = units;
    m->n_units = trie_bytes / 4;
    m->pool = (const char *)m->blob + 4 + trie_bytes;
    m->pool_len = len - 4 - trie_bytes;
    return QD_OK;
}

void tk_charsmap_free(tk_charsmap *m) {
    free((void *)m->units);
    free(m->blob);
    memset(m, 0, sizeof *m);
}

/* darts-clone unit fields */
static uint32_t unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static uint32_t unit_label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
static bool unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static uint32_t unit_value(uint32_t u) { return u & ((1u << 31) - 1); }

/* Prefix matches of s in the trie, shortest first: calls back with (match length, pool offset).
 * Every unit index is bounds-checked, so a corrupt trie ends the search instead of reading past it. */
typedef struct {
    size_t len;
    uint32_t value;
} match;

static size_t prefix_matches(const tk_charsmap *m, const char *s, size_t n, match *out, size_t max_out) {
    size_t found = 0;
    if (!m->n_units) return 0;
    size_t pos = 0;
    uint32_t u = m->units[0];
    pos ^= unit_offset(u);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        pos ^= c;
        if (pos >= m->n_units) break;
        u = m->units[pos];
        if (unit_label(u) != c) break;
        pos ^= unit_offset(u);
        if (pos >= m->n_units) break;
        if (unit_has_leaf(u) && found < max_out) out[found++] = (match){i + 1, unit_value(m->units[pos])};
    }
    return found;
}

/* The replacement string at a pool offset (empty if the offset is outside the pool). */
static const char *pool_string(const tk_charsmap *m, uint32_t off, size_t *len) {
    if (off >= m->pool_len) {
        *len = 0;
        return "";
    }
    *len = strnlen(m->pool + off, m->pool_len - off);
    return m->pool + off;
}

/* HF tokenizers' Precompiled: for each extended grapheme cluster shorter than 6 bytes, the first
 * (shortest) trie match replaces the whole cluster; otherwise each character is looked up alone. */
static qd_status precompiled_hf(const tk_charsmap *m, tk_buf *s) {
    tk_buf out = {0};
    size_t i = 0;
    while (i < s->n) {
        /* one grapheme: [i, j) */
        size_t j = i;
        utf8proc_int32_t state = 0, prev = -1;
        while (j < s->n) {
            size_t l = tk_utf8_len(s->s + j, s->n - j);
            if (!l) l = 1;
            utf8proc_int32_t cp = (utf8proc_int32_t)tk_utf8_get(s->s + j, l);
            if (prev >= 0 && utf8proc_grapheme_break_stateful(prev, cp, &state)) break;
            prev = cp;
            j += l;
        }
        match mt[8];
        bool done = false;
        if (j - i < 6 && prefix_matches(m, s->s + i, j - i, mt, 8) > 0) {
            size_t rl;
            const char *r = pool_string(m, mt[0].value, &rl);
            if (!tk_buf_add(&out, r, rl)) goto fail;
            done = true;
        }
        for (size_t k = i; !done && k < j;) {
            size_t l = tk_utf8_len(s->s + k, j - k);
            if (!l) l = 1;
            if (prefix_matches(m, s->s + k, l, mt, 8) > 0) {
                size_t rl;
                const char *r = pool_string(m, mt[0].value, &rl);
                if (!tk_buf_add(&out, r, rl)) goto fail;
            } else if (!tk_buf_add(&out, s->s + k, l)) {
                goto fail;
            }
            k += l;
        }
        i = j;
    }
    tk_buf_free(s);
    if (!out.s && !tk_buf_add(&out, "", 0)) return oom();
    *s = out;
    return QD_OK;
fail:
    tk_buf_free(&out);
    return oom();
}

/* SentencePiece's normalize_prefix: the longest trie match, or one character (U+FFFD for a byte
 * that does not start valid UTF-8, consuming that byte). */
static size_t spm_prefix(const tk_charsmap *m, const char *s, size_t n, const char **r, size_t *rl) {
    match mt[32];
    size_t k = m->n_units ? prefix_matches(m, s, n, mt, 32) : 0;
    if (k > 0) {
        *r = pool_string(m, mt[k - 1].value, rl);
        return mt[k - 1].len;
    }
    size_t l = tk_utf8_len(s, n);
    if (!l) {
        *r = "\xEF\xBF\xBD";
        *rl = 3;
        return 1;
    }
    *r = s;
    *rl = l;
    return l;
}

qd_status tk_spm_normalize(const qd_tokenizer *t, const char *s, size_t n, tk_buf *out) {
    const tk_charsmap *m = &t->spm.map;
    const char *r;
    size_t rl;
    if (t->spm.remove_extra_ws) {
        while (n > 0) {
            size_t used = spm_prefix(m, s, n, &r, &rl);
            if (!(rl == 1 && r[0] == ' ')) break;
            s += used, n -= used;
        }
    }
    if (!tk_buf_add(out, "", 0)) return oom();
    if (n == 0) return QD_OK;
    static const char ws[] = "\xE2\x96\x81"; /* ▁ */
    if (t->spm.add_dummy_prefix && !tk_buf_add(out, ws, 3)) return oom();
    bool prev_space = t->spm.remove_extra_ws;
    while (n > 0) {
        size_t used = spm_prefix(m, s, n, &r, &rl);
        if (prev_space)
            while (rl > 0 && r[0] == ' ') r++, rl--;
        if (rl > 0) {
            for (size_t k = 0; k < rl; k++) {
                bool ok = (t->spm.escape_ws && r[k] == ' ') ? tk_buf_add(out, ws, 3) : tk_buf_addc(out, r[k]);
                if (!ok) return oom();
            }
            prev_space = r[rl - 1] == ' ';
        }
        s += used, n -= used;
    }
    if (t->spm.remove_extra_ws) {
        const char *sp = t->spm.escape_ws ? ws : " ";
        size_t spl = t->spm.escape_ws ? 3 : 1;
        while (out->n >= spl && memcmp(out->s + out->n - spl, sp, spl) == 0) out->n -= spl;
        out->s[out->n] = '\0';
    }
    return QD_OK;
}

/* ---- the other normalizers ---- */

static qd_status unicode_form(tk_buf *s, int options) {
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s->s, (utf8proc_ssize_t)s->n, &dst, options);
    if (r < 0) return qd_fail(QD_EINVAL, "tokenizer: Unicode normalization failed: %s", utf8proc_errmsg(r));
    tk_buf_free(s);
    s->s = (char *)dst;
    s->n = s->cap = (size_t)r;
    return QD_OK;
}

static qd_status lowercase(tk_buf *s) {
    tk_buf out = {0};
    for (size_t i = 0; i < s->n;) {
        size_t l = tk_utf8_len(s->s + i, s->n - i);
        if (!l) l = 1;
        utf8proc_int32_t cp = (utf8proc_int32_t)tk_utf8_get(s->s + i, l), lc;
        char tmp[8];
        size_t tl;
        if (cp == 0x130) {
            memcpy(tmp, "i\xCC\x87", 3);
            tl = 3;
        } else {
            lc = utf8proc_tolower(cp);
            tl = tk_utf8_put((uint32_t)lc, tmp);
        }
        if (!tk_buf_add(&out, tmp, tl)) {
            tk_buf_free(&out);
            return oom();
        }
        i += l;
    }
    tk_buf_free(s);
    if (!out.s && !tk_buf_add(&out, "", 0)) return oom();
    *s = out;
    return QD_OK;
}

static qd_status replace(const tk_normalizer *x, tk_buf *s) {
    tk_buf out = {0};
    size_t i = 0;
    if (!tk_buf_add(&out, "", 0)) return oom();
    if (x->re) {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(x->re, NULL);
        if (!md) goto fail;
        while (i <= s->n) {
            int rc = pcre2_match(x->re, (PCRE2_SPTR)s->s, s->n, i, 0, md, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (!tk_buf_add(&out, s->s + i, ov[0] - i) || !tk_buf_add(&out, x->content, x->content_len)) {
                pcre2_match_data_free(md);
                goto fail;
            }
            size_t next = ov[1];
            if (ov[1] == ov[0]) { /* empty match: step over one character */
                if (ov[1] >= s->n) { i = s->n + 1; break; }
                size_t l = tk_utf8_len(s->s + ov[1], s->n - ov[1]);
                if (!tk_buf_add(&out, s->s + ov[1], l ? l : 1)) {
                    pcre2_match_data_free(md);
                    goto fail;
                }
                next = ov[1] + (l ? l : 1);
            }
            i = next;
        }
        pcre2_match_data_free(md);
        if (i < s->n && !tk_buf_add(&out, s->s + i, s->n - i)) goto fail;
    } else {
        while (i < s->n) {
            if (x->pattern_len && x->pattern_len <= s->n - i && memcmp(s->s + i, x->pattern, x->pattern_len) == 0) {
                if (!tk_buf_add(&out, x->content, x->content_len)) goto fail;
                i += x->pattern_len;
            } else {
                if (!tk_buf_addc(&out, s->s[i])) goto fail;
                i++;
            }
        }
    }
    tk_buf_free(s);
    *s = out;
    return QD_OK;
fail:
    tk_buf_free(&out);
    return oom();
}

static bool is_white(utf8proc_int32_t cp) {
    const utf8proc_property_t *p = utf8proc_get_property(cp);
    return p->category == UTF8PROC_CATEGORY_ZS || p->bidi_class == UTF8PROC_BIDI_CLASS_WS ||
           p->bidi_class == UTF8PROC_BIDI_CLASS_S || p->bidi_class == UTF8PROC_BIDI_CLASS_B ||
           cp == 0x85 || (cp >= 0x09 && cp <= 0x0D) || cp == 0x2028 || cp == 0x2029;
}

static qd_status strip(const tk_normalizer *x, tk_buf *s) {
    size_t a = 0, b = s->n;
    while (x->left && a < b) {
        size_t l = tk_utf8_len(s->s + a, b - a);
        if (!l || !is_white((utf8proc_int32_t)tk_utf8_get(s->s + a, l))) break;
        a += l;
    }
    while (x->right && b > a) {
        size_t p = b - 1;
        while (p > a && ((unsigned char)s->s[p] & 0xC0) == 0x80) p--;
        size_t l = tk_utf8_len(s->s + p, b - p);
        if (l != b - p || !is_white((utf8proc_int32_t)tk_utf8_get(s->s + p, l))) break;
        b = p;
    }
    memmove(s->s, s->s + a, b - a);
    s->n = b - a;
    s->s[s->n] = '\0';
    return QD_OK;
}

qd_status tk_normalize(const qd_tokenizer *t, tk_buf *s) {
    for (size_t k = 0; k < t->n_norms; k++) {
        const tk_normalizer *x = &t->norms[k];
        qd_status st = QD_OK;
        switch (x->kind) {
        case TK_NORM_NFC: st = unicode_form(s, UTF8PROC_STABLE | UTF8PROC_COMPOSE); break;
        case TK_NORM_NFD: st = unicode_form(s, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE); break;
        case TK_NORM_NFKC: st = unicode_form(s, UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT); break;
        case TK_NORM_NFKD: st = unicode_form(s, UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT); break;
        case TK_NORM_LOWERCASE: st = lowercase(s); break;
        case TK_NORM_REPLACE: st = replace(x, s); break;
        case TK_NORM_PRECOMPILED: st = precompiled_hf(&x->map, s); break;
        case TK_NORM_STRIP: st = strip(x, s); break;
        case TK_NORM_PREPEND:
            if (s->n) {
                tk_buf out = {0};
                if (!tk_buf_add(&out, x->content, x->content_len) || !tk_buf_add(&out, s->s, s->n)) {
                    tk_buf_free(&out);
                    return oom();
                }
                tk_buf_free(s);
                *s = out;
            }
            break;
        }
        if (st) return st;
    }
    return QD_OK;
}

void tk_normalizer_free(tk_normalizer *x) {
    if (x->re) pcre2_code_free(x->re);
    free(x->pattern);
    free(x->content);
    tk_charsmap_free(&x->map);
    memset(x, 0, sizeof *x);
}
