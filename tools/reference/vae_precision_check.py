"""Re-runs diffusers' AutoencoderKL.decode on the vae_kl_tiny_a fixture (weights and z from the fixture) on
CUDA in float32 with TF32 off and on, and on the CPU in float64, and reports each run's relative L2 distance
to the fixture's stored output. Writes the float64 output to $OUT/vae_kl_tiny_a_f64.safetensors.

Run on the GPU machine with a diffusers source tree on PYTHONPATH (fetched, never committed):
  PYTHONPATH=.ref/src python3 tools/reference/vae_precision_check.py .ref/fixtures/vae_kl_tiny_a
"""
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from diffusers import AutoencoderKL

fix = sys.argv[1]
io = load_file(os.path.join(fix, "io.safetensors"))
z, want = io["z"], io["output"].double()


def rel(a, b):
    a, b = a.double().cpu(), b.double().cpu()
    return ((a - b).norm() / b.norm()).item()


outs = {}
for tf32 in (False, True):
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    vae = AutoencoderKL.from_pretrained(os.path.join(fix, "vae"), torch_dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        outs[f"cuda_f32_tf32_{'on' if tf32 else 'off'}"] = vae.decode(z.cuda()).sample.float().cpu()
vae = AutoencoderKL.from_pretrained(os.path.join(fix, "vae"), torch_dtype=torch.float64).eval()
with torch.no_grad():
    outs["cpu_f64"] = vae.decode(z.double()).sample
for k, v in outs.items():
    print(f"{k:22s} vs fixture output: {rel(v, want):.3e}   vs cpu_f64: {rel(v, outs['cpu_f64']):.3e}")
print(f"{'fixture output':22s} vs cpu_f64: {rel(want, outs['cpu_f64']):.3e}")
save_file({"z": z, "output": outs["cpu_f64"].float()}, os.path.join(os.environ.get("OUT", "."), "vae_kl_tiny_a_f64.safetensors"))
