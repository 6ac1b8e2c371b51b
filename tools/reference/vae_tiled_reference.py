"""diffusers' tiled AutoencoderKL decode on the vae_kl_tiny_a weights, in float64 on the CPU, for a latent
larger than one tile (the fixture's sample_size 32 makes 16-latent tiles with 25% overlap): writes z, the
tiled output and the untiled output to $OUT/vae_kl_tiny_a_tiled_f64.safetensors.

Run on the GPU machine with a diffusers source tree on PYTHONPATH (fetched, never committed):
  PYTHONPATH=.ref/src python3 tools/reference/vae_tiled_reference.py .ref/fixtures/vae_kl_tiny_a
"""
import os
import sys

import torch
from safetensors.torch import save_file
from diffusers import AutoencoderKL

fix = sys.argv[1]
torch.manual_seed(20261129)
z = torch.randn(1, 16, 40, 36, dtype=torch.float64)  # 40 x 36: edge tiles of two sizes
vae = AutoencoderKL.from_pretrained(os.path.join(fix, "vae"), torch_dtype=torch.float64).eval()
with torch.no_grad():
    untiled = vae.decode(z).sample
    vae.enable_tiling()
    tiled = vae.decode(z).sample
print("tile_latent_min_size", vae.tile_latent_min_size, "tile_sample_min_size", vae.tile_sample_min_size,
      "overlap", vae.tile_overlap_factor)
print("output", tuple(tiled.shape), "tiled vs untiled relative L2",
      ((tiled - untiled).norm() / untiled.norm()).item())
save_file({"z": z.float(), "output": tiled.float(), "output_untiled": untiled.float()},
          os.path.join(os.environ.get("OUT", "."), "vae_kl_tiny_a_tiled_f64.safetensors"))
