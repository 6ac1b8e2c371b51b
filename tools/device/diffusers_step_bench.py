"""diffusers' FluxTransformer2DModel or ZImageTransformer2DModel (from a local copy of diffusers' public
source in .ref/src, never committed) at FLUX.1-dev's / Z-Image-Turbo's real configuration with random bf16
weights, one denoising step at 1024×1024 (FLUX: 4096 image tokens, 512 text tokens, guidance embedded;
Z-Image: 4096 image tokens, 128 caption tokens), eager and torch.compile, on the GPU machine — the PyTorch
side of bench_dit_step --device cuda, in the same call. Median of `reps` steps after warm-up, timed with
CUDA events. Usage: python3 tools/device/diffusers_step_bench.py [reps] [compile: 0|1] [flux|zimage]"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.getcwd(), ".ref", "src"))
if not os.path.isdir(os.path.join(os.getcwd(), ".ref", "src", "diffusers")):
    sys.exit("diffusers_step_bench: no diffusers source in .ref/src: carry .refpack (diffusers_src.tar.xz) with the call, "
             "e.g. carry [\".devrun\", \".refpack\"]")
import torch  # noqa: E402
from diffusers import FluxTransformer2DModel, ZImageTransformer2DModel  # noqa: E402

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
do_compile = len(sys.argv) > 2 and sys.argv[2] == "1"
which = sys.argv[3] if len(sys.argv) > 3 else "flux"
torch.manual_seed(0)
dev, dt = "cuda", torch.bfloat16


def random_model(cls, cfg):
    with torch.device("meta"):
        m = cls(**cfg)
    m = m.to_empty(device="cuda").to(torch.bfloat16)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.02)
    return m.eval()


if which == "zimage":
    name = "ZImageTransformer2DModel"
    model = random_model(ZImageTransformer2DModel, dict(
        all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=3840, n_layers=30, n_refiner_layers=2, n_heads=30,
        n_kv_heads=30, norm_eps=1e-5, qk_norm=True, cap_feat_dim=2560, rope_theta=256.0, t_scale=1000.0, axes_dims=[32, 48, 48],
        axes_lens=[1536, 512, 512]))
    # a 1024² latent [16, 1, 128, 128] (4096 tokens after 2×2 patches) and 128 caption tokens
    zx = torch.randn(16, 1, 128, 128, device=dev, dtype=dt)
    zcap = torch.randn(128, 2560, device=dev, dtype=dt)
    zt = torch.full((1,), 0.5, device=dev, dtype=dt)

    def call(m):
        return m(x=[zx], t=zt, cap_feats=[zcap], return_dict=False)
else:
    name = "FluxTransformer2DModel"
    model = random_model(FluxTransformer2DModel, dict(
        patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
        joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56)))
    n_img, n_txt = 4096, 512
    inp = dict(hidden_states=torch.randn(1, n_img, 64, device=dev, dtype=dt),
               encoder_hidden_states=torch.randn(1, n_txt, 4096, device=dev, dtype=dt),
               pooled_projections=torch.randn(1, 768, device=dev, dtype=dt), timestep=torch.full((1,), 0.5, device=dev, dtype=dt),
               guidance=torch.full((1,), 3.5, device=dev, dtype=dt), img_ids=torch.zeros(n_img, 3, device=dev),
               txt_ids=torch.zeros(n_txt, 3, device=dev), return_dict=False)
    ii = torch.arange(n_img, device=dev)
    inp["img_ids"][:, 1] = (ii // 64).float()
    inp["img_ids"][:, 2] = (ii % 64).float()

    def call(m):
        return m(**inp)


def bench(fn, label):
    with torch.no_grad():
        for _ in range(2):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            torch.cuda.synchronize()
            times.append(a.elapsed_time(b))
    times.sort()
    print(f"| diffusers {name} {label} | {times[len(times) // 2]:.1f} ms (median of {reps}) |", flush=True)


print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}; {'Z-Image-Turbo' if which == 'zimage' else 'FLUX.1-dev'} config, 1024x1024, bf16", flush=True)
print(f"weights on GPU: {torch.cuda.memory_allocated() / 2**30:.2f} GiB", flush=True)
bench(lambda: call(model), "eager")
if do_compile:
    t0 = time.time()
    cm = torch.compile(model)
    with torch.no_grad():
        call(cm)
    torch.cuda.synchronize()
    print(f"compile + first run: {time.time() - t0:.0f} s", flush=True)
    bench(lambda: call(cm), "torch.compile")
print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB", flush=True)
