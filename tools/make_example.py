#!/usr/bin/env python3
"""Writes examples/tiny-flux: a small diffusers pipeline folder in the FLUX.1 layout for `qdit inspect`
demos and tests. Random weights (it is a layout example, not a model): a sharded transformer with an
index, its attention linears stored ModelOpt-FP8 style (F8_E4M3 weight + F32 weight_scale/input_scale,
`quantization_config` in config.json), the rest BF16, plus a scheduler config. Standard library only;
seeded, so the output is reproducible. Usage: python3 tools/make_example.py [OUT_DIR]"""
import json
import os
import random
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "examples", "tiny-flux")
rng = random.Random(20261129)
D, HD, IN, TXT, POOLED, MLP = 32, 16, 16, 48, 24, 128


def bf16_bytes(n, scale=0.05):
    out = bytearray()
    for _ in range(n):
        bits = struct.unpack("<I", struct.pack("<f", rng.gauss(0.0, scale)))[0]
        out += struct.pack("<H", bits >> 16)  # truncation is fine for random example data
    return bytes(out)


def fp8_bytes(n):
    # random E4M3FN codes, avoiding the NaN codes 0x7F/0xFF
    return bytes(rng.choice([c for c in range(256) if c & 0x7F != 0x7F]) for _ in range(n))


def f32(x):
    return struct.pack("<f", x)


tensors = {}  # name -> (dtype, shape, bytes)


def linear(name, n_out, n_in, fp8=False):
    if fp8:
        tensors[name + ".weight"] = ("F8_E4M3", [n_out, n_in], fp8_bytes(n_out * n_in))
        tensors[name + ".weight_scale"] = ("F32", [], f32(0.004))
        tensors[name + ".input_scale"] = ("F32", [], f32(0.02))
    else:
        tensors[name + ".weight"] = ("BF16", [n_out, n_in], bf16_bytes(n_out * n_in))
    tensors[name + ".bias"] = ("BF16", [n_out], bf16_bytes(n_out))


def rms(name):
    tensors[name + ".weight"] = ("BF16", [HD], bf16_bytes(HD, 1.0))


linear("x_embedder", D, IN)
linear("context_embedder", D, TXT)
for emb in ("timestep_embedder", "guidance_embedder"):
    linear(f"time_text_embed.{emb}.linear_1", D, 256)
    linear(f"time_text_embed.{emb}.linear_2", D, D)
linear("time_text_embed.text_embedder.linear_1", D, POOLED)
linear("time_text_embed.text_embedder.linear_2", D, D)
b = "transformer_blocks.0"
linear(f"{b}.norm1.linear", 6 * D, D)
linear(f"{b}.norm1_context.linear", 6 * D, D)
for p in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "to_out.0", "to_add_out"):
    linear(f"{b}.attn.{p}", D, D, fp8=True)
for p in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
    rms(f"{b}.attn.{p}")
for ff in ("ff", "ff_context"):
    linear(f"{b}.{ff}.net.0.proj", MLP, D)
    linear(f"{b}.{ff}.net.2", D, MLP)
s = "single_transformer_blocks.0"
linear(f"{s}.norm.linear", 3 * D, D)
for p in ("to_q", "to_k", "to_v"):
    linear(f"{s}.attn.{p}", D, D, fp8=True)
rms(f"{s}.attn.norm_q")
rms(f"{s}.attn.norm_k")
linear(f"{s}.proj_mlp", MLP, D)
linear(f"{s}.proj_out", D, D + MLP)
linear("norm_out.linear", 2 * D, D)
linear("proj_out", IN, D)

WIDTH = {"F32": 4, "BF16": 2, "F8_E4M3": 1}


def write_safetensors(path, names, metadata):
    order = sorted(names, key=lambda n: (-WIDTH[tensors[n][0]], n))
    header, offset = {"__metadata__": metadata}, 0
    for n in order:
        dtype, shape, data = tensors[n]
        header[n] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for n in order:
            f.write(tensors[n][2])


tdir = os.path.join(OUT, "transformer")
os.makedirs(tdir, exist_ok=True)
os.makedirs(os.path.join(OUT, "scheduler"), exist_ok=True)
names = sorted(tensors)
shards = [[n for n in names if not n.startswith("transformer_blocks")], [n for n in names if n.startswith("transformer_blocks")]]
weight_map, total = {}, 0
for i, part in enumerate(shards):
    fname = f"diffusion_pytorch_model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
    write_safetensors(os.path.join(tdir, fname), part, {"format": "pt"})
    for n in part:
        weight_map[n] = fname
        total += len(tensors[n][2])
with open(os.path.join(tdir, "diffusion_pytorch_model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
config = {
    "_class_name": "FluxTransformer2DModel", "patch_size": 1, "in_channels": IN, "out_channels": None,
    "num_layers": 1, "num_single_layers": 1, "attention_head_dim": HD, "num_attention_heads": D // HD,
    "joint_attention_dim": TXT, "pooled_projection_dim": POOLED, "guidance_embeds": True, "axes_dims_rope": [4, 6, 6],
    "quantization_config": {"quant_method": "modelopt", "quant_algo": "FP8",
                            "ignore": ["x_embedder", "context_embedder", "time_text_embed*", "*norm1*", "*ff*",
                                       "*norm.linear", "*proj_mlp", "*proj_out", "norm_out*"]},
}
with open(os.path.join(tdir, "config.json"), "w") as f:
    json.dump(config, f, indent=2)
with open(os.path.join(OUT, "scheduler", "scheduler_config.json"), "w") as f:
    json.dump({"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0,
               "use_dynamic_shifting": True, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
               "max_image_seq_len": 4096}, f, indent=2)
with open(os.path.join(OUT, "model_index.json"), "w") as f:
    json.dump({"_class_name": "FluxPipeline", "_diffusers_version": "0.35.0",
               "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
               "transformer": ["diffusers", "FluxTransformer2DModel"],
               "text_encoder": [None, None]}, f, indent=2)
print(f"wrote {OUT}: {len(tensors)} tensors, {total} bytes in {len(shards)} shards")
