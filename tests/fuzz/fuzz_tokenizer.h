/* Shared checks of the tokenizer fuzz targets: whatever a loader accepts must encode every valid
 * UTF-8 text to ids that all name a vocabulary entry, decode back without error, and refuse invalid
 * UTF-8 with a message. A broken invariant traps so libFuzzer keeps the input. */
#ifndef QD_FUZZ_TOKENIZER_H
#define QD_FUZZ_TOKENIZER_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"
#include "tokenize/tokenizer.h"

static inline void check_encodes(const qd_tokenizer *t) {
    static const char *texts[] = {
        "", "a photo of a cat", "  Hello, WORLD!!  it's 2024\n\ttabs  ", "一只猫 🐱 café cafe\xcc\x81",
        "<|endoftext|></s><pad><|im_start|>x<|im_end|>", "\xe2\x96\x81\xe2\x96\x81 \xef\xbc\xa6 \xe2\x85\xa0"};
    CHECK(qd_tokenizer_vocab_size(t) > 0);
    for (size_t k = 0; k < sizeof texts / sizeof texts[0]; k++) {
        int32_t *ids = NULL;
        size_t n = 0;
        qd_status st = qd_tokenizer_encode(t, texts[k], strlen(texts[k]), true, &ids, &n);
        if (st == QD_ENOMEM) continue;
        CHECK(st == QD_OK);
        for (size_t i = 0; i < n; i++) CHECK(qd_tokenizer_token(t, ids[i]) != NULL);
        char *back = NULL;
        CHECK(qd_tokenizer_decode(t, ids, n, k % 2 == 0, &back) == QD_OK);
        free(back);
        free(ids);
        qd_token_ids p;
        qd_prompt_opts o = qd_prompt_defaults((qd_prompt_style)(k % 4));
        o.max_length = 16 + k;
        if (qd_tokenize_prompt(t, &o, texts[k], &p) == QD_OK) {
            CHECK(p.n <= o.max_length || !o.pad);
            for (size_t i = 0; i < p.n; i++) CHECK(qd_tokenizer_token(t, p.ids[i]) != NULL);
            qd_token_ids_free(&p);
        } else {
            CHECK(qd_last_error()[0] != '\0');
        }
    }
    int32_t *ids = NULL;
    size_t n = 0;
    CHECK(qd_tokenizer_encode(t, "ok\xff\xfe", 4, false, &ids, &n) == QD_EINVAL);
    CHECK(qd_last_error()[0] != '\0');
}

#endif
