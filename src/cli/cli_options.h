/* Command-line flags shared by the commands that load a model (inspect, generate, forward, convert,
 * serve), parsed with SGLang's names and rules (quant-sglang.md §1.1–1.2):
 *   - `--flag value` and `--flag=value`;
 *   - any undeclared `--<name>-path` is a component override: key = name with '-' → '_'
 *     (`--transformer-2-path` → `transformer_2`);
 *   - `--quantization-ignored-layers` takes one or more values, up to the next `--` flag;
 *   - the booleans (`--enable-svdquant`, `--dit-layerwise-offload`, `--dit-cpu-offload`, `--pin-cpu-memory`) alone
 *     mean true; they also take an explicit true/false (StoreBoolean). */
#ifndef QD_CLI_OPTIONS_H
#define QD_CLI_OPTIONS_H

#include "convert/calibrate.h"
#include "qdit.h"

/* Parse argv[first..argc) into `o`; arguments that are not model/quantization flags are collected,
 * in order, into `rest` (which must have room for argc entries) for the command's own parser.
 * Errors (a flag missing its value, a bad number or boolean, too many patterns) return QD_EINVAL with
 * a message naming the flag. */
qd_status qd_cli_parse_model_flags(int argc, char **argv, int first, qd_options *o, char **rest, int *n_rest);

/* What every command taking the model flags starts with: options initialised, the model flags parsed
 * out of argv[1..], the rest (allocated; the caller frees it) for the command's own flags. Returns 0, or
 * the exit status after printing "qdit <command>: <message>" (2 for a bad flag, 1 when out of memory). */
int qd_cli_begin(const char *command, int argc, char **argv, qd_options *o, char ***rest, int *n_rest);

/* The help text block for these flags. */
const char *qd_cli_model_flags_help(void);

/* The calibration flags of the converters (convert/calibrate.h): --calibrate PROMPTS_FILE, --pipeline DIR,
 * --calib-steps N, --calib-size PX. If argv[*i] is one of them, store it in `a`, step *i past its value
 * and return 1; return 0 for any other argument, -1 after printing "qdit convert <cmd>: <message>" for a
 * bad or missing value. */
int qd_cli_calib_flag(const char *cmd, int argc, char **argv, int *i, qd_calib_args *a);
/* Their help lines; `what` says what --calibrate does for the converter. (A static buffer.) */
const char *qd_cli_calib_flags_help(const char *what);

#endif
