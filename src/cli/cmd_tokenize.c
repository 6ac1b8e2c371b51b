/* qdit tokenize --model PATH (--prompt TEXT | --prompt-file F) — print the token ids a pipeline's
 * tokenizer gives a prompt (docs/cli.md). A debugging aid for the text-encoder stage. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/fs.h"
#include "io/json.h"
#include "qdit.h"
#include "tokenize/tokenizer.h"

static void tokenize_usage(FILE *to) {
    fprintf(to,
            "usage: qdit tokenize --model PATH (--prompt TEXT | --prompt-file FILE) [options]\n"
            "\n"
            "PATH is a tokenizer folder (tokenizer.json, or vocab.json + merges.txt, or spiece.model) or\n"
            "one of those files.\n"
            "\n"
            "  --style S         plain (default: the file's own special tokens), clip (BOS/EOS, pad to 77),\n"
            "                    t5 (</s>, pad to 512), qwen3 (Qwen3 chat template, pad to 512)\n"
            "  --max-length N    truncate (and pad) to N tokens instead of the style's default\n"
            "  --no-pad          do not pad up to the maximum length\n"
            "  --no-thinking     qwen3: enable_thinking=False (adds the empty think block)\n"
            "  --tokens          also print each id's token string\n"
            "  --decode          also print the ids decoded back to text\n");
}

static qd_status open_any(const char *path, qd_tokenizer **t) {
    if (qd_is_dir(path)) return qd_tokenizer_open(path, t);
    if (qd_path_has_suffix(path, ".json") && !qd_path_has_suffix(path, "vocab.json")) return qd_tokenizer_open_json(path, t);
    if (qd_path_has_suffix(path, "vocab.json")) {
        char *dir = qd_path_dirname(path), *merges = dir ? qd_path_join(dir, "merges.txt") : NULL;
        qd_status st = merges ? qd_tokenizer_open_vocab_merges(path, merges, t) : QD_ENOMEM;
        free(dir), free(merges);
        return st;
    }
    return qd_tokenizer_open_spiece(path, t);
}

int qd_cmd_tokenize(int argc, char **argv) {
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},  {"prompt", required_argument, 0, 'p'},
        {"prompt-file", required_argument, 0, 'f'}, {"style", required_argument, 0, 's'},
        {"max-length", required_argument, 0, 'l'}, {"no-pad", no_argument, 0, 'n'},
        {"no-thinking", no_argument, 0, 'k'},   {"tokens", no_argument, 0, 't'},
        {"decode", no_argument, 0, 'd'},        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *model = NULL, *prompt = NULL, *prompt_file = NULL, *style = "plain";
    long max_length = 0;
    bool no_pad = false, no_thinking = false, show_tokens = false, decode = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'p': prompt = optarg; break;
        case 'f': prompt_file = optarg; break;
        case 's': style = optarg; break;
        case 'l': {
            char *end;
            max_length = strtol(optarg, &end, 10);
            if (*end || max_length <= 0 || max_length > 1000000) {
                fprintf(stderr, "qdit tokenize: --max-length '%s' is not a positive integer up to 1000000\n", optarg);
                return 2;
            }
            break;
        }
        case 'n': no_pad = true; break;
        case 'k': no_thinking = true; break;
        case 't': show_tokens = true; break;
        case 'd': decode = true; break;
        case 'h': tokenize_usage(stdout); return 0;
        default: tokenize_usage(stderr); return 2;
        }
    }
    if (!model || (!prompt == !prompt_file) || optind < argc) {
        fprintf(stderr, "qdit tokenize: needs --model and exactly one of --prompt / --prompt-file\n");
        tokenize_usage(stderr);
        return 2;
    }
    qd_prompt_style ps;
    if (!strcmp(style, "plain")) ps = QD_PROMPT_PLAIN;
    else if (!strcmp(style, "clip")) ps = QD_PROMPT_CLIP;
    else if (!strcmp(style, "t5")) ps = QD_PROMPT_T5;
    else if (!strcmp(style, "qwen3")) ps = QD_PROMPT_QWEN3_CHAT;
    else {
        fprintf(stderr, "qdit tokenize: --style '%s' is not one of plain, clip, t5, qwen3\n", style);
        return 2;
    }
    char *text = NULL;
    if (prompt_file && qd_read_small_file(prompt_file, 64u << 20, &text, NULL) != QD_OK) {
        fprintf(stderr, "qdit tokenize: %s\n", qd_last_error());
        return 1;
    }
    qd_tokenizer *t;
    if (open_any(model, &t) != QD_OK) {
        fprintf(stderr, "qdit tokenize: %s\n", qd_last_error());
        free(text);
        return 1;
    }
    qd_prompt_opts o = qd_prompt_defaults(ps);
    o.max_length = (size_t)max_length;
    if (no_pad) o.pad = false;
    if (no_thinking) o.enable_thinking = false;
    qd_token_ids ids;
    int rc = 0;
    if (qd_tokenize_prompt(t, &o, text ? text : prompt, &ids) != QD_OK) {
        fprintf(stderr, "qdit tokenize: %s\n", qd_last_error());
        rc = 1;
    } else {
        for (size_t i = 0; i < ids.n; i++) printf("%s%d", i ? " " : "", ids.ids[i]);
        printf("\n");
        if (show_tokens)
            for (size_t i = 0; i < ids.n; i++) printf("%d\t%s\n", ids.ids[i], qd_tokenizer_token(t, ids.ids[i]));
        char *back;
        if (decode && qd_tokenizer_decode(t, ids.ids, ids.n, true, &back) == QD_OK) {
            printf("%s\n", back);
            free(back);
        }
        qd_token_ids_free(&ids);
    }
    qd_tokenizer_close(t);
    free(text);
    return rc;
}
