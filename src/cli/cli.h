/* The qdit command line: one cmd_*.c per sub-command, each an int (*)(int argc, char **argv) that
 * returns the process exit status. main.c only dispatches. */
#ifndef QD_CLI_H
#define QD_CLI_H

int qd_cmd_inspect(int argc, char **argv);
int qd_cmd_forward(int argc, char **argv);
int qd_cmd_convert(int argc, char **argv);
int qd_cmd_convert_activation_ranges(int argc, char **argv);
int qd_cmd_convert_dequantize(int argc, char **argv);
int qd_cmd_convert_fp8(int argc, char **argv);
int qd_cmd_convert_nvfp4_mixed(int argc, char **argv);
int qd_cmd_convert_modelopt_fp8(int argc, char **argv);
int qd_cmd_convert_modelopt_nvfp4(int argc, char **argv);
int qd_cmd_convert_svdquant(int argc, char **argv);
int qd_cmd_convert_wan_repack(int argc, char **argv);
int qd_cmd_tokenize(int argc, char **argv);
int qd_cmd_generate(int argc, char **argv);
int qd_cmd_bench(int argc, char **argv);

#endif
