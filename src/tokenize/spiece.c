/* SentencePiece model files (spiece.model, tokenizer.model): a protobuf ModelProto. Only the fields
 * tokenization needs are read — pieces (string, score, type), TrainerSpec's model type, byte
 * fallback and special ids, NormalizerSpec's charsmap and whitespace flags — and every length and
 * varint is checked against the buffer, so a damaged file is an error naming the field, never a
 * read past its end. Field numbers follow sentencepiece_model.proto. */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "tokenize/tokenizer_internal.h"

typedef struct {
    const uint8_t *p, *end;
} reader;

typedef struct {
    uint32_t field, wire;
    uint64_t v;              /* varint / fixed value */
    const uint8_t *data;     /* length-delimited payload */
    size_t len;
} pb_field;

static bool varint(reader *r, uint64_t *v) {
    *v = 0;
    for (int s = 0;; s += 7) {
        if (r->p >= r->end || s > 63) return false;
        uint8_t b = *r->p++;
        *v |= (uint64_t)(b & 0x7F) << s;
        if (!(b & 0x80)) return true;
    }
}

/* 1: a field read; 0: end of message; -1: malformed. */
static int pb_next(reader *r, pb_field *f) {
    if (r->p >= r->end) return 0;
    uint64_t key;
    if (!varint(r, &key)) return -1;
    f->field = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    if (f->field == 0 || key >> 32) return -1;
    switch (f->wire) {
    case 0:
        return varint(r, &f->v) ? 1 : -1;
    case 1:
        if (r->end - r->p < 8) return -1;
        f->v = 0;
        for (int i = 7; i >= 0; i--) f->v = (f->v << 8) | r->p[i];
        r->p += 8;
        return 1;
    case 5:
        if (r->end - r->p < 4) return -1;
        f->v = (uint64_t)r->p[0] | (uint64_t)r->p[1] << 8 | (uint64_t)r->p[2] << 16 | (uint64_t)r->p[3] << 24;
        r->p += 4;
        return 1;
    case 2: {
        uint64_t n;
        if (!varint(r, &n) || n > (uint64_t)(r->end - r->p)) return -1;
        f->data = r->p;
        f->len = (size_t)n;
        r->p += n;
        return 1;
    }
    default: /* groups (3, 4) are not used by SentencePiece */
        return -1;
    }
}

static float as_float(uint64_t v) {
    uint32_t u = (uint32_t)v;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static qd_status bad(const qd_tokenizer *t, const char *what) {
    return qd_fail(QD_EFORMAT, "%s: not a valid SentencePiece model: %s", t->source, what);
}

static qd_status read_piece(qd_tokenizer *t, const uint8_t *d, size_t n, int32_t id) {
    reader r = {d, d + n};
    pb_field f = {0};
    int rc;
    const uint8_t *s = NULL;
    size_t sl = 0;
    float score = 0;
    uint64_t type = TK_PIECE_NORMAL;
    while ((rc = pb_next(&r, &f)) > 0) {
        if (f.field == 1 && f.wire == 2) s = f.data, sl = f.len;
        else if (f.field == 2 && f.wire == 5) score = as_float(f.v);
        else if (f.field == 3 && f.wire == 0) type = f.v;
    }
    if (rc < 0) return bad(t, "a piece entry (field pieces) is truncated");
    if (!s) return qd_fail(QD_EFORMAT, "%s: field pieces[%d]: no piece string", t->source, id);
    if (type < 1 || type > 6) return qd_fail(QD_EFORMAT, "%s: field pieces[%d].type: %llu is not a piece type (1..6)", t->source, id, (unsigned long long)type);
    if (score != score) return qd_fail(QD_EFORMAT, "%s: field pieces[%d].score is NaN", t->source, id);
    qd_status st = tk_model_set_token(t, id, (const char *)s, sl, "pieces");
    if (st) return st;
    t->model.scores[id] = score;
    t->model.types[id] = (uint8_t)type;
    return QD_OK;
}

qd_status tk_load_spiece(qd_tokenizer *t, const uint8_t *buf, size_t len) {
    tk_model *m = &t->model;
    m->kind = TK_MODEL_UNIGRAM;
    m->spm_float = true;
    t->spm.on = true;
    t->spm.add_dummy_prefix = t->spm.remove_extra_ws = t->spm.escape_ws = true;
    t->decoder = TK_DECODE_METASPACE;
    int64_t model_type = 1, unk_id = 0, eos_id = 2, pad_id = -1;
    bool byte_fallback = false;
    reader r = {buf, buf + len};
    pb_field f = {0};
    int rc;
    int32_t n_pieces = 0;
    qd_status st = QD_OK;
    while (!st && (rc = pb_next(&r, &f)) > 0) {
        if (f.field == 1 && f.wire == 2) {
            if (n_pieces >= (int32_t)TK_MAX_VOCAB) return bad(t, "too many pieces");
            st = read_piece(t, f.data, f.len, n_pieces++);
        } else if (f.field == 2 && f.wire == 2) { /* TrainerSpec */
            reader s = {f.data, f.data + f.len};
            pb_field g;
            int rs;
            while ((rs = pb_next(&s, &g)) > 0) {
                if (g.wire != 0) continue;
                if (g.field == 3) model_type = (int64_t)g.v;
                else if (g.field == 35) byte_fallback = g.v != 0;
                else if (g.field == 40) unk_id = (int32_t)g.v;
                else if (g.field == 42) eos_id = (int32_t)g.v;
                else if (g.field == 43) pad_id = (int32_t)g.v;
            }
            if (rs < 0) return bad(t, "field trainer_spec is truncated");
        } else if (f.field == 3 && f.wire == 2) { /* NormalizerSpec */
            reader s = {f.data, f.data + f.len};
            pb_field g;
            int rs;
            while (!st && (rs = pb_next(&s, &g)) > 0) {
                if (g.field == 2 && g.wire == 2 && g.len > 0) {
                    tk_charsmap_free(&t->spm.map);
                    st = tk_charsmap_init(&t->spm.map, g.data, g.len, t->source);
                } else if (g.wire == 0 && g.field == 3) t->spm.add_dummy_prefix = g.v != 0;
                else if (g.wire == 0 && g.field == 4) t->spm.remove_extra_ws = g.v != 0;
                else if (g.wire == 0 && g.field == 5) t->spm.escape_ws = g.v != 0;
            }
            if (!st && rs < 0) return bad(t, "field normalizer_spec is truncated");
        }
    }
    if (st) return st;
    if (rc < 0) return bad(t, "a field is truncated or has an unknown wire type");
    if (n_pieces == 0) return bad(t, "no pieces (field 1)");
    if (model_type != 1)
        return qd_fail(QD_EUNSUPPORTED, "%s: field trainer_spec.model_type: %lld (%s) is not supported; qdit reads Unigram (1) SentencePiece models",
                       t->source, (long long)model_type, model_type == 2 ? "BPE" : model_type == 3 ? "WORD" : model_type == 4 ? "CHAR" : "unknown");
    if (unk_id < 0 || unk_id >= n_pieces || m->types[unk_id] != TK_PIECE_UNKNOWN)
        return qd_fail(QD_EFORMAT, "%s: field trainer_spec.unk_id: %lld is not the id of the UNKNOWN piece", t->source, (long long)unk_id);
    m->unk_id = (int32_t)unk_id;
    m->byte_fallback = byte_fallback;
    if (eos_id >= 0 && eos_id < n_pieces) t->suffix_ids[0] = (int32_t)eos_id, t->n_suffix = 1;
    if (pad_id >= 0 && pad_id < n_pieces) t->pad_id = (int32_t)pad_id;
    return QD_OK;
}
