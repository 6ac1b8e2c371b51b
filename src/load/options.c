/* qd_options defaults (the struct is in include/qdit.h; flags in src/cli/cli_options.c). */
#include <string.h>

#include "qdit.h"

void qd_options_init(qd_options *o) {
    memset(o, 0, sizeof *o);
    o->enable_svdquant = -1;
    o->dit_layerwise_offload = o->dit_cpu_offload = o->pin_cpu_memory = -1;
}
