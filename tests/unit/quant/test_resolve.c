/* Quantization resolution, table-driven: one row per rule of SGLang's detection order and per error
 * condition, each citing the section of ../shared/spec/quant-sglang.md it checks (qdit's deliberate
 * additions cite DESIGN or say "qdit"). Every row builds a small component on disk (configs and
 * safetensors headers), parses real command-line flags, and resolves. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli_options.h"
#include "io/ckpt.h"
#include "load/sources.h"
#include "quant/resolve.h"
#include "test_util.h"

static char *D; /* the row's folder */

static void file(const char *rel, const char *text) {
    char *p = qt_path(D, rel);
    qt_write_text(p, text);
    free(p);
}

/* A safetensors file from a compact spec: "name:DTYPE:2x3;name2:F32:;marker:U8:json={...}" with
 * optional metadata JSON (an object of strings). Data bytes are a pattern, except U8 json= tensors. */
static void st(const char *rel, const char *meta, const char *spec) {
    char header[16384];
    unsigned char data[65536];
    size_t off = 0, h = 0;
    h += (size_t)snprintf(header + h, sizeof header - h, "{");
    if (meta) h += (size_t)snprintf(header + h, sizeof header - h, "\"__metadata__\":%s", meta);
    char buf[8192];
    snprintf(buf, sizeof buf, "%s", spec);
    bool first = meta == NULL;
    for (char *save = NULL, *item = strtok_r(buf, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
        char *name = item, *dtype = strchr(name, ':');
        *dtype++ = '\0';
        char *shape = strchr(dtype, ':');
        *shape++ = '\0';
        char *json = strstr(shape, "json=");
        char shape_json[128] = "[";
        size_t n = 1;
        long elements = 1, bytes;
        if (json) {
            json += 5;
            bytes = (long)strlen(json);
            snprintf(shape_json, sizeof shape_json, "[%ld]", bytes);
            memcpy(data + off, json, (size_t)bytes);
        } else {
            for (char *s2 = NULL, *d = strtok_r(shape, "x", &s2); d; d = strtok_r(NULL, "x", &s2)) {
                n += (size_t)snprintf(shape_json + n, sizeof shape_json - n, "%s%s", n > 1 ? "," : "", d);
                elements *= atol(d);
            }
            snprintf(shape_json + n, sizeof shape_json - n, "]");
            int bits = !strcmp(dtype, "F32") || !strcmp(dtype, "I32") ? 32 : !strcmp(dtype, "BF16") || !strcmp(dtype, "F16") ? 16 : 8;
            bytes = elements * bits / 8;
            for (long i = 0; i < bytes; i++) data[off + (size_t)i] = (unsigned char)(i * 13 + 1);
        }
        h += (size_t)snprintf(header + h, sizeof header - h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                              first ? "" : ",", name, dtype, shape_json, off, off + (size_t)bytes);
        first = false;
        off += (size_t)bytes;
    }
    snprintf(header + h, sizeof header - h, "}");
    char *p = qt_path(D, rel);
    qt_write_raw_safetensors(p, header, data, off);
    free(p);
}

#define BF16_LAYERS "x_embedder.weight:BF16:8x16;blocks.0.attn.to_q.weight:BF16:16x16;blocks.0.norm.weight:BF16:16"
#define FP8_LAYER(n) n ".weight:F8_E4M3:16x16;" n ".weight_scale:F32:;" n ".input_scale:F32:"
#define NVFP4_LAYER(n) n ".weight:U8:16x16;" n ".weight_scale:F8_E4M3:16x2;" n ".weight_scale_2:F32:;" n ".input_scale:F32:"
#define CLS "{\"_class_name\":\"FluxTransformer2DModel\""

/* setups: the base component is D/transformer; overrides live in D/w */
static void bf16_base(void) {
    file("transformer/config.json", CLS "}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, BF16_LAYERS);
}
static void s_none(void) { bf16_base(); }
static void s_fp8_static(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"static\",\"ignored_layers\":[\"model.x_embedder\"]}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, "x_embedder.weight:BF16:8x16;" FP8_LAYER("blocks.0.attn.to_q"));
}
static void s_fp8_no_scheme(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"fp8\"}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, FP8_LAYER("a"));
}
static void s_fp8_bad_scheme(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"tensorwise\"}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, FP8_LAYER("a"));
}
static void s_fp8_block_static(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"static\",\"weight_block_size\":[128,128]}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, FP8_LAYER("a"));
}
static void s_fp8_block_3d(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"dynamic\",\"weight_block_size\":[1,128,128]}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, FP8_LAYER("a"));
}
static void s_text_config(void) {
    file("transformer/config.json", CLS ",\"text_config\":{\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"dynamic\"}}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, FP8_LAYER("a"));
}
static void s_modelopt_flat(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"modelopt\",\"quant_algo\":\"FP8\",\"ignore\":[\"x_embedder\",\"*norm*\"]}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, "x_embedder.weight:BF16:8x16;" FP8_LAYER("blocks.0.attn.to_q"));
}
static void s_modelopt_nested(void) {
    file("transformer/config.json", CLS "}");
    file("transformer/hf_quant_config.json", "{\"producer\":{\"name\":\"modelopt\"},\"quantization\":{\"quant_algo\":\"FP8\",\"exclude_modules\":[\"x_embedder\"]}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, "x_embedder.weight:BF16:8x16;" FP8_LAYER("blocks.0.attn.to_q"));
}
static void modelopt_algo(const char *method, const char *algo) {
    char cfg[512];
    snprintf(cfg, sizeof cfg, CLS ",\"quantization_config\":{\"quant_method\":\"%s\",\"quant_algo\":\"%s\",\"ignore\":[]}}", method, algo);
    file("transformer/config.json", cfg);
    st("transformer/diffusion_pytorch_model.safetensors", NULL, FP8_LAYER("a"));
}
static void s_modelopt_mixed(void) { modelopt_algo("modelopt", "MIXED_PRECISION"); }
static void s_modelopt_disagree(void) { modelopt_algo("modelopt_fp8", "NVFP4"); }
static void s_modelopt_awq(void) { modelopt_algo("modelopt", "NVFP4_AWQ"); }
static void s_modelopt_unknown(void) { modelopt_algo("modelopt", "INT4_AWQ"); }
static void s_nvfp4_config(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"modelopt\",\"quant_algo\":\"NVFP4\",\"group_size\":16,\"ignore\":[\"stale.entry\"]}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, "x_embedder.weight:BF16:8x16;" NVFP4_LAYER("blocks.0.attn.to_q"));
}
static void s_nvfp4_inferred(void) {
    file("transformer/config.json", CLS "}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL,
       "x_embedder.weight:BF16:8x16;" NVFP4_LAYER("blocks.0.attn.to_q") ";" FP8_LAYER("blocks.0.attn.to_k"));
}
static void s_nvfp4_packed_qkv(void) {
    file("transformer/config.json", "{\"_class_name\":\"Flux2Transformer2DModel\"}");
    st("transformer/flux2-dev-nvfp4-mixed.safetensors", NULL,
       NVFP4_LAYER("double_blocks.0.img_attn.qkv") ";double_blocks.0.img_attn.proj.weight:BF16:16x16");
}
static void s_nvfp4_no_group(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"modelopt\",\"quant_algo\":\"NVFP4\",\"ignore\":[]}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, "a.weight:BF16:4x4");
}
static void s_nvfp4_inconsistent(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"modelopt\",\"quantization\":{\"quant_algo\":\"NVFP4\",\"exclude_modules\":[],\"group_size\":16},\"config_groups\":{\"g\":{\"weights\":{\"group_size\":32}}}}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, "a.weight:BF16:4x4");
}
static void s_nvfp4_no_algo(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"modelopt_fp4\",\"group_size\":16,\"ignore\":[]}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, "a.weight:BF16:4x4");
}
static void s_modelslim(void) {
    file("transformer/config.json", CLS "}");
    file("transformer/quant_model_description_w8a8.json", "{\"model_quant_type\":\"W8A8\",\"version\":\"1.0.0\",\"blocks.0.attn.to_q.weight\":\"W8A8\",\"x_embedder.weight\":\"FLOAT\"}");
    st("transformer/quant_model_weights.safetensors", NULL, "x_embedder.weight:BF16:8x16;blocks.0.attn.to_q.weight:I8:16x16");
}
static void override_base_and(const char *w_config, const char *w_meta, const char *w_spec) {
    bf16_base();
    if (w_config) file("w/config.json", w_config);
    st("w/model.safetensors", w_meta, w_spec);
}
static void s_override_declared(void) {
    override_base_and(CLS ",\"quantization_config\":{\"quant_method\":\"modelopt\",\"quant_algo\":\"FP8\",\"ignore\":[]}}", NULL, FP8_LAYER("a"));
}
static void s_override_undeclared(void) {
    bf16_base();
    st("w/model.safetensors", NULL, "a.weight:F8_E4M3:16x16;a.weight_scale:F32:");
}
static void s_override_conflict(void) {
    bf16_base();
    st("w/model-00001-of-00002.safetensors", "{\"quantization_config\":\"{\\\"quant_method\\\":\\\"fp8\\\",\\\"activation_scheme\\\":\\\"static\\\"}\"}", FP8_LAYER("a"));
    st("w/model-00002-of-00002.safetensors", "{\"quantization_config\":\"{\\\"quant_method\\\":\\\"fp8\\\",\\\"activation_scheme\\\":\\\"dynamic\\\"}\"}", FP8_LAYER("b"));
}
static void s_override_methods_conflict(void) {
    bf16_base();
    st("w/model-00001-of-00002.safetensors", "{\"_quantization_metadata\":\"{\\\"quant_method\\\":\\\"fp8\\\",\\\"activation_scheme\\\":\\\"static\\\"}\"}", FP8_LAYER("a"));
    st("w/model-00002-of-00002.safetensors", "{\"_quantization_metadata\":\"{\\\"quant_method\\\":\\\"modelopt\\\",\\\"quant_algo\\\":\\\"FP8\\\",\\\"ignore\\\":[]}\"}", FP8_LAYER("b"));
}
static void s_override_config_wins(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"static\"}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, FP8_LAYER("a"));
    file("w/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"dynamic\"}}");
    st("w/model.safetensors", NULL, "a.weight:F8_E4M3:16x16;a.weight_scale:F32:");
}
static void s_override_unquantized(void) {
    file("transformer/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"fp8\",\"activation_scheme\":\"static\"}}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, FP8_LAYER("a"));
    st("w/model.safetensors", NULL, "a.weight:BF16:16x16");
}
static void s_override_meta_no_method(void) {
    bf16_base();
    st("w/model.safetensors", "{\"_quantization_metadata\":\"{\\\"quant_algo\\\":\\\"NVFP4\\\"}\"}", NVFP4_LAYER("a") ";b.weight:BF16:16x16");
}
static void s_override_mixed(void) {
    bf16_base();
    st("w/flux-nvfp4.safetensors", NULL, "z.weight:BF16:16x16");
    st("w/flux-nvfp4-mixed.safetensors", NULL, NVFP4_LAYER("a"));
}
static void s_comfy_meta_form(void) {
    bf16_base();
    st("w/model.safetensors",
       "{\"_quantization_metadata\":\"{\\\"format_version\\\":\\\"1.0\\\",\\\"layers\\\":{\\\"a\\\":{\\\"format\\\":\\\"float8_e4m3fn\\\"}}}\"}",
       "a.weight:F8_E4M3:16x16;a.weight_scale:F32:;b.weight:BF16:16x16");
}
static void s_comfy_markers(void) {
    bf16_base();
    st("w/model.safetensors", NULL, NVFP4_LAYER("a") ";a.comfy_quant:U8:json={\"format\":\"nvfp4\"}");
}
static void s_comfy_missing(void) {
    bf16_base();
    st("w/model.safetensors", NULL, "a.weight:F8_E4M3:16x16;a.weight_scale:F32:;a.comfy_quant:U8:json={\"format\":\"float8_e4m3fn\"};b.weight:F8_E4M3:16x16;b.weight_scale:F32:");
}
static void s_comfy_unsupported(void) {
    bf16_base();
    st("w/model.safetensors", NULL, "a.weight:I8:16x8;a.weight_scale:F32:16;a.comfy_quant:U8:json={\"format\":\"convrot_w4a4\"}");
}
static void s_comfy_mxfp8_global(void) {
    bf16_base();
    st("w/model.safetensors", "{\"quant_format\":\"mxfp8\"}", "a.weight:F8_E4M3:16x64;a.weight_scale:U8:16x2;b.weight:BF16:16x16");
}
static void s_comfy_mxfp8_bad(void) {
    bf16_base();
    st("w/model.safetensors", "{\"quant_format\":\"mxfp8\"}", "a.weight:F8_E4M3:16x64;a.weight_scale:U8:16x4");
}
#define SVDQ_META "{\"config\":\"{\\\"_class_name\\\":\\\"FluxTransformer2DModel\\\"}\",\"quantization_config\":\"{\\\"method\\\":\\\"svdquant\\\",\\\"rank\\\":32}\"}"
static void s_svdq_int4(void) {
    bf16_base();
    st("w/svdq-int4_r32-flux.1-dev.safetensors", SVDQ_META,
       "transformer_blocks.0.qkv_proj.qweight:I8:128x64;transformer_blocks.0.qkv_proj.wscales:BF16:2x128;norm_out.linear.weight:BF16:16x16");
}
static void s_svdq_fp4(void) {
    bf16_base();
    st("w/svdq-fp4_r128-flux.1-dev.safetensors", SVDQ_META,
       "transformer_blocks.0.qkv_proj.qweight:I8:128x64;transformer_blocks.0.qkv_proj.wscales:F8_E4M3:8x128");
}
static void s_svdq_int4_named_fp8(void) {
    bf16_base();
    st("w/svdq-int4_r32-flux.1-dev.safetensors", SVDQ_META,
       "transformer_blocks.0.qkv_proj.qweight:I8:128x64;transformer_blocks.0.qkv_proj.wscales:F8_E4M3:8x128");
}
static void s_svdq_class(void) {
    bf16_base();
    st("w/svdq-int4_r32-qwen-image.safetensors",
       "{\"config\":\"{\\\"_class_name\\\":\\\"QwenImageTransformer2DModel\\\"}\"}", "a.qweight:I8:128x64;a.wscales:BF16:2x128");
}
static void s_secondary(void) {
    file("transformer_2/config.json", CLS "}");
    st("transformer_2/diffusion_pytorch_model.safetensors", NULL, BF16_LAYERS);
    st("w/svdq-int4_r32-flux.1-dev.safetensors", SVDQ_META, "a.qweight:I8:128x64;a.wscales:BF16:2x128");
}
static void s_secondary_own(void) {
    file("transformer_2/config.json", CLS "}");
    st("transformer_2/diffusion_pytorch_model.safetensors", NULL, BF16_LAYERS);
    file("w/config.json", CLS ",\"quantization_config\":{\"quant_method\":\"modelopt\",\"quant_algo\":\"FP8\",\"ignore\":[]}}");
    st("w/model.safetensors", NULL, FP8_LAYER("a"));
}
static void s_base_fp8_undeclared(void) {
    file("transformer/config.json", CLS "}");
    st("transformer/diffusion_pytorch_model.safetensors", NULL, FP8_LAYER("a"));
}
static void s_base_metadata(void) {
    file("transformer/config.json", CLS "}");
    st("transformer/diffusion_pytorch_model.safetensors",
       "{\"quantization_config\":\"{\\\"quant_method\\\":\\\"fp8\\\",\\\"activation_scheme\\\":\\\"dynamic\\\"}\"}",
       "a.weight:F8_E4M3:16x16;a.weight_scale:F32:");
}

typedef struct {
    const char *rule;      /* the spec section and what it says */
    void (*setup)(void);
    const char *component; /* "transformer" unless stated */
    const char *args;      /* flags, '|'-separated; {D} is the row's folder */
    const char *method;    /* expected method name, or NULL when an error is expected */
    const char *expect;    /* a fragment of the source (method) or of the error message */
} row;

static const row rows[] = {
    {"§3.1 nothing declared, full-precision tensors: no quantization", s_none, NULL, "", "none", "no quantization declared"},
    {"§1.4 4b --quantization fp8 on BF16: online fp8", s_none, NULL, "--quantization|fp8", "fp8", "online"},
    {"§1.3 unknown --quantization name", s_none, NULL, "--quantization|fp4_turbo", NULL, "Invalid quantization method: fp4_turbo"},
    {"§1.4 4b --quantization gguf is refused", s_none, NULL, "--quantization|gguf", NULL, "GGUF is selected by the checkpoint"},
    {"§1.3 registered elsewhere but not supported here", s_none, NULL, "--quantization|kitchen_int8", NULL, "qdit does not support it"},
    {"§1.3 mxfp4_npu is OCP MXFP4 online", s_none, NULL, "--quantization|mxfp4_npu", "mxfp4", "online"},
    {"qdit: online nvfp4 beyond SGLang", s_none, NULL, "--quantization|nvfp4", "nvfp4", "online"},
    {"§4.3 config.json fp8 static", s_fp8_static, NULL, "", "fp8", "config.json quantization_config"},
    {"§4.3 fp8 needs activation_scheme", s_fp8_no_scheme, NULL, "", NULL, "needs 'activation_scheme'"},
    {"§4.3 unsupported activation scheme", s_fp8_bad_scheme, NULL, "", NULL, "Unsupported activation scheme tensorwise"},
    {"§4.3 block-wise needs dynamic activations", s_fp8_block_static, NULL, "", NULL, "requires activation_scheme dynamic"},
    {"§4.3 weight_block_size must be 2-D", s_fp8_block_3d, NULL, "", NULL, "weight_block_size must be two"},
    {"§3.1 quantization_config under text_config", s_text_config, NULL, "", "fp8", "quantization_config"},
    {"§3.1/§4.7 flat ModelOpt FP8", s_modelopt_flat, NULL, "", "modelopt_fp8", "config.json quantization_config"},
    {"§4.7 nested hf_quant_config.json", s_modelopt_nested, NULL, "", "modelopt_fp8", "hf_quant_config.json"},
    {"§3.1 ModelOpt MIXED_PRECISION refused", s_modelopt_mixed, NULL, "", NULL, "ModelOpt mixed precision is not supported"},
    {"§3.1 explicit method disagreeing with quant_algo", s_modelopt_disagree, NULL, "", NULL, "maps to 'modelopt_fp4'"},
    {"§3.1 known but unsupported ModelOpt algo", s_modelopt_awq, NULL, "", NULL, "that checkpoint algorithm is not supported"},
    {"§3.1 unknown ModelOpt algo", s_modelopt_unknown, NULL, "", NULL, "Unsupported ModelOpt quant_algo for diffusion: INT4_AWQ"},
    {"§3.4 config NVFP4 + tensors: inferred exclude list wins", s_nvfp4_config, NULL, "", "modelopt_fp4", "exclude list from tensor inference"},
    {"§3.3 NVFP4 inferred from U8 weights + F8_E4M3 [N,K/16] scales", s_nvfp4_inferred, NULL, "", "modelopt_fp4", "group 16"},
    {"§3.3 BFL packed-QKV export", s_nvfp4_packed_qkv, NULL, "", "modelopt_fp4", "tensor inference"},
    {"§4.8 NVFP4 needs group_size", s_nvfp4_no_group, NULL, "", NULL, "requires group_size and exclude_modules"},
    {"§4.8 nested NVFP4 with two group sizes", s_nvfp4_inconsistent, NULL, "", NULL, "Inconsistent group_size"},
    {"§4.8 NVFP4 without quant_algo", s_nvfp4_no_algo, NULL, "", NULL, "Cannot find 'quant_algo'"},
    {"§3.1/§4.10 msModelSlim description", s_modelslim, NULL, "", "modelslim", "quant_model_description_w8a8.json"},
    {"§1.4 4b --quantization modelslim reads the description", s_modelslim, NULL, "--quantization|modelslim", "modelslim", "msModelSlim"},
    {"§1.4 4b --quantization modelslim without a description", s_none, NULL, "--quantization|modelslim", NULL, "no quant_model_description"},
    {"§1.4 4b declared override + online flag", s_override_declared, NULL, "--transformer-weights-path|{D}/w|--quantization|fp8", NULL, "already contains or declares quantization"},
    {"§1.4 4a override adjacent config declares", s_override_declared, NULL, "--transformer-weights-path|{D}/w", "modelopt_fp8", "weights override"},
    {"§1.4 4e quantized override without declaration", s_override_undeclared, NULL, "--transformer-weights-path|{D}/w/model.safetensors", NULL, "no supported native quantization declaration"},
    {"§1.4 4a conflicting metadata fields across shards", s_override_conflict, NULL, "--transformer-weights-path|{D}/w", NULL, "Conflicting checkpoint quantization field 'activation_scheme'"},
    {"§1.4 4a conflicting methods across shards", s_override_methods_conflict, NULL, "--transformer-weights-path|{D}/w", NULL, "Conflicting safetensors quantization declarations"},
    {"§7 override's adjacent config wins over the base", s_override_config_wins, NULL, "--transformer-weights-path|{D}/w", "fp8", "weights override"},
    {"§7 unquantized override does not inherit the base config", s_override_unquantized, NULL, "--transformer-weights-path|{D}/w", "none", "no quantization"},
    {"§7 metadata without quant_method defers to the tensors", s_override_meta_no_method, NULL, "--transformer-weights-path|{D}/w", "modelopt_fp4", "tensor inference"},
    {"§2.1 one *-mixed file preferred in an override folder", s_override_mixed, NULL, "--transformer-weights-path|{D}/w", "modelopt_fp4", "tensor inference"},
    {"§4.11 diffusers/Comfy metadata layers form", s_comfy_meta_form, NULL, "--transformer-weights-path|{D}/w", "comfy_fp8", "Comfy per-layer markers"},
    {"§4.11 .comfy_quant marker tensors", s_comfy_markers, NULL, "--transformer-weights-path|{D}/w", "comfy_nvfp4", "Comfy"},
    {"§4.11 markers + --quantization", s_comfy_markers, NULL, "--transformer-weights-path|{D}/w|--quantization|fp8", NULL, "do not also set --quantization"},
    {"§4.11 quantized weight without a marker", s_comfy_missing, NULL, "--transformer-weights-path|{D}/w", NULL, "missing comfy_quant metadata: 'b'"},
    {"§4.11 unsupported Comfy format", s_comfy_unsupported, NULL, "--transformer-weights-path|{D}/w", NULL, "Unsupported Comfy quantization format(s): convrot_w4a4"},
    {"§4.6 Comfy MXFP8 by quant_format", s_comfy_mxfp8_global, NULL, "--transformer-weights-path|{D}/w", "mxfp8", "Comfy"},
    {"§4.6 Comfy MXFP8 with wrong scale shape", s_comfy_mxfp8_bad, NULL, "--transformer-weights-path|{D}/w", NULL, "MXFP8 layer 'a' has incompatible"},
    {"§1.2 svdq-int4_r32 file name enables SVDQuant", s_svdq_int4, NULL, "--transformer-weights-path|{D}/w/svdq-int4_r32-flux.1-dev.safetensors", "svdquant", "precision int4, rank 32"},
    {"§1.2 svdq-fp4_r128 → nvfp4, rank 128", s_svdq_fp4, NULL, "--transformer-weights-path|{D}/w/svdq-fp4_r128-flux.1-dev.safetensors", "svdquant", "precision nvfp4, rank 128"},
    {"§1.2 --enable-svdquant false disables the name rule (the file then declares nothing usable)", s_svdq_int4, NULL, "--transformer-weights-path|{D}/w/svdq-int4_r32-flux.1-dev.safetensors|--enable-svdquant|false", NULL, "no supported native quantization declaration"},
    {"§1.2 --enable-svdquant needs a weights path", s_none, NULL, "--enable-svdquant", NULL, "requires --transformer-weights-path"},
    {"§1.2 precision must be int4 or nvfp4", s_svdq_int4, NULL, "--transformer-weights-path|{D}/w/svdq-int4_r32-flux.1-dev.safetensors|--quantization-precision|int8", NULL, "expected int4 or nvfp4"},
    {"§1.4 step 5 SVDQuant + --quantization", s_svdq_int4, NULL, "--transformer-weights-path|{D}/w/svdq-int4_r32-flux.1-dev.safetensors|--quantization|fp8", NULL, "mutually exclusive"},
    {"§4.9 SVDQuant file for another class", s_svdq_class, NULL, "--transformer-weights-path|{D}/w/svdq-int4_r32-qwen-image.safetensors", NULL, "does not match"},
    {"qdit: an int4-named file holding nvfp4 scales", s_svdq_int4_named_fp8, NULL, "--transformer-weights-path|{D}/w/svdq-int4_r32-flux.1-dev.safetensors", NULL, "holds nvfp4 SVDQuant layers"},
    {"§1.4 step 0 transformer_2 ignores the global weights override", s_secondary, "transformer_2", "--transformer-weights-path|{D}/w/svdq-int4_r32-flux.1-dev.safetensors", "none", "no quantization"},
    {"§1.4 step 0 transformer_2 with its own override file", s_secondary_own, "transformer_2", "--transformer-2-path|{D}/w/model.safetensors", "modelopt_fp8", "weights override"},
    {"qdit: --quantization modelopt_fp8 on a BF16 checkpoint", s_none, NULL, "--quantization|modelopt_fp8", NULL, "needs a checkpoint pre-quantized that way"},
    {"qdit: --quantization modelopt_fp8 on a ModelOpt FP8 checkpoint", s_modelopt_flat, NULL, "--quantization|modelopt_fp8", "modelopt_fp8", "as --quantization modelopt_fp8 asked"},
    {"qdit: online flag on an already quantized base", s_fp8_static, NULL, "--quantization|fp8", NULL, "is already quantized"},
    {"qdit rule 8: FP8 tensors nobody declared", s_base_fp8_undeclared, NULL, "", NULL, "declares no quantization"},
    {"qdit rule 7: metadata declaration of a base component", s_base_metadata, NULL, "", "fp8", "safetensors metadata"},
};

static void run_row(const row *r) {
    D = qt_mkdtemp("resolve");
    r->setup();
    char args[2048], *argv[32];
    int argc = 0;
    /* expand {D} and split on '|' */
    size_t o = 0;
    for (const char *p = r->args; *p && o + 1 < sizeof args;) {
        if (!strncmp(p, "{D}", 3)) {
            o += (size_t)snprintf(args + o, sizeof args - o, "%s", D);
            p += 3;
        } else {
            args[o++] = *p++;
        }
    }
    args[o] = '\0';
    for (char *save = NULL, *a = strtok_r(args, "|", &save); a; a = strtok_r(NULL, "|", &save)) argv[argc++] = a;
    qd_options opt;
    char *rest[32];
    int n_rest;
    qd_options_init(&opt);
    const char *component = r->component ? r->component : "transformer";
    char *base = qt_path(D, component);
    qd_status s = qd_cli_parse_model_flags(argc, argv, 0, &opt, rest, &n_rest);
    qd_component_source src;
    qd_ckpt *ck = NULL;
    qd_quant_config cfg;
    qd_quant_config_init(&cfg);
    if (!s) s = qd_component_source_resolve(&opt, component, base, &src);
    if (!s) {
        s = qd_weight_set_open(&src.weights, &ck);
        if (!s) s = qd_quant_resolve(&opt, &src, ck, "FluxTransformer2DModel", &cfg);
        qd_ckpt_close(ck);
        qd_component_source_free(&src);
    }
    if (r->method) {
        if (s) fail_msg("row '%s': expected %s, got error: %s", r->rule, r->method, qd_last_error());
        if (strcmp(qd_quant_method_name(cfg.method), r->method) || !strstr(cfg.source, r->expect)) {
            fail_msg("row '%s': expected %s with source containing '%s', got %s from '%s'", r->rule, r->method, r->expect,
                     qd_quant_method_name(cfg.method), cfg.source);
        }
        print_message("ok  %-62s %s: %s\n", r->rule, r->method, cfg.source);
    } else {
        if (!s) fail_msg("row '%s': expected an error with '%s', got %s", r->rule, r->expect, qd_quant_method_name(cfg.method));
        if (!strstr(qd_last_error(), r->expect)) fail_msg("row '%s': want '%s' in: %s", r->rule, r->expect, qd_last_error());
        print_message("ok  %-62s error: %s\n", r->rule, qd_last_error());
    }
    qd_quant_config_free(&cfg);
    free(base);
    qt_rmtree(D);
    free(D);
}

static void test_resolution_table(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) run_row(&rows[i]);
}

static void test_ignore_rules(void **state) {
    (void)state;
    /* DESIGN: --quantization-ignored-layers matches substrings: attention.to_ skips layers.0.attention.to_q */
    qd_quant_config c;
    qd_quant_config_init(&c);
    char *pats[] = {strdup("attention.to_")};
    c.ignore = pats;
    c.n_ignore = 1;
    c.ignore_rule = QD_MATCH_SUBSTRING;
    assert_true(qd_quant_config_ignores(&c, "layers.0.attention.to_q"));
    assert_false(qd_quant_config_ignores(&c, "layers.0.feed_forward.w1"));
    free(pats[0]);
    c.ignore = NULL;
    c.n_ignore = 0;
    /* §4.7 ModelOpt: '*' globs over the whole name (single-block excludes hit full prefixes, §6.2) */
    assert_true(qd_match_glob("single_transformer_blocks.*.proj_mlp*", "single_transformer_blocks.0.proj_mlp"));
    assert_true(qd_match_glob("*norm1*", "transformer_blocks.3.norm1.linear"));
    assert_false(qd_match_glob("proj_out", "single_transformer_blocks.0.proj_out"));
    assert_true(qd_match_glob("proj_out", "proj_out"));
    /* §4.2 srt dot-boundary rule for checkpoint ignore lists */
    assert_true(qd_match_path("proj_out", "proj_out"));
    assert_true(qd_match_path("transformer_blocks.0", "transformer_blocks.0.attn.to_q"));
    assert_true(qd_match_path("attn.to_q", "transformer_blocks.0.attn.to_q"));
    assert_false(qd_match_path("attn.to", "transformer_blocks.0.attn.to_q"));
    assert_false(qd_match_path("blocks.1", "transformer_blocks.11.attn"));
    /* §1.2 file-name rule */
    bool fp4;
    int rank;
    assert_true(qd_svdq_name_match("svdq-fp4_r128-qwen-image.safetensors", &fp4, &rank));
    assert_true(fp4);
    assert_int_equal(rank, 128);
    assert_true(qd_svdq_name_match("x-svdq-int4_r32-flux.1-dev.safetensors", &fp4, &rank));
    assert_false(fp4);
    assert_false(qd_svdq_name_match("svdq-int8_r32.safetensors", &fp4, &rank));
    assert_false(qd_svdq_name_match("svdq-int4_r.safetensors", &fp4, &rank));
    qd_quant_config_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resolution_table),
        cmocka_unit_test(test_ignore_rules),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
