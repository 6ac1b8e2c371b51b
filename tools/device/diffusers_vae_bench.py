"""diffusers' AutoencoderKL decoder (from a local copy of diffusers' public source in .ref/src, never committed) at
FLUX.1's / Z-Image's VAE configuration with random bf16 weights: one decode of a 16 × res/8 × res/8 latent, eager and
channels_last, on the GPU machine — the PyTorch side of bench_vae_decode --device cuda, in the same call. Each run
decodes and copies the image to the host as f32 (bench_vae_decode's runs do the same). Median of `reps` after a warm-up.
Usage: python3 tools/device/diffusers_vae_bench.py [reps] [res]"""
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.getcwd(), ".ref", "src"))
if not os.path.isdir(os.path.join(os.getcwd(), ".ref", "src", "diffusers")):
    sys.exit("diffusers_vae_bench: no diffusers source in .ref/src: carry .refpack (diffusers_src.tar.xz) with the call")
import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
res = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
torch.manual_seed(0)
vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2,
                    norm_num_groups=32, mid_block_add_attention=True, sample_size=1024, scaling_factor=0.3611, shift_factor=0.1159,
                    use_quant_conv=False, use_post_quant_conv=False).to("cuda", torch.bfloat16).eval()
z = torch.randn(1, 16, res // 8, res // 8, device="cuda", dtype=torch.bfloat16) * 2


def run(model):
    ts = []
    for i in range(reps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            img = model.decode(z, return_dict=False)[0]
        img.float().cpu()
        ts.append(time.perf_counter() - t0)
    return ts[0], statistics.median(ts[1:])


w, m = run(vae)
print(f"diffusers AutoencoderKL.decode {res}x{res} bf16 eager: warm-up {w:.4f} s, median {m:.4f} s over {reps} runs")
vae = vae.to(memory_format=torch.channels_last)
w, m = run(vae)
print(f"diffusers AutoencoderKL.decode {res}x{res} bf16 eager channels_last: warm-up {w:.4f} s, median {m:.4f} s over {reps} runs")
print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
