/* libFuzzer target: SentencePiece model files (qd_tokenizer_open_spiece_buffer, the protobuf reader
 * of tokenize/spiece.c), then encoding and decoding with whatever it accepted (fuzz_tokenizer.h). */
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "fuzz_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qd_tokenizer *t = (qd_tokenizer *)1;
    qd_status st = qd_tokenizer_open_spiece_buffer("fuzz/spiece.model", data, size, &t);
    if (st != QD_OK) {
        CHECK(qd_last_error()[0] != '\0');
        return 0;
    }
    check_encodes(t);
    qd_tokenizer_close(t);
    return 0;
}
