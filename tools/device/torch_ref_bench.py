"""PyTorch's numbers for the same shapes as bench/cuda/bench_cuda_ops.c, on the same card in the same call:
bf16 x @ W.T (cuBLAS), fp8 row-wise-scaled torch._scaled_mm (per-token x, per-channel W, as online fp8),
fp8 per-tensor _scaled_mm, int8 torch._int_mm (int8 x int8 -> int32, the GEMM of W8A8), and SDPA (flash / cuDNN
backends) at L = 4608, 24 heads, D = 128.
Mean of `reps` runs timed with CUDA events after 3 warm-ups. Random inputs."""
import sys
import torch
import torch.nn.functional as F

reps = int(sys.argv[1]) if len(sys.argv) > 1 else 20
dev = "cuda"
M = 4608
shapes = [(3072, 3072), (3072, 9216), (3072, 12288), (12288, 3072), (15360, 3072), (3072, 21504)]


def timed(fn, n=reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(n):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / n


print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, M = {M}; mean of {reps} runs\n")
print("| op (K x N) | ms | TFLOP/s |\n|---|---:|---:|")
for K, N in shapes:
    flop = 2.0 * M * N * K
    x = torch.randn(M, K, device=dev, dtype=torch.bfloat16)
    w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) * 0.03
    ms = timed(lambda: x @ w.t())
    print(f"| torch bf16 matmul {K}x{N} | {ms:.3f} | {flop / ms / 1e9:.1f} |")
    xf8 = x.to(torch.float8_e4m3fn)
    wf8 = w.to(torch.float8_e4m3fn)
    sx = torch.ones(M, 1, device=dev, dtype=torch.float32)
    sw = torch.ones(1, N, device=dev, dtype=torch.float32)
    try:
        ms = timed(lambda: torch._scaled_mm(xf8, wf8.t(), scale_a=sx, scale_b=sw, out_dtype=torch.bfloat16))
        print(f"| torch fp8 _scaled_mm rowwise {K}x{N} (GEMM only) | {ms:.3f} | {flop / ms / 1e9:.1f} |")
    except Exception as e:  # noqa: BLE001
        print(f"| torch fp8 rowwise {K}x{N} | failed: {e} | |")
    one = torch.ones((), device=dev, dtype=torch.float32)
    ms = timed(lambda: torch._scaled_mm(xf8, wf8.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
    print(f"| torch fp8 _scaled_mm tensor {K}x{N} (GEMM only) | {ms:.3f} | {flop / ms / 1e9:.1f} |")
    xi8 = torch.randint(-127, 128, (M, K), device=dev, dtype=torch.int8)
    wi8 = torch.randint(-127, 128, (N, K), device=dev, dtype=torch.int8)
    try:
        ms = timed(lambda: torch._int_mm(xi8, wi8.t()))
        print(f"| torch int8 _int_mm {K}x{N} (GEMM only, int32 out) | {ms:.3f} | {flop / ms / 1e9:.1f} |")
    except Exception as e:  # noqa: BLE001
        print(f"| torch int8 _int_mm {K}x{N} | failed: {str(e)[:80]} | |")

L, H, D = 4608, 24, 128
q, k, v = (torch.randn(1, H, L, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
flop = 4.0 * L * L * H * D
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402

for name, be in [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]:
    try:
        with sdpa_kernel([be]):
            ms = timed(lambda: F.scaled_dot_product_attention(q, k, v))
        print(f"| torch SDPA {name} L4608 H24 D128 | {ms:.3f} | {flop / ms / 1e9:.1f} |")
    except Exception as e:  # noqa: BLE001
        print(f"| torch SDPA {name} | failed: {str(e)[:80]} | |")
