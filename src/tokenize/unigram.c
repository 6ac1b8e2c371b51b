/* Unigram language-model tokenization (SentencePiece, HF tokenizers' Unigram): the segmentation with
 * the highest sum of piece log-probabilities, found by Viterbi over byte positions. A character no
 * piece starts with becomes the unknown token with score min_score − 10 (both implementations'
 * penalty); consecutive unknowns fuse into one, or become <0xXX> byte pieces with byte fallback.
 *
 * Ties are common (a run of one repeated character), so the arithmetic must be the reference's to the
 * bit: HF sums in f64; SentencePiece stores path scores as float but forms each candidate in double
 * (piece score + stored float) and compares that against the stored float. The first candidate in
 * (start, length) order wins a tie in both. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "tokenize/tokenizer_internal.h"

#define UNK_PENALTY 10.0

typedef struct {
    double score;  /* best path score ending here */
    size_t start;  /* where the last piece of that path starts */
    int32_t id;    /* its id (-2: unknown character) */
    bool reached;
} node;

static bool all_bytes_known(const tk_model *m, const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (m->byte_ids[(unsigned char)s[i]] < 0) return false;
    return true;
}

static bool usable(const tk_model *m, int32_t id) {
    uint8_t ty = m->types[id];
    return ty == TK_PIECE_NORMAL || ty == TK_PIECE_USER;
}

qd_status tk_unigram_word(const tk_model *m, const char *w, size_t n, tk_ids *out) {
    if (n == 0) return QD_OK;
    node *nodes = calloc(n + 1, sizeof *nodes);
    if (!nodes) return qd_fail(QD_ENOMEM, "tokenizer: cannot allocate %zu Viterbi nodes", n + 1);
    nodes[0].reached = true;
    double unk_score = m->min_score - UNK_PENALTY;
    for (size_t i = 0; i < n;) {
        size_t cl = tk_utf8_len(w + i, n - i);
        if (!cl) cl = 1;
        if (!nodes[i].reached) { i += cl; continue; }
        bool single = false;
        for (size_t j = i + cl; j <= n && j - i <= m->max_piece_bytes;) {
            int32_t id = tk_model_id(m, w + i, j - i);
            if (id >= 0 && usable(m, id)) {
                double ps = m->scores[id];
                if (m->types[id] == TK_PIECE_USER) /* SentencePiece makes them win: bytes × max score − ε */
                    ps = (double)(j - i) * m->max_score - 1e-7;
                double s = nodes[i].score + ps;
                if (!nodes[j].reached || s > nodes[j].score) nodes[j] = (node){m->spm_float ? (double)(float)s : s, i, id, true};
                if (j == i + cl) single = true;
            }
            if (j == n) break;
            size_t l = tk_utf8_len(w + j, n - j);
            j += l ? l : 1;
        }
        if (!single) {
            double s = m->spm_float ? (double)((float)nodes[i].score + (float)unk_score) : nodes[i].score + unk_score;
            size_t j = i + cl;
            if (!nodes[j].reached || s > nodes[j].score) nodes[j] = (node){m->spm_float ? (double)(float)s : s, i, -2, true};
        }
        i += cl;
    }
    /* Walk back from the end, then emit in order. */
    size_t count = 0;
    for (size_t p = n; p > 0; p = nodes[p].start) count++;
    size_t *ends = malloc(count * sizeof *ends);
    if (!ends) {
        free(nodes);
        return qd_fail(QD_ENOMEM, "tokenizer: out of memory");
    }
    size_t k = count;
    for (size_t p = n; p > 0; p = nodes[p].start) ends[--k] = p;
    bool ok = true;
    bool prev_unk = false;
    for (size_t q = 0; q < count && ok; q++) {
        const node *nd = &nodes[ends[q]];
        if (nd->id != -2) {
            ok = tk_ids_add(out, nd->id);
            prev_unk = false;
        } else if (m->byte_fallback && all_bytes_known(m, w + nd->start, ends[q] - nd->start)) {
            for (size_t b = nd->start; b < ends[q] && ok; b++) ok = tk_ids_add(out, m->byte_ids[(unsigned char)w[b]]);
            prev_unk = false;
        } else {
            if (!prev_unk && m->unk_id >= 0) ok = tk_ids_add(out, m->unk_id);
            prev_unk = true;
        }
    }
    free(ends);
    free(nodes);
    return ok ? QD_OK : qd_fail(QD_ENOMEM, "tokenizer: out of memory");
}
