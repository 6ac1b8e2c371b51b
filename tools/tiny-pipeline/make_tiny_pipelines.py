#!/usr/bin/env python3
"""Write tiny diffusers pipeline folders with random weights whose dimensions chain into one pipeline,
for end-to-end tests of `qdit generate` (tests/conformance/test_generate.c):

  <out>/flux/    FluxPipeline: CLIP + T5 text encoders and tokenizers, FluxTransformer2DModel with
                 embedded guidance, FlowMatchEulerDiscreteScheduler as FLUX.1-dev's, AutoencoderKL (16 ch)
  <out>/zimage/  ZImagePipeline: Qwen3 text encoder with a byte-level BPE tokenizer carrying Qwen's chat
                 tokens, ZImageTransformer2DModel, the scheduler as Z-Image-Turbo's, the same VAE

Configs use the keys and weights the names of diffusers / transformers checkpoints; the tokenizers are
small (byte-level alphabets plus a few merges) and every id fits the text encoders' vocab_size.
Weights are float32 drawn from numpy's seeded generator: fan-in scaled so activations stay O(1).
Usage: make_tiny_pipelines.py --out DIR [--seed N]"""
import argparse
import json
import os
import struct

import numpy as np


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for name in sorted(tensors):
        b = np.ascontiguousarray(tensors[name], dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for b in blobs:
            f.write(b)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


class Weights:
    """Named tensors drawn in a fixed order from one generator."""

    def __init__(self, rng):
        self.rng, self.t = rng, {}

    def linear(self, name, n_out, n_in, bias=True):
        self.t[name + ".weight"] = self.rng.normal(0, 1 / np.sqrt(n_in), (n_out, n_in)).astype(np.float32)
        if bias:
            self.t[name + ".bias"] = self.rng.normal(0, 0.02, (n_out,)).astype(np.float32)

    def norm(self, name, n, bias=False):
        self.t[name + ".weight"] = (1 + self.rng.normal(0, 0.1, (n,))).astype(np.float32)
        if bias:
            self.t[name + ".bias"] = self.rng.normal(0, 0.02, (n,)).astype(np.float32)

    def table(self, name, shape, std=1.0):
        self.t[name] = self.rng.normal(0, std, shape).astype(np.float32)

    def conv(self, name, n_out, n_in, k):
        self.t[name + ".weight"] = self.rng.normal(0, 1 / np.sqrt(n_in * k * k), (n_out, n_in, k, k)).astype(np.float32)
        self.t[name + ".bias"] = self.rng.normal(0, 0.02, (n_out,)).astype(np.float32)


# ---- tokenizers ----

def byte_chars():
    """GPT-2's byte → printable character map (printable Latin-1 bytes map to themselves)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def clip_tokenizer(path):
    """CLIP's vocab.json + merges.txt form: every byte character alone and as a word end (</w>), a few
    merges, then <|startoftext|> and <|endoftext|> with the two largest ids, as in CLIP's vocabulary."""
    chars = byte_chars()
    vocab = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    merges = [("a", "t</w>"), ("t", "h"), ("th", "e</w>"), ("c", "a"), ("ca", "t</w>"), ("o", "n</w>")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    os.makedirs(path, exist_ok=True)
    write_json(os.path.join(path, "vocab.json"), vocab)
    with open(os.path.join(path, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    write_json(os.path.join(path, "tokenizer_config.json"),
               {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"})
    return len(vocab)


def t5_tokenizer(path):
    """A T5-style Unigram tokenizer.json: <pad> 0, </s> 1, <unk> 2, then ▁-prefixed pieces and single
    characters with log-probability scores; Metaspace pre-tokenization; </s> appended."""
    pieces = [["<pad>", 0.0], ["</s>", 0.0], ["<unk>", 0.0], ["\u2581", -2.0]]
    for c in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'-":
        pieces.append([c, -5.0])
        pieces.append(["\u2581" + c, -4.5])
    for w in ["the", "cat", "on", "mat", "photo", "of", "red", "dog"]:
        pieces.append(["\u2581" + w, -3.0])
    added = [{"id": i, "content": pieces[i][0], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i in range(3)]
    tok = {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 0}}, {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "special_tokens": {"</s>": {"id": "</s>", "ids": [1], "tokens": ["</s>"]}},
        },
        "decoder": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": 2, "vocab": pieces, "byte_fallback": False},
    }
    write_json(os.path.join(path, "tokenizer.json"), tok)
    write_json(os.path.join(path, "tokenizer_config.json"),
               {"tokenizer_class": "T5Tokenizer", "model_max_length": 512, "eos_token": "</s>", "pad_token": "<pad>",
                "unk_token": "<unk>"})
    return len(pieces)


def qwen_tokenizer(path):
    """A Qwen2-style byte-level BPE tokenizer.json: the 256 byte characters, a few merges, then the chat
    special tokens (<|endoftext|>, <|im_start|>, <|im_end|>, <think>, </think>) as added tokens."""
    chars = byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    merges = [("Ġ", "a"), ("Ġ", "c"), ("a", "t"), ("Ġc", "at"), ("u", "s"), ("e", "r"), ("Ċ", "Ċ")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    added = []
    for s in specials:
        added.append({"id": len(vocab) + len(added), "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": s.startswith("<|")})
    split = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+"
             "|\\s+(?!\\S)|\\s+")
    tok = {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": split}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": "", "end_of_word_suffix": "",
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": vocab,
                  "merges": [[a, b] for a, b in merges]},
    }
    write_json(os.path.join(path, "tokenizer.json"), tok)
    write_json(os.path.join(path, "tokenizer_config.json"),
               {"tokenizer_class": "Qwen2Tokenizer", "model_max_length": 131072, "pad_token": "<|endoftext|>",
                "eos_token": "<|im_end|>"})
    return len(vocab) + len(added)


# ---- components ----

def clip_text_encoder(path, rng, vocab, hidden=32, heads=2, ffn=64, layers=2):
    write_json(os.path.join(path, "config.json"), {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu",
        "hidden_size": hidden, "intermediate_size": ffn, "num_attention_heads": heads, "num_hidden_layers": layers,
        "layer_norm_eps": 1e-5, "max_position_embeddings": 77, "vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 2,
        "pad_token_id": 1, "projection_dim": hidden, "torch_dtype": "float32"})
    w = Weights(rng)
    w.table("text_model.embeddings.token_embedding.weight", (vocab, hidden), 0.5)
    w.table("text_model.embeddings.position_embedding.weight", (77, hidden), 0.1)
    for i in range(layers):
        p = f"text_model.encoder.layers.{i}"
        w.norm(p + ".layer_norm1", hidden, bias=True)
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w.linear(f"{p}.self_attn.{n}", hidden, hidden)
        w.norm(p + ".layer_norm2", hidden, bias=True)
        w.linear(p + ".mlp.fc1", ffn, hidden)
        w.linear(p + ".mlp.fc2", hidden, ffn)
    w.norm("text_model.final_layer_norm", hidden, bias=True)
    write_safetensors(os.path.join(path, "model.safetensors"), w.t)


def t5_text_encoder(path, rng, vocab, d_model=32, d_kv=8, heads=4, d_ff=64, layers=2):
    write_json(os.path.join(path, "config.json"), {
        "architectures": ["T5EncoderModel"], "model_type": "t5", "d_model": d_model, "d_kv": d_kv, "num_heads": heads,
        "d_ff": d_ff, "num_layers": layers, "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new",
        "is_gated_act": True, "layer_norm_epsilon": 1e-6, "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "vocab_size": vocab, "pad_token_id": 0, "eos_token_id": 1,
        "torch_dtype": "float32"})
    w = Weights(rng)
    w.table("shared.weight", (vocab, d_model), 1.0)
    inner = heads * d_kv
    for i in range(layers):
        p = f"encoder.block.{i}.layer"
        w.norm(p + ".0.layer_norm", d_model)
        for n in ("q", "k", "v"):
            w.linear(f"{p}.0.SelfAttention.{n}", inner, d_model, bias=False)
        w.linear(p + ".0.SelfAttention.o", d_model, inner, bias=False)
        if i == 0:
            w.table(p + ".0.SelfAttention.relative_attention_bias.weight", (32, heads), 0.5)
        w.norm(p + ".1.layer_norm", d_model)
        w.linear(p + ".1.DenseReluDense.wi_0", d_ff, d_model, bias=False)
        w.linear(p + ".1.DenseReluDense.wi_1", d_ff, d_model, bias=False)
        w.linear(p + ".1.DenseReluDense.wo", d_model, d_ff, bias=False)
    w.norm("encoder.final_layer_norm", d_model)
    write_safetensors(os.path.join(path, "model.safetensors"), w.t)


def qwen3_text_encoder(path, rng, vocab, hidden=32, layers=2, heads=2, kv_heads=1, head_dim=16, ffn=64):
    write_json(os.path.join(path, "config.json"), {
        "architectures": ["Qwen3Model"], "model_type": "qwen3", "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim, "intermediate_size": ffn,
        "hidden_act": "silu", "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 40960,
        "vocab_size": vocab, "tie_word_embeddings": False, "attention_bias": False, "use_sliding_window": False,
        "sliding_window": None, "torch_dtype": "float32"})
    w = Weights(rng)
    w.table("embed_tokens.weight", (vocab, hidden), 1.0)
    for i in range(layers):
        p = f"layers.{i}"
        w.norm(p + ".input_layernorm", hidden)
        w.linear(p + ".self_attn.q_proj", heads * head_dim, hidden, bias=False)
        w.linear(p + ".self_attn.k_proj", kv_heads * head_dim, hidden, bias=False)
        w.linear(p + ".self_attn.v_proj", kv_heads * head_dim, hidden, bias=False)
        w.linear(p + ".self_attn.o_proj", hidden, heads * head_dim, bias=False)
        w.norm(p + ".self_attn.q_norm", head_dim)
        w.norm(p + ".self_attn.k_norm", head_dim)
        w.norm(p + ".post_attention_layernorm", hidden)
        w.linear(p + ".mlp.gate_proj", ffn, hidden, bias=False)
        w.linear(p + ".mlp.up_proj", ffn, hidden, bias=False)
        w.linear(p + ".mlp.down_proj", hidden, ffn, bias=False)
    w.norm("norm", hidden)
    write_safetensors(os.path.join(path, "model.safetensors"), w.t)


def vae(path, rng, blocks=(16, 16, 32, 32), groups=8, layers_per_block=1):
    n = len(blocks)
    write_json(os.path.join(path, "config.json"), {
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.35.0", "act_fn": "silu", "in_channels": 3,
        "out_channels": 3, "latent_channels": 16, "block_out_channels": list(blocks),
        "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
        "layers_per_block": layers_per_block, "norm_num_groups": groups, "mid_block_add_attention": True,
        "sample_size": 64, "scaling_factor": 0.3611, "shift_factor": 0.1159, "force_upcast": True,
        "use_quant_conv": False, "use_post_quant_conv": False, "latents_mean": None, "latents_std": None})
    w = Weights(rng)

    def resnet(p, cin, cout):
        w.norm(p + ".norm1", cin, bias=True)
        w.conv(p + ".conv1", cout, cin, 3)
        w.norm(p + ".norm2", cout, bias=True)
        w.conv(p + ".conv2", cout, cout, 3)
        if cin != cout:
            w.conv(p + ".conv_shortcut", cout, cin, 1)

    top = blocks[-1]
    # the encoder (qdit only decodes; it makes the folder one diffusers loads whole)
    w.conv("encoder.conv_in", blocks[0], 3, 3)
    prev = blocks[0]
    for i, ch in enumerate(blocks):
        for j in range(layers_per_block):
            resnet(f"encoder.down_blocks.{i}.resnets.{j}", prev if j == 0 else ch, ch)
        if i + 1 < n:
            w.conv(f"encoder.down_blocks.{i}.downsamplers.0.conv", ch, ch, 3)
        prev = ch
    resnet("encoder.mid_block.resnets.0", top, top)
    w.norm("encoder.mid_block.attentions.0.group_norm", top, bias=True)
    for nm in ("to_q", "to_k", "to_v", "to_out.0"):
        w.linear("encoder.mid_block.attentions.0." + nm, top, top)
    resnet("encoder.mid_block.resnets.1", top, top)
    w.norm("encoder.conv_norm_out", top, bias=True)
    w.conv("encoder.conv_out", 32, top, 3)
    w.conv("decoder.conv_in", top, 16, 3)
    resnet("decoder.mid_block.resnets.0", top, top)
    w.norm("decoder.mid_block.attentions.0.group_norm", top, bias=True)
    for nm in ("to_q", "to_k", "to_v", "to_out.0"):
        w.linear("decoder.mid_block.attentions.0." + nm, top, top)
    resnet("decoder.mid_block.resnets.1", top, top)
    prev = top
    for i in range(n):
        ch = blocks[n - 1 - i]
        for j in range(layers_per_block + 1):
            resnet(f"decoder.up_blocks.{i}.resnets.{j}", prev if j == 0 else ch, ch)
        if i + 1 < n:
            w.conv(f"decoder.up_blocks.{i}.upsamplers.0.conv", ch, ch, 3)
        prev = ch
    w.norm("decoder.conv_norm_out", blocks[0], bias=True)
    w.conv("decoder.conv_out", 3, blocks[0], 3)
    write_safetensors(os.path.join(path, "diffusion_pytorch_model.safetensors"), w.t)


def flux_transformer(path, rng, joint, pooled, heads=2, head_dim=16, layers=1, single_layers=1):
    inner = heads * head_dim
    write_json(os.path.join(path, "config.json"), {
        "_class_name": "FluxTransformer2DModel", "_diffusers_version": "0.35.0", "patch_size": 1, "in_channels": 64,
        "out_channels": None, "num_layers": layers, "num_single_layers": single_layers, "attention_head_dim": head_dim,
        "num_attention_heads": heads, "joint_attention_dim": joint, "pooled_projection_dim": pooled,
        "guidance_embeds": True, "axes_dims_rope": [4, 6, 6]})
    w = Weights(rng)
    w.linear("x_embedder", inner, 64)
    w.linear("context_embedder", inner, joint)
    for e in ("timestep_embedder", "guidance_embedder"):
        w.linear(f"time_text_embed.{e}.linear_1", inner, 256)
        w.linear(f"time_text_embed.{e}.linear_2", inner, inner)
    w.linear("time_text_embed.text_embedder.linear_1", inner, pooled)
    w.linear("time_text_embed.text_embedder.linear_2", inner, inner)
    for i in range(layers):
        p = f"transformer_blocks.{i}"
        w.linear(p + ".norm1.linear", 6 * inner, inner)
        w.linear(p + ".norm1_context.linear", 6 * inner, inner)
        for nm in ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"):
            w.linear(f"{p}.attn.{nm}", inner, inner)
        for nm in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
            w.norm(f"{p}.attn.{nm}", head_dim)
        for ff in ("ff", "ff_context"):
            w.linear(f"{p}.{ff}.net.0.proj", 4 * inner, inner)
            w.linear(f"{p}.{ff}.net.2", inner, 4 * inner)
    for i in range(single_layers):
        p = f"single_transformer_blocks.{i}"
        w.linear(p + ".norm.linear", 3 * inner, inner)
        for nm in ("to_q", "to_k", "to_v"):
            w.linear(f"{p}.attn.{nm}", inner, inner)
        w.norm(p + ".attn.norm_q", head_dim)
        w.norm(p + ".attn.norm_k", head_dim)
        w.linear(p + ".proj_mlp", 4 * inner, inner)
        w.linear(p + ".proj_out", inner, 5 * inner)
    w.linear("norm_out.linear", 2 * inner, inner)
    w.linear("proj_out", 64, inner)
    write_safetensors(os.path.join(path, "diffusion_pytorch_model.safetensors"), w.t)


def zimage_transformer(path, rng, cap_dim, dim=32, heads=2, layers=1, refiner_layers=1):
    head_dim = dim // heads
    ffn = int(dim / 3 * 8)
    adaln = min(dim, 256)
    write_json(os.path.join(path, "config.json"), {
        "_class_name": "ZImageTransformer2DModel", "_diffusers_version": "0.35.0", "all_patch_size": [2],
        "all_f_patch_size": [1], "in_channels": 16, "dim": dim, "n_layers": layers, "n_refiner_layers": refiner_layers,
        "n_heads": heads, "n_kv_heads": heads, "norm_eps": 1e-5, "qk_norm": True, "cap_feat_dim": cap_dim,
        "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": [4, 6, 6], "axes_lens": [1024, 512, 512]})
    w = Weights(rng)
    w.linear("all_x_embedder.2-1", dim, 64)
    w.linear("all_final_layer.2-1.adaLN_modulation.1", dim, adaln)
    w.linear("all_final_layer.2-1.linear", 64, dim)
    w.norm("cap_embedder.0", cap_dim)
    w.linear("cap_embedder.1", dim, cap_dim)
    w.table("cap_pad_token", (1, dim), 0.5)
    w.table("x_pad_token", (1, dim), 0.5)
    w.linear("t_embedder.mlp.0", 1024, 256)
    w.linear("t_embedder.mlp.2", adaln, 1024)

    def block(p, modulated):
        if modulated:
            w.linear(p + ".adaLN_modulation.0", 4 * dim, adaln)
        for nm in ("to_q", "to_k", "to_v", "to_out.0"):
            w.linear(f"{p}.attention.{nm}", dim, dim, bias=False)
        w.norm(p + ".attention.norm_q", head_dim)
        w.norm(p + ".attention.norm_k", head_dim)
        for nm in ("attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2"):
            w.norm(f"{p}.{nm}", dim)
        w.linear(p + ".feed_forward.w1", ffn, dim, bias=False)
        w.linear(p + ".feed_forward.w2", dim, ffn, bias=False)
        w.linear(p + ".feed_forward.w3", ffn, dim, bias=False)

    for i in range(layers):
        block(f"layers.{i}", True)
    for i in range(refiner_layers):
        block(f"noise_refiner.{i}", True)
        block(f"context_refiner.{i}", False)
    write_safetensors(os.path.join(path, "diffusion_pytorch_model.safetensors"), w.t)


def scheduler(path, dynamic):
    cfg = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.35.0", "num_train_timesteps": 1000,
           "shift": 3.0, "use_dynamic_shifting": dynamic, "base_shift": 0.5, "max_shift": 1.15,
           "base_image_seq_len": 256, "max_image_seq_len": 4096, "invert_sigmas": False, "shift_terminal": None,
           "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
           "time_shift_type": "exponential", "stochastic_sampling": False}
    write_json(os.path.join(path, "scheduler_config.json"), cfg)


def make_flux(out, seed):
    rng = np.random.default_rng(seed)
    clip_vocab = clip_tokenizer(os.path.join(out, "tokenizer"))
    t5_vocab = t5_tokenizer(os.path.join(out, "tokenizer_2"))
    clip_text_encoder(os.path.join(out, "text_encoder"), rng, clip_vocab + 8, hidden=32)
    t5_text_encoder(os.path.join(out, "text_encoder_2"), rng, t5_vocab + 8, d_model=32)
    flux_transformer(os.path.join(out, "transformer"), rng, joint=32, pooled=32)
    vae(os.path.join(out, "vae"), rng)
    scheduler(os.path.join(out, "scheduler"), True)
    write_json(os.path.join(out, "model_index.json"), {
        "_class_name": "FluxPipeline", "_diffusers_version": "0.35.0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"], "image_encoder": [None, None], "feature_extractor": [None, None]})


def make_zimage(out, seed):
    rng = np.random.default_rng(seed + 1)
    vocab = qwen_tokenizer(os.path.join(out, "tokenizer"))
    qwen3_text_encoder(os.path.join(out, "text_encoder"), rng, vocab + 8, hidden=32)
    zimage_transformer(os.path.join(out, "transformer"), rng, cap_dim=32)
    vae(os.path.join(out, "vae"), rng)
    scheduler(os.path.join(out, "scheduler"), False)
    write_json(os.path.join(out, "model_index.json"), {
        "_class_name": "ZImagePipeline", "_diffusers_version": "0.35.0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen3Model"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"], "transformer": ["diffusers", "ZImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"]})


def real_configs(out):
    """FLUX.1-dev and Z-Image-Turbo at their published sizes, configs only (no weight files), for
    `qdit generate --random-weights` benchmarks; the tokenizers are the tiny ones (their ids fit any table)."""
    f = os.path.join(out, "flux-dev-config")
    clip_tokenizer(os.path.join(f, "tokenizer"))
    t5_tokenizer(os.path.join(f, "tokenizer_2"))
    write_json(os.path.join(f, "text_encoder", "config.json"), {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_act": "quick_gelu", "hidden_size": 768,
        "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12, "layer_norm_eps": 1e-5,
        "max_position_embeddings": 77, "vocab_size": 49408, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
        "projection_dim": 768, "torch_dtype": "bfloat16"})
    write_json(os.path.join(f, "text_encoder_2", "config.json"), {
        "architectures": ["T5EncoderModel"], "model_type": "t5", "d_model": 4096, "d_kv": 64, "num_heads": 64, "d_ff": 10240,
        "num_layers": 24, "vocab_size": 32128, "feed_forward_proj": "gated-gelu", "dense_act_fn": "gelu_new",
        "is_gated_act": True, "relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
        "layer_norm_epsilon": 1e-6, "torch_dtype": "bfloat16"})
    write_json(os.path.join(f, "transformer", "config.json"), {
        "_class_name": "FluxTransformer2DModel", "_diffusers_version": "0.35.0", "patch_size": 1, "in_channels": 64,
        "out_channels": None, "num_layers": 19, "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
        "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": True, "axes_dims_rope": [16, 56, 56]})
    vae_config = {
        "_class_name": "AutoencoderKL", "_diffusers_version": "0.35.0", "act_fn": "silu", "in_channels": 3, "out_channels": 3,
        "latent_channels": 16, "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 2, "norm_num_groups": 32, "mid_block_add_attention": True,
        "sample_size": 1024, "scaling_factor": 0.3611, "shift_factor": 0.1159, "force_upcast": True, "use_quant_conv": False,
        "use_post_quant_conv": False, "latents_mean": None, "latents_std": None}
    write_json(os.path.join(f, "vae", "config.json"), vae_config)
    scheduler(os.path.join(f, "scheduler"), True)
    write_json(os.path.join(f, "model_index.json"), {
        "_class_name": "FluxPipeline", "_diffusers_version": "0.35.0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "T5EncoderModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "T5TokenizerFast"], "transformer": ["diffusers", "FluxTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"]})
    z = os.path.join(out, "zimage-turbo-config")
    qwen_tokenizer(os.path.join(z, "tokenizer"))
    write_json(os.path.join(z, "text_encoder", "config.json"), {
        "architectures": ["Qwen3Model"], "model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728,
        "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 40960, "hidden_act": "silu",
        "attention_bias": False, "tie_word_embeddings": True, "torch_dtype": "bfloat16"})
    write_json(os.path.join(z, "transformer", "config.json"), {
        "_class_name": "ZImageTransformer2DModel", "_diffusers_version": "0.35.0", "all_patch_size": [2], "all_f_patch_size": [1],
        "in_channels": 16, "dim": 3840, "n_layers": 30, "n_refiner_layers": 2, "n_heads": 30, "n_kv_heads": 30, "norm_eps": 1e-5,
        "qk_norm": True, "cap_feat_dim": 2560, "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": [32, 48, 48],
        "axes_lens": [1536, 512, 512]})
    write_json(os.path.join(z, "vae", "config.json"), vae_config)
    scheduler(os.path.join(z, "scheduler"), False)
    write_json(os.path.join(z, "model_index.json"), {
        "_class_name": "ZImagePipeline", "_diffusers_version": "0.35.0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen3Model"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"], "transformer": ["diffusers", "ZImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"]})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder that receives flux/ and zimage/")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--real-configs", action="store_true",
                    help="instead: FLUX.1-dev and Z-Image-Turbo pipelines at their published sizes, configs only, for "
                         "qdit generate --random-weights (flux-dev-config/, zimage-turbo-config/)")
    a = ap.parse_args()
    if a.real_configs:
        real_configs(a.out)
        print(f"config-only pipelines in {a.out}: flux-dev-config/, zimage-turbo-config/")
        return
    make_flux(os.path.join(a.out, "flux"), a.seed)
    make_zimage(os.path.join(a.out, "zimage"), a.seed)
    print(f"tiny pipelines (seed {a.seed}) in {a.out}: flux/, zimage/")


if __name__ == "__main__":
    main()
