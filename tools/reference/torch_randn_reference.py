"""Records torch.randn on the CPU generator, the way diffusers pipelines draw initial latents
(`torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))`), as an independent reference
for qdit's own generator (issue 7: same seed, same noise). Run where PyTorch is (the GPU machine); commits
only the data it writes: tests/fixtures/torch_randn.safetensors. Shapes cover torch's two paths (fewer
than 16 values: scalar; 16 or more: the 16-wide vectorised fill with its tail) and the latent shapes of
FLUX.1 / Z-Image at 512² and 1024²; float32 (what the pipelines draw before casting) and bfloat16."""
import os
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "torch_randn.safetensors"
cases = {}
for seed in (0, 1, 42, 12345, 2**32 + 7):
    shapes = [(1,), (5,), (15,), (16,), (17,), (31,), (1, 16, 64, 64), (2, 3, 7)] + ([(1, 16, 128, 128)] if seed == 0 else [])
    for shape in shapes:
        g = torch.Generator("cpu").manual_seed(seed)
        key = f"seed{seed}_" + "x".join(str(d) for d in shape)
        cases[key + "_f32"] = torch.randn(shape, generator=g, dtype=torch.float32).contiguous()
    g = torch.Generator("cpu").manual_seed(seed)
    cases[f"seed{seed}_1x16x64x64_bf16"] = torch.randn((1, 16, 64, 64), generator=g, dtype=torch.bfloat16).contiguous()
    # two draws in a row from one generator (a batch drawn in one call vs successive calls)
    g = torch.Generator("cpu").manual_seed(seed)
    a = torch.randn((3, 5), generator=g)
    b = torch.randn((40,), generator=g)
    cases[f"seed{seed}_then_3x5"] = a.contiguous()
    cases[f"seed{seed}_then_40"] = b.contiguous()
save_file(cases, out, metadata={"torch": torch.__version__, "script": "tools/reference/torch_randn_reference.py"})
print(f"wrote {len(cases)} tensors with torch {torch.__version__} to {out}")
