/* Tests for core/mem.c: qd_alloc_big and qd_calloc_big keep malloc's contract (every byte usable, free() frees it,
 * calloc's zeros), with 64-byte alignment below QD_BIG_BYTES and 2 MiB alignment from there on (the huge pages'
 * size, which madvise needs). Sizes are drawn fresh on every run (QDIT_TEST_SEED replays). Whether the kernel then
 * backs a buffer with huge pages depends on the machine (THP mode, fragmentation), so that is printed, not asserted. */
#include "test_util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

static uint64_t rng;

#define HUGE_PAGE ((size_t)2 << 20)

/* every byte written with a pattern of its offset, then read back */
static void fill_and_check(uint8_t *p, size_t n, uint8_t salt) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 131u + salt);
    for (size_t i = 0; i < n; i++)
        if (p[i] != (uint8_t)(i * 131u + salt)) fail_msg("byte %zu of %zu changed", i, n);
}

static size_t draw_size(bool big) {
    const size_t r = (size_t)(qt_rand_u64(&rng) % (big ? (size_t)12 << 20 : QD_BIG_BYTES - 1));
    return big ? QD_BIG_BYTES + r : 1 + r;
}

static void test_alignment_and_contents(void **state) {
    (void)state;
    for (int t = 0; t < 12; t++) {
        const bool big = t % 2;
        const size_t n = draw_size(big);
        uint8_t *p = qd_alloc_big(n);
        assert_non_null(p);
        if ((uintptr_t)p % (big ? HUGE_PAGE : 64)) fail_msg("%zu bytes at %p: not %s-aligned", n, (void *)p, big ? "2 MiB" : "64-byte");
        fill_and_check(p, n, (uint8_t)t);
        free(p);
    }
    uint8_t *z = qd_alloc_big(0); /* a usable pointer, as malloc(0) may give */
    assert_non_null(z);
    free(z);
}

static void test_calloc_zeroes(void **state) {
    (void)state;
    for (int t = 0; t < 8; t++) {
        const size_t n = draw_size(t % 2);
        /* dirty memory first, so that a reused chunk would show a missing memset */
        uint8_t *d = qd_alloc_big(n);
        assert_non_null(d);
        memset(d, 0xA5, n);
        free(d);
        uint8_t *p = qd_calloc_big(n);
        assert_non_null(p);
        for (size_t i = 0; i < n; i++)
            if (p[i]) fail_msg("byte %zu of %zu is %d, not 0", i, n, p[i]);
        free(p);
    }
}

/* AnonHugePages of the mapping that holds p, from /proc/self/smaps (-1 where it cannot be read) */
static long huge_kib_at(const void *p) {
    FILE *f = fopen("/proc/self/smaps", "r");
    if (!f) return -1;
    char line[512];
    bool inside = false;
    long kib = -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's first line; its fields follow */
            inside = (uintptr_t)p >= lo && (uintptr_t)p < hi;
            continue;
        }
        if (inside && sscanf(line, "AnonHugePages: %ld kB", &kib) == 1) break;
    }
    fclose(f);
    return kib;
}

static void test_huge_pages_report(void **state) {
    (void)state;
    const size_t n = (size_t)64 << 20;
    uint8_t *p = qd_alloc_big(n);
    assert_non_null(p);
    memset(p, 1, n);
    print_message("[ info     ] a touched 64 MiB qd_alloc_big buffer: AnonHugePages %ld kB (THP mode and fragmentation decide)\n", huge_kib_at(p));
    free(p);
}

int main(void) {
    rng = qt_seed();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alignment_and_contents),
        cmocka_unit_test(test_calloc_zeroes),
        cmocka_unit_test(test_huge_pages_report),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
