/* qdit inspect — placeholder until the inspect command lands. */
#include <stdio.h>
#include "cli/cli.h"
int qd_cmd_inspect(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "not yet\n"); return 1; }
