"""Fixture conformance of `qdit forward --device cuda` on the GPU machine: runs each reference module
(FLUX.1, Z-Image transformers, the FLUX VAE decoder; copies of ../shared/fixtures carried in
.devrun/fixtures) in f32 and bf16 activations, online fp8 too, the transformers also with their weights offloaded
(--dit-layerwise-offload, --dit-cpu-offload), and prints the relative L2 error of each output against the fixture's
reference output (and, for the VAE, against our float64 decode in
tests/fixtures). Usage: python3 tools/device/fixture_check.py QDIT_BINARY FIXTURE_DIR OUT_DIR"""
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

qdit, fx, out = sys.argv[1], sys.argv[2], sys.argv[3]
cases = [
    ("flux_tiny_a", "transformer", "output"),
    ("zimage_tiny_a", "transformer", "output"),
    ("vae_kl_tiny_a", "vae", "output"),
]
print("| module | device | activations | quantization | rel L2 vs reference | bound |\n|---|---|---|---|---:|---:|")
fails = 0
for name, comp, key in cases:
    ref = load_file(os.path.join(fx, name, "io.safetensors"))[key].astype(np.float64)
    refs = [("fixture", ref)]
    if name == "vae_kl_tiny_a":
        refs.append(("float64 decode", load_file("tests/fixtures/vae_kl_tiny_a_f64.safetensors")["output"].astype(np.float64)))
    # the transformers also with their weights offloaded (streamed block by block, or uploaded whole): the same bounds
    runs = [("f32", None, None), ("bf16", None, None), ("bf16", "fp8", None)]
    if comp == "transformer":
        runs += [("f32", None, "--dit-layerwise-offload"), ("bf16", "fp8", "--dit-layerwise-offload"), ("bf16", "fp8", "--dit-cpu-offload")]
    for prec, quant, offload in runs:
        if quant and comp == "vae":
            continue
        path = os.path.join(out, f"{name}_{prec}_{quant or 'none'}{offload or ''}.safetensors")
        cmd = [qdit, "forward", "--component", os.path.join(fx, name, comp), "--inputs", os.path.join(fx, name, "io.safetensors"),
               "--output", path, "--device", "cuda", "--precision", prec]
        if prec == "bf16":
            cmd += ["--scalar-rounding", "exact"]  # σ/guidance unrounded, as the fixture's f32 run (docs/cli.md)
        if quant:
            cmd += ["--quantization", quant]
        if offload:
            cmd += [offload, "true"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        label_q = (quant or "-") + (f" {offload}" if offload else "")
        if r.returncode:
            print(f"| {name} | cuda | {prec} | {label_q} | FAILED: {r.stderr.strip()[-200:]} | |")
            fails += 1
            continue
        got = load_file(path)[key].astype(np.float64)
        for label, rv in refs:
            err = np.linalg.norm(got - rv) / np.linalg.norm(rv)
            bound = 1e-4 if prec == "f32" and not quant else (2e-2 if not quant else 0.2)
            if name == "vae_kl_tiny_a" and label == "fixture" and prec == "f32":
                bound = 1e-3  # the fixture was decoded with TF32 convolutions (docs/formats.md)
            ok = err <= bound
            fails += not ok
            print(f"| {name} ({label}) | cuda | {prec} | {label_q} | {err:.2e} | {bound:g} {'ok' if ok else 'FAIL'} |")
# text encoders: every output (Qwen3 over the positions its attention_mask keeps)
for name, keys in [("clip_tiny_a", ["last_hidden_state", "pooler_output"]), ("t5_tiny_a", ["last_hidden_state"]),
                   ("qwen3_tiny_a", ["last_hidden_state", "hidden_states_minus2"])]:
    io = load_file(os.path.join(fx, name, "io.safetensors"))
    for prec in ["f32", "bf16"]:
        path = os.path.join(out, f"{name}_{prec}.safetensors")
        r = subprocess.run([qdit, "forward", "--component", os.path.join(fx, name, "text_encoder"), "--inputs", os.path.join(fx, name, "io.safetensors"),
                            "--output", path, "--device", "cuda", "--precision", prec], capture_output=True, text=True)
        if r.returncode:
            print(f"| {name} | cuda | {prec} | - | FAILED: {r.stderr.strip()[-200:]} | |")
            fails += 1
            continue
        got = load_file(path)
        for key in keys:
            rv, gv = io[key].astype(np.float64), got[key].astype(np.float64)
            if "attention_mask" in io and rv.ndim == 3:
                keep = io["attention_mask"].astype(bool)
                rv, gv = rv[keep], gv[keep]
            err = np.linalg.norm(gv - rv) / np.linalg.norm(rv)
            bound = 1e-4 if prec == "f32" else 2e-2
            fails += err > bound
            print(f"| {name} {key} | cuda | {prec} | - | {err:.2e} | {bound:g} {'ok' if err <= bound else 'FAIL'} |")
sys.exit(1 if fails else 0)
