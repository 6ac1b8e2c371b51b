/* Pre-tokenizers: Split (a regex or string, with HF's five delimiter behaviours and invert),
 * ByteLevel (optional prefix space and GPT-2 regex, then bytes → GPT-2 characters), Metaspace
 * (spaces → ▁, prepend scheme, split before each ▁), WhitespaceSplit, Whitespace and Digits. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/status.h"
#include "tokenize/tokenizer_internal.h"

static qd_status oom(void) { return qd_fail(QD_ENOMEM, "tokenizer: out of memory while pre-tokenizing"); }

typedef struct {
    size_t a, b;
    bool delim;
} seg;

typedef struct {
    seg *v;
    size_t n, cap;
} segs;

static bool seg_add(segs *s, size_t a, size_t b, bool delim) {
    if (a == b) return true;
    if (s->n == s->cap) {
        size_t c = s->cap ? s->cap * 2 : 16;
        seg *v = realloc(s->v, c * sizeof *v);
        if (!v) return false;
        s->v = v, s->cap = c;
    }
    s->v[s->n++] = (seg){a, b, delim};
    return true;
}

/* Apply a delimiter behaviour to the segments of `s` and append the resulting words. */
static qd_status apply_behavior(const char *s, const segs *sg, tk_split_behavior bh, tk_list *out) {
    size_t pending_a = 0, pending_b = 0;
    bool have_pending = false;
    for (size_t i = 0; i < sg->n; i++) {
        seg x = sg->v[i];
        switch (bh) {
        case TK_SPLIT_REMOVED:
            if (!x.delim && !tk_list_add(out, s + x.a, x.b - x.a)) return oom();
            break;
        case TK_SPLIT_ISOLATED:
            if (!tk_list_add(out, s + x.a, x.b - x.a)) return oom();
            break;
        case TK_SPLIT_MERGED_PREV: /* a delimiter joins the word before it */
            if (x.delim && out->n && have_pending) {
                if (!tk_buf_add(&out->v[out->n - 1], s + x.a, x.b - x.a)) return oom();
            } else if (!tk_list_add(out, s + x.a, x.b - x.a)) {
                return oom();
            }
            have_pending = true;
            break;
        case TK_SPLIT_MERGED_NEXT: /* a delimiter starts the next word */
            if (have_pending) {
                if (x.delim) {
                    if (!tk_list_add(out, s + pending_a, pending_b - pending_a)) return oom();
                    pending_a = x.a, pending_b = x.b;
                } else {
                    pending_b = x.b;
                }
            } else {
                pending_a = x.a, pending_b = x.b, have_pending = true;
            }
            break;
        case TK_SPLIT_CONTIGUOUS: /* runs of delimiters become one word */
            if (x.delim && have_pending && i > 0 && sg->v[i - 1].delim && sg->v[i - 1].b == x.a) {
                if (!tk_buf_add(&out->v[out->n - 1], s + x.a, x.b - x.a)) return oom();
            } else if (!tk_list_add(out, s + x.a, x.b - x.a)) {
                return oom();
            }
            have_pending = true;
            break;
        }
    }
    if (bh == TK_SPLIT_MERGED_NEXT && have_pending && !tk_list_add(out, s + pending_a, pending_b - pending_a)) return oom();
    return QD_OK;
}

/* Segments of s: regex matches (or string occurrences) as delimiters, the gaps between them not. */
static qd_status find_segments(const tk_pretok *p, const char *s, size_t n, segs *sg) {
    size_t i = 0, last = 0;
    if (p->re) {
        pcre2_match_data *md = pcre2_match_data_create_from_pattern(p->re, NULL);
        if (!md) return oom();
        while (i < n) {
            int rc = pcre2_match(p->re, (PCRE2_SPTR)s, n, i, PCRE2_NO_UTF_CHECK, md, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (ov[1] == ov[0]) { /* an empty match delimits nothing: move on one character */
                size_t l = tk_utf8_len(s + ov[0], n - ov[0]);
                i = ov[0] + (l ? l : 1);
                continue;
            }
            if (!seg_add(sg, last, ov[0], false) || !seg_add(sg, ov[0], ov[1], true)) {
                pcre2_match_data_free(md);
                return oom();
            }
            last = i = ov[1];
        }
        pcre2_match_data_free(md);
    } else if (p->literal_len) {
        while (i + p->literal_len <= n) {
            if (memcmp(s + i, p->literal, p->literal_len) == 0) {
                if (!seg_add(sg, last, i, false) || !seg_add(sg, i, i + p->literal_len, true)) return oom();
                last = i = i + p->literal_len;
            } else {
                i++;
            }
        }
    }
    if (!seg_add(sg, last, n, false)) return oom();
    if (p->invert)
        for (size_t k = 0; k < sg->n; k++) sg->v[k].delim = !sg->v[k].delim;
    return QD_OK;
}

/* Segments by a per-character class (whitespace for WhitespaceSplit, digits for Digits). */
static qd_status class_segments(const char *s, size_t n, bool (*is)(utf8proc_int32_t), segs *sg) {
    size_t a = 0;
    bool cur = false;
    for (size_t i = 0; i < n;) {
        size_t l = tk_utf8_len(s + i, n - i);
        if (!l) l = 1;
        bool c = is((utf8proc_int32_t)tk_utf8_get(s + i, l));
        if (i > 0 && c != cur) {
            if (!seg_add(sg, a, i, cur)) return oom();
            a = i;
        }
        cur = c;
        i += l;
    }
    return seg_add(sg, a, n, cur) ? QD_OK : oom();
}

static bool cp_is_space(utf8proc_int32_t cp) {
    const utf8proc_property_t *p = utf8proc_get_property(cp);
    return p->category == UTF8PROC_CATEGORY_ZS || (cp >= 0x09 && cp <= 0x0D) || cp == 0x85 || cp == 0x2028 ||
           cp == 0x2029;
}

static bool cp_is_digit(utf8proc_int32_t cp) {
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_ND || c == UTF8PROC_CATEGORY_NL || c == UTF8PROC_CATEGORY_NO;
}

static qd_status byte_map(const char *s, size_t n, tk_buf *out) {
    for (size_t i = 0; i < n; i++) {
        char tmp[4];
        size_t l = tk_utf8_put(tk_byte_to_cp((uint8_t)s[i]), tmp);
        if (!tk_buf_add(out, tmp, l)) return oom();
    }
    if (!out->s && !tk_buf_add(out, "", 0)) return oom();
    return QD_OK;
}

/* One pre-tokenizer over one word. */
static qd_status pretok_one(const tk_pretok *p, const char *s, size_t n, bool first, tk_list *out) {
    segs sg = {0};
    qd_status st = QD_OK;
    switch (p->kind) {
    case TK_PRE_SPLIT:
        st = find_segments(p, s, n, &sg);
        if (!st) st = apply_behavior(s, &sg, p->behavior, out);
        break;
    case TK_PRE_WHITESPACE:
        st = find_segments(p, s, n, &sg);
        if (!st) st = apply_behavior(s, &sg, TK_SPLIT_REMOVED, out);
        break;
    case TK_PRE_WHITESPACE_SPLIT:
        st = class_segments(s, n, cp_is_space, &sg);
        if (!st) st = apply_behavior(s, &sg, TK_SPLIT_REMOVED, out);
        break;
    case TK_PRE_DIGITS:
        st = class_segments(s, n, cp_is_digit, &sg);
        if (!st && p->individual_digits) { /* every digit on its own */
            segs one = {0};
            for (size_t k = 0; k < sg.n && !st; k++) {
                if (!sg.v[k].delim) {
                    if (!seg_add(&one, sg.v[k].a, sg.v[k].b, false)) st = oom();
                    continue;
                }
                for (size_t i = sg.v[k].a; i < sg.v[k].b && !st;) {
                    size_t l = tk_utf8_len(s + i, sg.v[k].b - i);
                    if (!l) l = 1;
                    if (!seg_add(&one, i, i + l, true)) st = oom();
                    i += l;
                }
            }
            free(sg.v);
            sg = one;
            if (!st) st = apply_behavior(s, &sg, TK_SPLIT_ISOLATED, out);
        } else if (!st) {
            st = apply_behavior(s, &sg, TK_SPLIT_CONTIGUOUS, out);
        }
        break;
    case TK_PRE_BYTELEVEL: {
        tk_buf src = {0};
        if ((p->add_prefix_space && !(n > 0 && s[0] == ' ') && !tk_buf_add(&src, " ", 1)) || !tk_buf_add(&src, s, n)) {
            tk_buf_free(&src);
            return oom();
        }
        tk_list parts = {0};
        if (p->re) {
            st = find_segments(p, src.s, src.n, &sg);
            if (!st) st = apply_behavior(src.s, &sg, TK_SPLIT_ISOLATED, &parts);
        } else if (!tk_list_add(&parts, src.s, src.n)) {
            st = oom();
        }
        for (size_t k = 0; k < parts.n && !st; k++) {
            tk_buf m = {0};
            st = byte_map(parts.v[k].s, parts.v[k].n, &m);
            if (!st && !tk_list_add(out, m.s, m.n)) st = oom();
            tk_buf_free(&m);
        }
        tk_list_free(&parts);
        tk_buf_free(&src);
        break;
    }
    case TK_PRE_METASPACE: {
        tk_buf m = {0};
        size_t rl = strlen(p->replacement);
        bool prepend = p->prepend == TK_PREPEND_ALWAYS || (p->prepend == TK_PREPEND_FIRST && first);
        if (!tk_buf_add(&m, "", 0)) return oom();
        for (size_t i = 0; i < n && !st; i++)
            if (!(s[i] == ' ' ? tk_buf_add(&m, p->replacement, rl) : tk_buf_addc(&m, s[i]))) st = oom();
        if (!st && prepend && !(m.n >= rl && memcmp(m.s, p->replacement, rl) == 0)) {
            tk_buf x = {0};
            if (!tk_buf_add(&x, p->replacement, rl) || !tk_buf_add(&x, m.s, m.n)) st = oom();
            tk_buf_free(&m);
            m = x;
        }
        if (!st && p->split) {
            tk_pretok lit = {.literal = (char *)p->replacement, .literal_len = rl};
            st = find_segments(&lit, m.s, m.n, &sg);
            if (!st) st = apply_behavior(m.s, &sg, TK_SPLIT_MERGED_NEXT, out);
        } else if (!st && m.n && !tk_list_add(out, m.s, m.n)) {
            st = oom();
        }
        tk_buf_free(&m);
        break;
    }
    }
    free(sg.v);
    return st;
}

qd_status tk_pretokenize(const qd_tokenizer *t, const char *s, size_t n, bool first, tk_list *words) {
    tk_list cur = {0};
    if (!tk_list_add(&cur, s, n)) return oom();
    for (size_t k = 0; k < t->n_pres; k++) {
        tk_list next = {0};
        for (size_t i = 0; i < cur.n; i++) {
            qd_status st = pretok_one(&t->pres[k], cur.v[i].s, cur.v[i].n, first && i == 0, &next);
            if (st) {
                tk_list_free(&next);
                tk_list_free(&cur);
                return st;
            }
        }
        tk_list_free(&cur);
        cur = next;
    }
    for (size_t i = 0; i < cur.n; i++) {
        if (cur.v[i].n && !tk_list_add(words, cur.v[i].s, cur.v[i].n)) {
            tk_list_free(&cur);
            return oom();
        }
    }
    tk_list_free(&cur);
    return QD_OK;
}

void tk_pretok_free(tk_pretok *x) {
    if (x->re) pcre2_code_free(x->re);
    free(x->literal);
    memset(x, 0, sizeof *x);
}
