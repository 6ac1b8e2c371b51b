/* What every fuzz target shares: CHECK names the broken invariant before trapping (the trap alone gives
 * no line in an optimised build), and a rejection must come with a message. */
#ifndef QD_FUZZ_CHECK_H
#define QD_FUZZ_CHECK_H

#include <stdio.h>

#include "core/status.h"

#define CHECK(cond)                                                                                    \
    do {                                                                                               \
        if (!(cond)) {                                                                                 \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);              \
            __builtin_trap();                                                                          \
        }                                                                                              \
    } while (0)

/* a rejected input: an error status and a message for it */
static inline void check_failed(qd_status s) {
    CHECK(s != QD_OK);
    CHECK(qd_last_error()[0] != '\0');
}

#endif
