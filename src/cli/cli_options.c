/* Model and quantization flags with SGLang's names (see cli_options.h). */
#include "cli/cli_options.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/status.h"

typedef enum { FLAG_STRING, FLAG_INT, FLAG_BOOL, FLAG_LIST } flag_kind;

typedef struct {
    const char *name;
    flag_kind kind;
    size_t offset; /* into qd_options */
} flag_def;

#define OPT(field) offsetof(qd_options, field)
static const flag_def flags[] = {
    {"--model-path", FLAG_STRING, OPT(model_path)},
    {"--model-id", FLAG_STRING, OPT(model_id)},
    {"--transformer-weights-path", FLAG_STRING, OPT(transformer_weights_path)},
    /* legacy spellings SGLang's NunchakuSVDQuantArgs.from_dict still accepts */
    {"--transformer-quantized-path", FLAG_STRING, OPT(transformer_weights_path)},
    {"--quantized-model-path", FLAG_STRING, OPT(transformer_weights_path)},
    {"--quantization", FLAG_STRING, OPT(quantization)},
    {"--quantization-ignored-layers", FLAG_LIST, OPT(ignored_layers)},
    {"--enable-svdquant", FLAG_BOOL, OPT(enable_svdquant)},
    {"--quantization-precision", FLAG_STRING, OPT(quantization_precision)},
    {"--quantization-rank", FLAG_INT, OPT(quantization_rank)},
    {"--quantization-act-unsigned", FLAG_BOOL, OPT(quantization_act_unsigned)},
    {"--dit-layerwise-offload", FLAG_BOOL, OPT(dit_layerwise_offload)},
    {"--dit-cpu-offload", FLAG_BOOL, OPT(dit_cpu_offload)},
    {"--pin-cpu-memory", FLAG_BOOL, OPT(pin_cpu_memory)},
    {"--dit-offload-budget-mib", FLAG_INT, OPT(dit_offload_budget_mib)},
};

const char *qd_cli_model_flags_help(void) {
    return "model and quantization (SGLang's flags):\n"
           "  --model-path PATH                 pipeline folder or cached hub repo id (org/name)\n"
           "  --<component>-path PATH           replace one component (folder or .safetensors file),\n"
           "                                    e.g. --transformer-path, --transformer-2-path, --vae-path\n"
           "  --transformer-weights-path PATH   replacement weights for the primary transformer (file,\n"
           "                                    folder, or cached repo id); not applied to transformer_2\n"
           "  --quantization METHOD             fp8, mxfp4, mxfp8, modelopt, modelopt_fp8, modelopt_fp4,\n"
           "                                    modelslim, … (default: detect from the checkpoint)\n"
           "  --quantization-ignored-layers P…  keep layers whose name contains any P unquantized\n"
           "  --enable-svdquant [true|false]    Nunchaku SVDQuant (auto-enabled by svdq-* file names)\n"
           "  --quantization-precision int4|nvfp4, --quantization-rank N, --quantization-act-unsigned\n"
           "  --model-id NAME                   architecture hint for local mirrors (FLUX.1-dev, …)\n"
           "  --dit-layerwise-offload [true|false]\n"
           "                                    GPU: stream the transformer's blocks from pinned host memory while\n"
           "                                    the previous block computes (default: only when they do not fit)\n"
           "  --dit-cpu-offload [true|false]    GPU: keep the whole transformer in host memory between runs\n"
           "  --pin-cpu-memory [true|false]     accepted (offloaded weights are always pinned)\n"
           "  --dit-offload-budget-mib N        layerwise offload: GPU memory for the blocks' weights (resident blocks\n"
           "                                    + the two streaming slots; default 0: every block streams)\n";
}

static bool parse_bool(const char *s, int *out) {
    static const char *const yes[] = {"true", "1", "yes", "on"}, *const no[] = {"false", "0", "no", "off"};
    for (int i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i])) { *out = 1; return true; }
        if (!strcasecmp(s, no[i])) { *out = 0; return true; }
    }
    return false;
}

static bool is_flag(const char *s) { return s[0] == '-' && s[1] == '-' && s[2]; }

qd_status qd_cli_parse_model_flags(int argc, char **argv, int first, qd_options *o, char **rest, int *n_rest) {
    *n_rest = 0;
    for (int i = first; i < argc; i++) {
        char *arg = argv[i];
        if (!is_flag(arg)) {
            rest[(*n_rest)++] = arg;
            continue;
        }
        /* split --name=value */
        const char *eq = strchr(arg, '=');
        size_t name_len = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *inline_value = eq ? eq + 1 : NULL;
        const flag_def *def = NULL;
        for (size_t k = 0; k < sizeof flags / sizeof *flags; k++)
            if (strlen(flags[k].name) == name_len && !strncmp(flags[k].name, arg, name_len)) def = &flags[k];

        if (!def) {
            /* an undeclared --<component>-path is a component override */
            if (name_len > 7 && !strncmp(arg + name_len - 5, "-path", 5)) {
                const char *value = inline_value;
                if (!value) {
                    if (i + 1 >= argc || is_flag(argv[i + 1])) {
                        return qd_fail(QD_EINVAL, "%.*s: expected a folder or .safetensors file after it",
                                       (int)name_len, arg);
                    }
                    value = argv[++i];
                }
                if (o->n_component_paths == QD_MAX_COMPONENT_PATHS) {
                    return qd_fail(QD_EINVAL, "%.*s: more than %d component paths", (int)name_len, arg,
                                   QD_MAX_COMPONENT_PATHS);
                }
                /* the key is rewritten in place: "--transformer-2-path" → "transformer_2" */
                char *key = arg + 2;
                key[name_len - 2 - 5] = '\0';
                for (char *p = key; *p; p++)
                    if (*p == '-') *p = '_';
                /* a repeated component replaces the earlier one, as argparse would */
                size_t slot = o->n_component_paths;
                for (size_t k = 0; k < o->n_component_paths; k++)
                    if (!strcmp(o->component_paths[k].component, key)) slot = k;
                o->component_paths[slot].component = key;
                o->component_paths[slot].path = value;
                if (slot == o->n_component_paths) o->n_component_paths++;
                continue;
            }
            rest[(*n_rest)++] = arg; /* the command's own flag */
            continue;
        }

        char *field = (char *)o + def->offset;
        if (def->kind == FLAG_BOOL) {
            int v = 1;
            if (inline_value) {
                if (!parse_bool(inline_value, &v)) {
                    return qd_fail(QD_EINVAL, "%s: expected true or false, got '%s'", def->name, inline_value);
                }
            } else if (i + 1 < argc && parse_bool(argv[i + 1], &v)) {
                i++;
            }
            *(int *)field = v;
            continue;
        }
        if (def->kind == FLAG_LIST) {
            /* nargs="+": every following argument up to the next flag; the =form gives one */
            size_t before = o->n_ignored_layers;
            if (inline_value) {
                if (!*inline_value) return qd_fail(QD_EINVAL, "%s: empty pattern", def->name);
                o->ignored_layers[o->n_ignored_layers++] = inline_value;
            }
            while (!inline_value && i + 1 < argc && !is_flag(argv[i + 1])) {
                if (o->n_ignored_layers == QD_MAX_IGNORED_LAYERS) {
                    return qd_fail(QD_EINVAL, "%s: more than %d patterns", def->name, QD_MAX_IGNORED_LAYERS);
                }
                if (!*argv[i + 1]) return qd_fail(QD_EINVAL, "%s: empty pattern", def->name);
                o->ignored_layers[o->n_ignored_layers++] = argv[++i];
            }
            if (o->n_ignored_layers == before) {
                return qd_fail(QD_EINVAL, "%s: expected one or more layer-name patterns", def->name);
            }
            continue;
        }
        const char *value = inline_value;
        if (!value) {
            if (i + 1 >= argc || is_flag(argv[i + 1])) {
                return qd_fail(QD_EINVAL, "%s: expected a value after it", def->name);
            }
            value = argv[++i];
        }
        if (def->kind == FLAG_STRING) {
            if (!*value) return qd_fail(QD_EINVAL, "%s: empty value", def->name);
            *(const char **)field = value;
        } else {
            char *end;
            errno = 0;
            long v = strtol(value, &end, 10);
            if (errno || *end || end == value || v <= 0 || v > 65536) {
                return qd_fail(QD_EINVAL, "%s: expected a positive integer, got '%s'", def->name, value);
            }
            *(int *)field = (int)v;
        }
    }
    return QD_OK;
}

int qd_cli_begin(const char *command, int argc, char **argv, qd_options *o, char ***rest, int *n_rest) {
    qd_options_init(o);
    *n_rest = 0;
    if (!(*rest = calloc((size_t)argc + 1, sizeof **rest))) return 1;
    if (qd_cli_parse_model_flags(argc, argv, 1, o, *rest, n_rest)) {
        fprintf(stderr, "qdit %s: %s\n", command, qd_last_error());
        free(*rest);
        *rest = NULL;
        return 2;
    }
    return 0;
}

static int calib_int(const char *cmd, const char *flag, const char *v, long max, long *out) {
    char *end = NULL;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || x < 1 || x > max) {
        fprintf(stderr, "qdit convert %s: %s %s: expected a whole number from 1 to %ld\n", cmd, flag, v ? v : "(missing)", max);
        return -1;
    }
    *out = x;
    return 1;
}

int qd_cli_calib_flag(const char *cmd, int argc, char **argv, int *i, qd_calib_args *a) {
    const char *f = argv[*i], *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    long x = 0;
    int rc = 1;
    if (!strcmp(f, "--calibrate") || !strcmp(f, "--pipeline")) {
        if (!v) {
            fprintf(stderr, "qdit convert %s: %s needs a value\n", cmd, f);
            return -1;
        }
        *(f[2] == 'c' ? &a->prompts : &a->pipeline) = v;
    } else if (!strcmp(f, "--calib-steps")) {
        if ((rc = calib_int(cmd, f, v, 1000, &x)) > 0) a->steps = (int)x;
    } else if (!strcmp(f, "--calib-size")) {
        if ((rc = calib_int(cmd, f, v, 4096, &x)) > 0) a->size = x;
    } else {
        return 0;
    }
    if (rc > 0) (*i)++;
    return rc;
}

const char *qd_cli_calib_flags_help(const char *what) {
    static char text[1024];
    snprintf(text, sizeof text,
             "  --calibrate PROMPTS_FILE  run the pipeline on these prompts (one a line, seed = line number from 0) and\n"
             "                            %s\n"
             "  --pipeline DIR            the pipeline to calibrate with (default: IN's parent, if it has model_index.json)\n"
             "  --calib-steps N           denoising steps per prompt (default 4)\n"
             "  --calib-size PX           image side for calibration, a multiple of 16 (default 256)\n",
             what);
    return text;
}
