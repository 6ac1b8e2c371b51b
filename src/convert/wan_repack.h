/* `qdit convert wan-repack`: an msModelSlim-quantized Wan2.2 (original Wan names) and its BF16 diffusers
 * base → one diffusers pipeline folder that qdit and SGLang load as msModelSlim, as SGLang's
 * `wan_repack.py` writes it (quant-sglang.md §5.4, §4.10, §6.5):
 *   - the base folder copied whole (symbolic links followed) except every entry named `transformer`
 *     (and `transformer_2` for the A14B "cascade" models), at any depth, as shutil's ignore_patterns does;
 *   - per transformer: the quant folder (A14B: `high_noise_model/` → transformer, `low_noise_model/` →
 *     transformer_2; TI2V-5B: the quant folder itself → transformer) gives its tensors from every
 *     `quant_model_weight*.safetensors` (sorted) and the first `quant_model_description*.json`; each
 *     tensor name is renamed by the ordered substring replacements of qd_wan_repack_rules (each applied to
 *     every occurrence, in order: the norm2/norm3 swap goes through a placeholder, `cross_attn.k_img` becomes
 *     `attn2.to_k_img` and then `attn2.add_k_proj`); written to `<t>/diffusion_pytorch_model.safetensors`
 *     with the same dtypes, shapes and bytes, no metadata;
 *   - `<t>/quant_model_description.json`: the description with each key that names a renamed tensor
 *     renamed and moved to the end (in tensor order: files sorted, names sorted within a file), as the
 *     Python dict pop/insert does; other keys (model_quant_type, group_size, …) kept in place; indent 2;
 *   - `<t>/config.json` copied from the base's `<t>/config.json` when it has one.
 * Two tensors that end up with one name are an error (the Python tool would drop one silently). The
 * output folder is written whole or not at all (convert/output.h); --overwrite replaces only an earlier
 * wan-repack output. One tensor is read and written at a time. */
#ifndef QD_CONVERT_WAN_REPACK_H
#define QD_CONVERT_WAN_REPACK_H

#include <stdbool.h>
#include <stddef.h>

#include "qdit.h"

typedef struct {
    const char *model_type;    /* Wan2.2-T2V-A14B, Wan2.2-I2V-A14B, Wan2.2-TI2V-5B */
    const char *original_path; /* the BF16 diffusers base */
    const char *quant_path;    /* msModelSlim's output */
    const char *output_path;
    bool overwrite;
} qd_wan_repack_args;

typedef struct {
    int transformers;
    long long tensors, renamed, description_keys_renamed, files_copied;
    unsigned long long bytes;
} qd_wan_repack_report;

/* The replacements, in order ({from, to} pairs, NULL-terminated), and one name through them (`out` of
 * `n` bytes; false when it does not fit). */
extern const char *const qd_wan_repack_rules[][2];
bool qd_wan_repack_rename(const char *name, char *out, size_t n);

qd_status qd_convert_wan_repack(const qd_wan_repack_args *a, qd_wan_repack_report *rep);

#endif
