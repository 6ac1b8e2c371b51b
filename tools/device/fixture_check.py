"""Fixture conformance of `qdit forward --device cuda` on the GPU machine: runs each reference module
(FLUX.1, Z-Image transformers, the FLUX VAE decoder; copies of ../shared/fixtures carried in
.devrun/fixtures) in f32 and bf16 activations, online fp8 too, the transformers also with their weights offloaded
(--dit-layerwise-offload, --dit-cpu-offload), and prints the relative L2 error of each output against the fixture's
reference output (and, for the VAE, against our float64 decode in
tests/fixtures). With QUANT_DIR (tools/quant-fixtures' output), also the Nunchaku SVDQuant
files of FLUX.1 and Z-Image. Usage: python3 tools/device/fixture_check.py QDIT_BINARY FIXTURE_DIR OUT_DIR [QUANT_DIR]"""
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

qdit, fx, out = sys.argv[1], sys.argv[2], sys.argv[3]
quant_dir = sys.argv[4] if len(sys.argv) > 4 else None  # tools/quant-fixtures' output (the Nunchaku files), optional
only_nunchaku = len(sys.argv) > 5 and sys.argv[5] == "nunchaku-only"
cases = [
    ("flux_tiny_a", "transformer", "output"),
    ("zimage_tiny_a", "transformer", "output"),
    ("vae_kl_tiny_a", "vae", "output"),
] if not only_nunchaku else []
print("| module | device | activations | quantization | rel L2 vs reference | bound |\n|---|---|---|---|---:|---:|")
fails = 0
for name, comp, key in cases:
    if not os.path.isdir(os.path.join(fx, name)):  # not carried (tools/device/pack_bins.sh --fixtures without --all)
        print(f"| {name} | cuda | - | - | not carried | |")
        continue
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
                   ("qwen3_tiny_a", ["last_hidden_state", "hidden_states_minus2"])] if not only_nunchaku else []:
    if not os.path.isdir(os.path.join(fx, name)):
        print(f"| {name} | cuda | - | - | not carried | |")
        continue
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
# Nunchaku SVDQuant files (tools/quant-fixtures, carried in QUANT_DIR): the GPU run against the fixture's dense run
# with the file's dequantized weights merged in (what the file holds, less its activation quantization: bounds of
# tests/conformance/test_forward_nunchaku.c, which holds the CPU's W4A4 recipe to them) and against the fixture
if quant_dir:
    import torch  # the fixtures' BF16 tensors (numpy has no bfloat16)
    from safetensors.torch import load_file as load_torch, save_file as save_torch
    for name, deq_bound in [("flux_tiny_a", 0.02), ("zimage_tiny_a", 0.12)]:
        ref = load_file(os.path.join(fx, name, "io.safetensors"))["output"].astype(np.float64)
        for fam in ["int4", "fp4"]:
            d = os.path.join(quant_dir, name, f"svdquant_{fam}")
            weights = os.path.join(d, f"svdq-{fam}_r32-{name}.safetensors")
            if not os.path.exists(weights):  # not carried
                continue
            merged = load_torch(os.path.join(fx, name, "transformer", "diffusion_pytorch_model.safetensors"))
            merged.update(load_torch(os.path.join(d, "expected", "dequant.safetensors")))
            deq_w = os.path.join(out, f"{name}_{fam}_dequant.safetensors")
            save_torch({k: v.contiguous() for k, v in merged.items()}, deq_w)
            got = {}
            for tag, w, dev, prec in [("dequant", deq_w, "cuda", "f32"), ("cpu", weights, "cpu", "f32"), ("cuda", weights, "cuda", "f32"),
                                      ("cuda_bf16", weights, "cuda", "bf16")]:
                path = os.path.join(out, f"{name}_svdq_{fam}_{tag}.safetensors")
                r = subprocess.run([qdit, "forward", "--component", os.path.join(fx, name, "transformer"), "--transformer-weights-path", w,
                                    "--inputs", os.path.join(fx, name, "io.safetensors"), "--output", path, "--device", dev, "--precision", prec],
                                   capture_output=True, text=True)
                if r.returncode:
                    print(f"| {name} svdq {fam} | {dev} | {prec} | {tag} | FAILED: {r.stderr.strip()[-200:]} | |")
                    fails += 1
                    continue
                got[tag] = load_file(path)["output"].astype(np.float64)
            rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
            for tag, dev, prec in [("cpu", "cpu", "f32"), ("cuda", "cuda", "f32"), ("cuda_bf16", "cuda", "bf16")]:
                if tag not in got or "dequant" not in got:
                    continue
                e_deq, e_fix = rel(got[tag], got["dequant"]), rel(got[tag], ref)
                db = deq_bound if prec == "f32" else float("inf")  # bf16 noise: the fixture's bound only, as the test
                ok = e_deq <= db and e_fix <= 0.3
                fails += not ok
                print(f"| {name} svdq {fam} (vs dequantized weights; vs fixture) | {dev} | {prec} | svdquant | {e_deq:.2e}; {e_fix:.2e} | {db:g}; 0.3 {'ok' if ok else 'FAIL'} |")
# Checkpoint families (tools/quant-fixtures' component folders, carried in QUANT_DIR/<module>/<family>): each run on the
# CPU and on the GPU with f32 activations, and on the GPU with bf16 activations and with cuBLASLt's promoted FP8
# accumulation (QDIT_CUDA_FP8_PRECISE=1). The CPU's run is held to the independent dequantized weights by
# tests/conformance (test_forward_quantized, test_quant_families). The GPU runs the same weights but not always the
# same activation recipe: the 4-bit and MX schemes run as W4A8/W8A8 on FP8 matmuls (FP8 activations, finer than
# FP4), and FP8 matmuls accumulate as the tensor cores do. So the GPU's f32 run is held to the unquantized output:
# within the class bound of test_forward_quantized (8-bit 0.2, 4-bit 0.45) and no further from it than 1.25× the
# CPU's run (as accurate as the reference recipe, up to rounding flips); its distance to the CPU's is printed.
if quant_dir and not only_nunchaku:
    four_bit = ("nvfp4", "w4a4", "mxfp4", "svdquant")
    rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
    for name in ["flux_tiny_a", "zimage_tiny_a"]:
        root = os.path.join(quant_dir, name)
        if not os.path.isdir(root):
            continue
        io_path = os.path.join(fx, name, "io.safetensors")
        ref = load_file(io_path)["output"].astype(np.float64)
        for fam in sorted(os.listdir(root)):
            comp = os.path.join(root, fam)
            if not os.path.exists(os.path.join(comp, "config.json")):
                continue  # a Nunchaku file (above)
            got = {}
            codes_used = None
            for tag, dev, prec, env in [("cpu", "cpu", "f32", None), ("cuda", "cuda", "f32", None), ("cuda_bf16", "cuda", "bf16", None),
                                        ("cuda_precise", "cuda", "f32", "QDIT_CUDA_FP8_PRECISE"), ("cuda_bf16_nocodes", "cuda", "bf16", "QDIT_CUDA_FP8_CODES")]:
                path = os.path.join(out, f"{name}_{fam}_{tag}.safetensors")
                # QDIT_CUDA_FP8_CODES=0: the GELU matmuls' output through BF16 (backend.h: fp8_codes_between), for the comparison
                envs = dict(os.environ, QDIT_LOG="info", **({env: "0" if env == "QDIT_CUDA_FP8_CODES" else "1"} if env else {}))
                r = subprocess.run([qdit, "forward", "--component", comp, "--inputs", io_path, "--output", path, "--device", dev,
                                    "--precision", prec], capture_output=True, text=True, env=envs)
                if tag == "cuda_bf16" and "FP8 codes" in r.stderr:  # (cuBLASLt's FP8 output, or its fallback through BF16)
                    codes_used = "through BF16" if "no FP8-output matmul" in r.stderr else "FP8 output"
                if r.returncode and "cuBLASLt has no matmul" in r.stderr:
                    # as the op harness skips them: 128x128-block FP8 writing F32 at N < 128 (the tiny model's), where
                    # cuBLASLt has no block-scaled algorithm; the error names the layer and the shape
                    print(f"| {name} {fam} | {dev} | {prec} | family | skipped: {r.stderr.strip().splitlines()[-1][-160:]} | |")
                    continue
                if r.returncode:
                    print(f"| {name} {fam} | {dev} | {prec} | family | FAILED: {r.stderr.strip()[-200:]} | |")
                    fails += 1
                    continue
                got[tag] = load_file(path)["output"].astype(np.float64)
            if "cpu" not in got:
                continue
            cls = 0.45 if any(t in fam for t in four_bit) else 0.2
            e_cpu = rel(got["cpu"], ref)
            print(f"| {name} {fam} (vs unquantized) | cpu | f32 | family | {e_cpu:.2e} | {cls:g} |")
            if codes_used and "cuda_bf16_nocodes" in got:
                print(f"| {name} {fam} (bf16: GELU outputs as FP8 codes, {codes_used}, against codes off) | cuda | bf16 | family | "
                      f"{rel(got['cuda_bf16'], got['cuda_bf16_nocodes']):.2e} | |")
            for tag, prec in [("cuda", "f32"), ("cuda_precise", "f32 promoted"), ("cuda_bf16", "bf16"), ("cuda_bf16_nocodes", "bf16, FP8 codes off")]:
                if tag not in got:
                    continue
                e_ref, e_x = rel(got[tag], ref), rel(got[tag], got["cpu"])
                bound = min(cls, 1.25 * e_cpu) if tag == "cuda" else cls
                ok = e_ref <= bound and np.isfinite(got[tag]).all()
                fails += not ok
                print(f"| {name} {fam} (vs unquantized; vs CPU) | cuda | {prec} | family | {e_ref:.2e}; {e_x:.2e} | {bound:.3g} {'ok' if ok else 'FAIL'} |")
sys.exit(1 if fails else 0)
