/* Byte-pair encoding (HF tokenizers' BPE model): a word starts as one symbol per character (the last
 * one carrying the end-of-word suffix, CLIP's "</w>"), and the adjacent pair with the lowest merge
 * rank is merged until no ranked pair is left. Merges are looked up by (left id, right id). */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "tokenize/tokenizer_internal.h"

static uint64_t mix(uint64_t k) {
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

static uint64_t pair_key(int32_t a, int32_t b) { return (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1; }

static const tk_merge_slot *merge_find(const tk_model *m, int32_t a, int32_t b) {
    if (!m->merge_cap) return NULL;
    uint64_t k = pair_key(a, b);
    for (size_t i = mix(k) & (m->merge_cap - 1);; i = (i + 1) & (m->merge_cap - 1)) {
        if (m->merges[i].key == k) return &m->merges[i];
        if (m->merges[i].key == 0) return NULL;
    }
}

static bool merge_grow(tk_model *m) {
    size_t cap = m->merge_cap ? m->merge_cap * 2 : 1024;
    tk_merge_slot *s = calloc(cap, sizeof *s);
    if (!s) return false;
    for (size_t i = 0; i < m->merge_cap; i++) {
        if (!m->merges[i].key) continue;
        size_t j = mix(m->merges[i].key) & (cap - 1);
        while (s[j].key) j = (j + 1) & (cap - 1);
        s[j] = m->merges[i];
    }
    free(m->merges);
    m->merges = s;
    m->merge_cap = cap;
    return true;
}

qd_status tk_bpe_add_merge(qd_tokenizer *t, size_t rank, const char *a, size_t na, const char *b, size_t nb,
                           const char *field) {
    tk_model *m = &t->model;
    int32_t ia = tk_model_id(m, a, na), ib = tk_model_id(m, b, nb);
    char joined[2 * TK_MAX_TOKEN_BYTES + 1];
    if (na + nb > 2 * TK_MAX_TOKEN_BYTES || ia < 0 || ib < 0)
        return qd_fail(QD_EFORMAT, "%s: %s: merge %zu (\"%.*s\" \"%.*s\") names a token that is not in the vocabulary",
                       t->source, field, rank, (int)(na > 40 ? 40 : na), a, (int)(nb > 40 ? 40 : nb), b);
    memcpy(joined, a, na);
    memcpy(joined + na, b, nb);
    int32_t id = tk_model_id(m, joined, na + nb);
    if (id < 0)
        return qd_fail(QD_EFORMAT, "%s: %s: merge %zu gives \"%.*s\", which is not in the vocabulary", t->source,
                       field, rank, (int)(na + nb > 80 ? 80 : na + nb), joined);
    if (rank > INT32_MAX) return qd_fail(QD_EFORMAT, "%s: %s: too many merges", t->source, field);
    /* The first occurrence of a pair keeps its (lower) rank, as a repeated merge is never reached. */
    if (merge_find(m, ia, ib)) return QD_OK;
    if ((m->n_merges + 1) * 2 > m->merge_cap && !merge_grow(m))
        return qd_fail(QD_ENOMEM, "%s: cannot grow the merge table", t->source);
    uint64_t k = pair_key(ia, ib);
    size_t j = mix(k) & (m->merge_cap - 1);
    while (m->merges[j].key) j = (j + 1) & (m->merge_cap - 1);
    m->merges[j] = (tk_merge_slot){k, (int32_t)rank, id};
    m->n_merges++;
    return QD_OK;
}

static bool bytes_known(const tk_model *m, const char *c, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (m->byte_ids[(unsigned char)c[i]] < 0) return false;
    return true;
}

/* Symbols of a word: ids; merged symbols are removed by compaction. */
static qd_status push_char(const tk_model *m, const char *c, size_t n, bool last, tk_ids *syms) {
    char tmp[TK_MAX_TOKEN_BYTES + 8];
    size_t suf = (last && m->eow_suffix) ? strlen(m->eow_suffix) : 0;
    memcpy(tmp, c, n);
    if (suf) memcpy(tmp + n, m->eow_suffix, suf);
    int32_t id = tk_model_id(m, tmp, n + suf);
    bool ok = true;
    if (id >= 0) {
        ok = tk_ids_add(syms, id);
    } else if (m->byte_fallback && bytes_known(m, c, n)) {
        for (size_t i = 0; i < n && ok; i++) ok = tk_ids_add(syms, m->byte_ids[(unsigned char)c[i]]);
    } else if (m->unk_id >= 0) {
        if (!(m->fuse_unk && syms->n && syms->v[syms->n - 1] == m->unk_id)) ok = tk_ids_add(syms, m->unk_id);
    } /* no unknown token: the character is dropped, as HF does */
    return ok ? QD_OK : qd_fail(QD_ENOMEM, "tokenizer: out of memory");
}

/* A queued merge: the pair starting at symbol `pos`, to become `id`. */
typedef struct {
    int32_t rank, id;
    size_t pos;
} pending;

static bool pending_before(const pending *x, const pending *y) {
    return x->rank < y->rank || (x->rank == y->rank && x->pos < y->pos);
}

static void heap_push(pending *h, size_t *n, pending v) {
    size_t i = (*n)++;
    for (; i > 0 && pending_before(&v, &h[(i - 1) / 2]); i = (i - 1) / 2) h[i] = h[(i - 1) / 2];
    h[i] = v;
}

static pending heap_pop(pending *h, size_t *n) {
    pending top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && pending_before(&h[c + 1], &h[c])) c++;
        if (!pending_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = last;
    return top;
}

/* Merge the lowest-ranked pair, leftmost on ties, until none is left (HF's order), in O(n log n):
 * the symbols form a linked list and candidate pairs wait in a heap; a popped pair whose symbols
 * have changed since it was queued is dropped. Every merge queues at most two pairs, so the heap
 * never holds more than 3n entries. */
static qd_status merge_all(const tk_model *m, tk_ids *syms) {
    size_t n = syms->n, hn = 0;
    size_t *next = malloc(n * sizeof *next), *prev = malloc(n * sizeof *prev);
    bool *alive = malloc(n);
    pending *heap = malloc(3 * n * sizeof *heap);
    if (!next || !prev || !alive || !heap) {
        free(next), free(prev), free(alive), free(heap);
        return qd_fail(QD_ENOMEM, "tokenizer: out of memory for a word of %zu symbols", n);
    }
    int32_t *id = syms->v;
    for (size_t i = 0; i < n; i++) {
        next[i] = i + 1, prev[i] = i - 1, alive[i] = true; /* prev[0] wraps to SIZE_MAX: none */
        const tk_merge_slot *sl = i + 1 < n ? merge_find(m, id[i], id[i + 1]) : NULL;
        if (sl) heap_push(heap, &hn, (pending){sl->rank, sl->id, i});
    }
    while (hn) {
        pending p = heap_pop(heap, &hn);
        size_t r = next[p.pos];
        if (!alive[p.pos] || r >= n) continue;
        const tk_merge_slot *sl = merge_find(m, id[p.pos], id[r]);
        if (!sl || sl->id != p.id || sl->rank != p.rank) continue; /* stale */
        id[p.pos] = p.id;
        alive[r] = false;
        next[p.pos] = next[r];
        if (next[r] < n) prev[next[r]] = p.pos;
        if (prev[p.pos] < n && (sl = merge_find(m, id[prev[p.pos]], id[p.pos])))
            heap_push(heap, &hn, (pending){sl->rank, sl->id, prev[p.pos]});
        if (next[p.pos] < n && (sl = merge_find(m, id[p.pos], id[next[p.pos]])))
            heap_push(heap, &hn, (pending){sl->rank, sl->id, p.pos});
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (alive[i]) id[k++] = id[i];
    syms->n = k;
    free(next), free(prev), free(alive), free(heap);
    return QD_OK;
}

qd_status tk_bpe_word(const tk_model *m, const char *w, size_t n, tk_ids *out) {
    if (n == 0) return QD_OK;
    if (m->ignore_merges) {
        int32_t id = tk_model_id(m, w, n);
        if (id >= 0) return tk_ids_add(out, id) ? QD_OK : qd_fail(QD_ENOMEM, "tokenizer: out of memory");
    }
    tk_ids syms = {0};
    qd_status st = QD_OK;
    for (size_t i = 0; i < n && !st;) {
        size_t l = tk_utf8_len(w + i, n - i);
        if (!l) l = 1; /* byte-level words are valid UTF-8; this only guards odd vocabularies */
        st = push_char(m, w + i, l, i + l == n, &syms);
        i += l;
    }
    if (!st && syms.n > 1) st = merge_all(m, &syms);
    for (size_t i = 0; i < syms.n && !st; i++)
        if (!tk_ids_add(out, syms.v[i])) st = qd_fail(QD_ENOMEM, "tokenizer: out of memory");
    free(syms.v);
    return st;
}
