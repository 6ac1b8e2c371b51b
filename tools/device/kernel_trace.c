/* Every kernel's start and end on the GPU's clock, from CUPTI's activity records, for a program that knows nothing
 * about it: built on the GPU machine as a shared library and named by CUDA_INJECTION64_PATH, which the CUDA driver
 * loads at its initialisation and calls InitializeInjection in (cuda_checks.sh kernel_trace). Unlike Nsight Compute,
 * the kernels run as the program runs them (graphs included, nothing serialised or replayed), so the gaps between
 * them are the program's own. One line per kernel into $KERNEL_TRACE_OUT (default kernel_trace.csv):
 * start_ns,end_ns,stream,graph_node,name. KREC is the newest CUpti_ActivityKernelN the toolkit's header has (the
 * check passes it), since the record's layout changes with N. A tool of the device checks only: never linked into
 * qdit. */
#include <cupti.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef KREC
#define KREC CUpti_ActivityKernel9
#endif

#define TRACE_BUFFER (4u << 20)

static FILE *trace_out;

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    *buffer = aligned_alloc(8, TRACE_BUFFER);
    *size = *buffer ? TRACE_BUFFER : 0;
    *max_records = 0;
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid) {
    (void)ctx, (void)stream, (void)size;
    CUpti_Activity *r = NULL;
    while (cuptiActivityGetNextRecord(buffer, valid, &r) == CUPTI_SUCCESS) {
        if (r->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && r->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
        const KREC *k = (const KREC *)r;
        fprintf(trace_out, "%llu,%llu,%u,%llu,\"%s\"\n", (unsigned long long)k->start, (unsigned long long)k->end, k->streamId,
                (unsigned long long)k->graphNodeId, k->name ? k->name : "?");
    }
    free(buffer);
}

static void flush_at_exit(void) {
    cuptiActivityFlushAll(1);
    if (trace_out) fclose(trace_out), trace_out = NULL;
}

int InitializeInjection(void) {
    const char *path = getenv("KERNEL_TRACE_OUT");
    trace_out = fopen(path ? path : "kernel_trace.csv", "w");
    if (!trace_out) return 0;
    fprintf(trace_out, "start_ns,end_ns,stream,graph_node,name\n");
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
        cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
        fprintf(stderr, "kernel_trace: CUPTI refused the kernel activity\n");
        return 0;
    }
    cuptiActivityFlushPeriod(200); /* buffers written as they fill or every 200 ms: the exit's flush may come after the
                                      runtime's own teardown */
    atexit(flush_at_exit);
    return 1;
}
