/* Small helpers of the tokenizer layer: growable byte strings and id lists, UTF-8 steps, and the
 * GPT-2 byte ↔ character map that byte-level BPE vocabularies are written in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenize/tokenizer_internal.h"

static bool grow(void **p, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return true;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / elem) return false;
        c *= 2;
    }
    void *q = realloc(*p, c * elem);
    if (!q) return false;
    *p = q;
    *cap = c;
    return true;
}

bool tk_buf_add(tk_buf *b, const char *s, size_t n) {
    if (n > SIZE_MAX - b->n - 1 || !grow((void **)&b->s, &b->cap, b->n + n + 1, 1)) return false;
    if (n) memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return true;
}

bool tk_buf_addc(tk_buf *b, char c) { return tk_buf_add(b, &c, 1); }

void tk_buf_free(tk_buf *b) {
    free(b->s);
    memset(b, 0, sizeof *b);
}

bool tk_ids_add(tk_ids *x, int32_t id) {
    if (!grow((void **)&x->v, &x->cap, x->n + 1, sizeof *x->v)) return false;
    x->v[x->n++] = id;
    return true;
}

bool tk_list_add(tk_list *l, const char *s, size_t n) {
    if (!grow((void **)&l->v, &l->cap, l->n + 1, sizeof *l->v)) return false;
    tk_buf b = {0};
    if (!tk_buf_add(&b, s, n)) return false;
    l->v[l->n++] = b;
    return true;
}

void tk_list_free(tk_list *l) {
    for (size_t i = 0; i < l->n; i++) tk_buf_free(&l->v[i]);
    free(l->v);
    memset(l, 0, sizeof *l);
}

size_t tk_utf8_len(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    if (n == 0) return 0;
    unsigned c = s[0];
    size_t len;
    uint32_t min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    uint32_t cp = tk_utf8_get(str, len);
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

uint32_t tk_utf8_get(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    if (len == 1) return s[0];
    uint32_t cp = s[0] & (0x7F >> len);
    for (size_t i = 1; i < len; i++) cp = (cp << 6) | (s[i] & 0x3F);
    return cp;
}

size_t tk_utf8_put(uint32_t cp, char *out) {
    unsigned char *o = (unsigned char *)out;
    if (cp < 0x80) { o[0] = (unsigned char)cp; return 1; }
    if (cp < 0x800) {
        o[0] = (unsigned char)(0xC0 | (cp >> 6));
        o[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (unsigned char)(0xE0 | (cp >> 12));
        o[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        o[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (unsigned char)(0xF0 | (cp >> 18));
    o[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* GPT-2's map: the printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves; the
 * other 68 bytes, in increasing order, become U+0100, U+0101, … so every byte is a visible character. */
static bool byte_is_printable(unsigned b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tk_byte_to_cp(uint8_t b) {
    if (byte_is_printable(b)) return b;
    uint32_t n = 0;
    for (unsigned i = 0; i < b; i++)
        if (!byte_is_printable(i)) n++;
    return 256 + n;
}

int tk_cp_to_byte(uint32_t cp) {
    if (cp < 256) return byte_is_printable(cp) ? (int)cp : -1;
    if (cp >= 256 + 68) return -1;
    uint32_t n = 0;
    for (unsigned i = 0; i < 256; i++) {
        if (byte_is_printable(i)) continue;
        if (n == cp - 256) return (int)i;
        n++;
    }
    return -1;
}

pcre2_code *tk_regex_compile(const char *pattern, size_t len, char *err, size_t err_len) {
    int code;
    PCRE2_SIZE off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_UCP, &code,
                                   &off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        snprintf(err, err_len, "%s at offset %zu", (const char *)msg, (size_t)off);
        return NULL;
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* a speed-up only: the interpreter is used without it */
    return re;
}
