/* libFuzzer target: tokenizer.json (qd_tokenizer_open_json_buffer, tokenize/tokenizer.h), then
 * encoding and decoding with whatever it accepted (checks in fuzz_tokenizer.h). */
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "fuzz_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    qd_tokenizer *t = (qd_tokenizer *)1;
    qd_status st = qd_tokenizer_open_json_buffer("fuzz/tokenizer.json", (const char *)data, size, &t);
    if (st != QD_OK) {
        CHECK(qd_last_error()[0] != '\0');
        return 0;
    }
    check_encodes(t);
    qd_tokenizer_close(t);
    return 0;
}
