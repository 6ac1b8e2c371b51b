"""Where two runs of one transformer part: `qdit forward --trace-linears` on the CPU and on the GPU (f32
activations), then every linear's input compared in call order; prints each layer's relative L2 between the two and
marks the first above the bound. Usage: python3 tools/device/trace_compare.py QDIT_BINARY COMPONENT_DIR INPUTS OUT_DIR [BOUND]"""
import os
import subprocess
import sys

import numpy as np
from safetensors.numpy import load_file

qdit, comp, inputs, out = sys.argv[1:5]
bound = float(sys.argv[5]) if len(sys.argv) > 5 else 1e-5
traces = {}
for dev in ["cpu", "cuda"]:
    path = os.path.join(out, f"trace_{os.path.basename(comp.rstrip('/'))}_{dev}.safetensors")
    r = subprocess.run([qdit, "forward", "--component", comp, "--inputs", inputs, "--output", os.path.join(out, f"trace_out_{dev}.safetensors"),
                        "--device", dev, "--precision", "f32", "--trace-linears", path], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{dev}: {r.stderr.strip()[-300:]}")
    traces[dev] = load_file(path)


def e4m3(x):
    """E4M3 rounding (RNE, saturating at 448) of float64 values, subnormals included"""
    a = np.abs(x)
    e = np.maximum(np.floor(np.log2(np.maximum(a, 2.0 ** -10))), -6)
    q = 2.0 ** (e - 3)
    return np.sign(x) * np.minimum(np.round(a / q) * q, 448.0)


def token_codes(x):
    """per-token E4M3 codes as an FP8 linear with dynamic per-token scales makes them (s = max(amax/448, 1/(448·512)))"""
    x = x.reshape(-1, x.shape[-1])
    s = np.maximum(np.abs(x).max(axis=1, keepdims=True) / 448.0, 1.0 / (448.0 * 512.0))
    return e4m3(x / s)


first = None
# the last column: how many of the input's per-token E4M3 codes differ between the runs. A relative difference ε at an
# FP8 layer's input flips about ε/2^-3 of its codes by one step, which moves the next output by ~sqrt(ε·2^-3): how a
# small difference grows through a model with quantized activations (docs/benchmarks.md, fifteenth pass)
print(f"| call and layer | rel L2 GPU vs CPU | per-token E4M3 codes that differ | |\n|---|---:|---:|---|")
for name in sorted(traces["cpu"]):
    a, b = traces["cpu"][name].astype(np.float64), traces["cuda"].get(name)
    if b is None or b.shape != a.shape:
        print(f"| {name} | missing or another shape on the GPU | | FIRST |" if first is None else f"| {name} | missing | | |")
        first = first or name
        continue
    e = np.linalg.norm(b.astype(np.float64) - a) / max(np.linalg.norm(a), 1e-30)
    mark = ""
    if e > bound and first is None:
        first, mark = name, "FIRST above the bound"
    flips = int((token_codes(a) != token_codes(b.astype(np.float64))).sum())
    print(f"| {name} | {e:.2e} | {flips} of {a.size} | {mark} |")
print(f"first input above {bound:g}: {first or 'none'}")
# the traced run takes the unfused path (no joined projections): the outputs say whether it still parts as the
# untraced GPU run does
plain = os.path.join(out, "trace_out_cuda_untraced.safetensors")
r = subprocess.run([qdit, "forward", "--component", comp, "--inputs", inputs, "--output", plain, "--device", "cuda", "--precision", "f32"],
                   capture_output=True, text=True)
outs = {k: load_file(os.path.join(out, f"trace_out_{k}.safetensors"))["output"].astype(np.float64) for k in ["cpu", "cuda"]}
rel = lambda a, b: np.linalg.norm(a - b) / np.linalg.norm(b)
print(f"outputs: traced GPU vs CPU {rel(outs['cuda'], outs['cpu']):.2e}", end="")
if not r.returncode:
    print(f"; untraced GPU (joined projections) vs CPU {rel(load_file(plain)['output'].astype(np.float64), outs['cpu']):.2e}")
else:
    print(f"; untraced GPU run failed: {r.stderr.strip()[-200:]}")
