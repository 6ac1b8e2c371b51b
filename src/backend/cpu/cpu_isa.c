/* Which x86 extensions the CPU backend may use: cpuid bits, gated by the OS having enabled the
 * register state (xgetbv), then capped by QDIT_CPU_ISA=generic|avx2|avx512 so every path can be tested
 * on one machine. Other architectures get the generic path. */
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"

#if defined(__x86_64__)
#include <cpuid.h>

static uint64_t xgetbv0(void) {
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static void detect(qd_cpu_isa *isa) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return;
    bool osxsave = c & (1u << 27);
    bool fma = c & (1u << 12), f16c = c & (1u << 29);
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xE6) == 0xE6, tiles = (xcr0 & 0x60000) == 0x60000;
    unsigned a7 = 0, b7 = 0, c7 = 0, d7 = 0, a71 = 0, b71 = 0, c71 = 0, d71 = 0;
    __cpuid_count(7, 0, a7, b7, c7, d7);
    __cpuid_count(7, 1, a71, b71, c71, d71);
    (void)b71, (void)c71, (void)d71;
    isa->fma = ymm && fma;
    isa->f16c = ymm && f16c;
    isa->avx2 = ymm && (b7 & (1u << 5));
    isa->avx512f = zmm && (b7 & (1u << 16));
    isa->avx512dq = zmm && (b7 & (1u << 17));
    isa->avx512bw = zmm && (b7 & (1u << 30));
    isa->avx512vl = zmm && (b7 & (1u << 31));
    isa->avx512_vnni = zmm && (c7 & (1u << 11));
    isa->avx512_bf16 = zmm && (a71 & (1u << 5));
    isa->avx_vnni = ymm && (a71 & (1u << 4));
    isa->amx_bf16 = tiles && (d7 & (1u << 22));
    isa->amx_int8 = tiles && (d7 & (1u << 25));
}
#else
static void detect(qd_cpu_isa *isa) { (void)isa; }
#endif

static qd_cpu_isa the_isa;
static int isa_ready;

const qd_cpu_isa *qd_cpu_isa_get(void) {
    if (__atomic_load_n(&isa_ready, __ATOMIC_ACQUIRE)) return &the_isa;
    qd_cpu_isa isa;
    memset(&isa, 0, sizeof isa);
    detect(&isa);
    const char *cap = getenv("QDIT_CPU_ISA");
    if (cap && (!strcmp(cap, "generic") || !strcmp(cap, "avx2"))) {
        bool keep_avx2 = !strcmp(cap, "avx2");
        bool avx2 = isa.avx2 && keep_avx2, fma = isa.fma && keep_avx2, f16c = isa.f16c && keep_avx2;
        bool avx_vnni = isa.avx_vnni && keep_avx2;
        memset(&isa, 0, sizeof isa);
        isa.avx2 = avx2, isa.fma = fma, isa.f16c = f16c, isa.avx_vnni = avx_vnni;
    } else if (cap && !strcmp(cap, "avx512")) {
        isa.amx_bf16 = isa.amx_int8 = false;
    }
    isa.level = isa.amx_bf16 || isa.amx_int8 ? "amx"
                : isa.avx512_bf16 && isa.avx512_vnni ? "avx512_bf16_vnni"
                : isa.avx512f && isa.avx512bw      ? "avx512"
                : isa.avx2 && isa.fma              ? "avx2"
                                                   : "generic";
    the_isa = isa; /* identical on every thread that races here */
    __atomic_store_n(&isa_ready, 1, __ATOMIC_RELEASE);
    return &the_isa;
}
