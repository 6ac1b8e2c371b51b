/* The vocabulary shared by both models: id ↔ token tables, filled by the loaders, and the facts the
 * models derive from it once (byte-fallback ids <0xXX>, Unigram's score range). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "tokenize/tokenizer_internal.h"

qd_tokenizer *tk_new(const char *source) {
    qd_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->source = strdup(source);
    if (!t->source) {
        free(t);
        return NULL;
    }
    qd_strmap_init(&t->model.vocab);
    t->model.unk_id = -1;
    t->pad_id = -1;
    t->decoder = TK_DECODE_PLAIN;
    for (int i = 0; i < 256; i++) t->model.byte_ids[i] = -1;
    return t;
}

qd_status tk_model_reserve(qd_tokenizer *t, size_t n) {
    tk_model *m = &t->model;
    if (n <= m->n_tokens) return QD_OK;
    if (n > TK_MAX_VOCAB) return qd_fail(QD_EFORMAT, "%s: vocabulary of %zu ids is larger than the %u allowed", t->source, n, TK_MAX_VOCAB);
    char **tok = realloc(m->tokens, n * sizeof *tok);
    if (!tok) return qd_fail(QD_ENOMEM, "%s: cannot allocate the vocabulary", t->source);
    memset(tok + m->n_tokens, 0, (n - m->n_tokens) * sizeof *tok);
    m->tokens = tok;
    if (m->kind == TK_MODEL_UNIGRAM) {
        double *sc = realloc(m->scores, n * sizeof *sc);
        if (sc) m->scores = sc;
        uint8_t *ty = realloc(m->types, n);
        if (ty) m->types = ty;
        if (!sc || !ty) return qd_fail(QD_ENOMEM, "%s: cannot allocate the vocabulary", t->source);
        for (size_t i = m->n_tokens; i < n; i++) m->scores[i] = 0, m->types[i] = TK_PIECE_UNUSED;
    }
    m->n_tokens = n;
    return QD_OK;
}

qd_status tk_model_set_token(qd_tokenizer *t, int32_t id, const char *tok, size_t len, const char *field) {
    tk_model *m = &t->model;
    if (id < 0) return qd_fail(QD_EFORMAT, "%s: %s: negative id %d for token \"%.*s\"", t->source, field, id, (int)(len > 40 ? 40 : len), tok);
    if (len > TK_MAX_TOKEN_BYTES) return qd_fail(QD_EFORMAT, "%s: %s: a token of %zu bytes (at most %d)", t->source, field, len, TK_MAX_TOKEN_BYTES);
    if (memchr(tok, '\0', len)) return qd_fail(QD_EFORMAT, "%s: %s: token with id %d contains a NUL byte", t->source, field, id);
    qd_status st = tk_model_reserve(t, (size_t)id + 1);
    if (st) return st;
    if (m->tokens[id]) return qd_fail(QD_EFORMAT, "%s: %s: id %d is given to both \"%s\" and \"%.*s\"", t->source, field, id, m->tokens[id], (int)(len > 40 ? 40 : len), tok);
    char *copy = malloc(len + 1);
    if (!copy) return qd_fail(QD_ENOMEM, "%s: cannot allocate a token", t->source);
    memcpy(copy, tok, len);
    copy[len] = '\0';
    size_t existing;
    int r = qd_strmap_put(&m->vocab, copy, (size_t)id, &existing);
    if (r < 0) {
        free(copy);
        return qd_fail(QD_ENOMEM, "%s: cannot grow the vocabulary map", t->source);
    }
    if (r == 0) {
        free(copy);
        return qd_fail(QD_EFORMAT, "%s: %s: token \"%.*s\" has two ids (%zu and %d)", t->source, field, (int)(len > 40 ? 40 : len), tok, existing, id);
    }
    m->tokens[id] = copy;
    return QD_OK;
}

int32_t tk_model_id(const tk_model *m, const char *tok, size_t len) {
    char small[TK_MAX_TOKEN_BYTES + 1];
    if (len > TK_MAX_TOKEN_BYTES) return -1;
    memcpy(small, tok, len);
    small[len] = '\0';
    size_t v;
    return qd_strmap_get(&m->vocab, small, &v) ? (int32_t)v : -1;
}

qd_status tk_model_finish(qd_tokenizer *t) {
    tk_model *m = &t->model;
    if (m->n_tokens == 0) return qd_fail(QD_EFORMAT, "%s: the vocabulary is empty", t->source);
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_ids[b] = tk_model_id(m, name, 6);
    }
    if (m->kind == TK_MODEL_UNIGRAM) {
        m->min_score = INFINITY;
        m->max_score = -INFINITY;
        m->max_piece_bytes = 0;
        for (size_t i = 0; i < m->n_tokens; i++) {
            if (!m->tokens[i]) continue;
            if (m->types[i] == TK_PIECE_NORMAL) {
                if (m->scores[i] < m->min_score) m->min_score = m->scores[i];
                if (m->scores[i] > m->max_score) m->max_score = m->scores[i];
            }
            size_t l = strlen(m->tokens[i]);
            if ((m->types[i] == TK_PIECE_NORMAL || m->types[i] == TK_PIECE_USER) && l > m->max_piece_bytes)
                m->max_piece_bytes = l;
        }
        if (!isfinite(m->min_score)) m->min_score = 0, m->max_score = 0;
    }
    if (m->unk_id >= 0 && ((size_t)m->unk_id >= m->n_tokens || !m->tokens[m->unk_id]))
        return qd_fail(QD_EFORMAT, "%s: the unknown-token id %d is not in the vocabulary", t->source, m->unk_id);
    return QD_OK;
}

void tk_model_free(tk_model *m) {
    for (size_t i = 0; i < m->n_tokens; i++) free(m->tokens[i]);
    free(m->tokens);
    qd_strmap_free(&m->vocab);
    free(m->merges);
    free(m->eow_suffix);
    free(m->scores);
    free(m->types);
    memset(m, 0, sizeof *m);
}
