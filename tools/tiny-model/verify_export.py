#!/usr/bin/env python3
"""Check an exported tiny-model pipeline on the GPU machine, right after training (same call):
  1. the tokenizer: HF `tokenizers` and `qdit tokenize --style qwen3` give the ids the trainer trained on;
  2. each module through `qdit forward --precision f32` against the trainer's f32 outputs (relative L2);
  3. `qdit generate` (bf16, CPU) on the held-out prompts, judged by the scene checker;
  4. optionally, diffusers' ZImagePipeline (a local copy of its public source in .ref/src, if present)
     on the same folder and seed, compared with qdit's image.
Usage: verify_export.py TRAIN_OUT QDIT OUT_DIR [--steps N] [--guidance G] [--jobs J]"""
import argparse
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes  # noqa: E402
from bpe import HEAD, TAIL  # noqa: E402


def rel_l2(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def read_png(path):
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("train_out")
    ap.add_argument("qdit")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--jobs", type=int, default=8)
    a = ap.parse_args()
    pipe = os.path.join(a.train_out, "pipeline")
    summary = json.load(open(os.path.join(a.train_out, "train_summary.json")))
    failures = 0

    # 1. tokenizer
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(os.path.join(pipe, "tokenizer", "tokenizer.json"))
    for p, ids in summary["prompt_ids"].items():
        h = hf.encode(HEAD + p + TAIL, add_special_tokens=False).ids
        q = subprocess.run([a.qdit, "tokenize", "--model", os.path.join(pipe, "tokenizer"), "--style", "qwen3", "--no-pad", "--prompt", p],
                           capture_output=True, text=True)
        qi = [int(x) for x in q.stdout.split()]
        same = h == ids and qi == ids
        failures += not same
        print(f"tokenizer {'ok  ' if same else 'FAIL'} {p!r}: trainer {len(ids)} ids, HF {'=' if h == ids else h}, qdit {'=' if qi == ids else qi}")

    # 2. modules
    from safetensors.numpy import load_file

    checks = os.path.join(a.train_out, "checks")
    for comp, key in (("text_encoder", "hidden_states_minus2"), ("transformer", "output"), ("vae", "output")):
        io = os.path.join(checks, comp + ".safetensors")
        res = os.path.join(a.out, f"forward_{comp}.safetensors")
        r = subprocess.run([a.qdit, "forward", "--component", os.path.join(pipe, comp), "--inputs", io, "--output", res,
                            "--precision", "f32"], capture_output=True, text=True)
        if r.returncode:
            print(f"forward {comp}: FAIL rc {r.returncode}: {r.stderr.strip()[-400:]}")
            failures += 1
            continue
        ref = load_file(io)[key]
        got = load_file(res)[key]
        e = rel_l2(got.reshape(ref.shape), ref)
        failures += e > 1e-4
        print(f"forward {comp}: rel L2 {e:.3g} vs the trainer's f32 output {'ok' if e <= 1e-4 else 'FAIL'}")

    # 3. qdit generate on the held-out prompts
    prompts = scenes.heldout_prompts()
    img_dir = os.path.join(a.out, "qdit_heldout")
    os.makedirs(img_dir, exist_ok=True)

    def gen(i):
        path = os.path.join(img_dir, f"{i:02d}.png")
        r = subprocess.run([a.qdit, "generate", "--model-path", pipe, "--prompt", prompts[i], "--output", path, "--height", "128",
                            "--width", "128", "--num-inference-steps", str(a.steps), "--guidance-scale", str(a.guidance), "--seed", str(i)],
                           capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="2"))
        return path if r.returncode == 0 else r.stderr[-300:]

    with ThreadPoolExecutor(a.jobs) as ex:
        paths = list(ex.map(gen, range(len(prompts))))
    ok, imgs = 0, []
    for i, (p, path) in enumerate(zip(prompts, paths)):
        if not path.endswith(".png"):
            print(f"generate {i}: FAIL {path}")
            failures += 1
            imgs.append(np.zeros((128, 128, 3), np.uint8))
            continue
        img = read_png(path)
        imgs.append(img)
        good, why = scenes.check(img, p)
        ok += good
        if not good:
            print(f"  rejected {i:02d}: {p}: {why}")
    print(f"qdit generate bf16 held-out acceptance: {ok}/{len(prompts)} ({args_str(a)})")
    try:
        from PIL import Image

        grid = np.concatenate([np.concatenate(imgs[r * 10:(r + 1) * 10], 1) for r in range(len(imgs) // 10)], 0)
        Image.fromarray(grid).save(os.path.join(a.out, "qdit_heldout_grid.png"))
    except Exception as e:  # noqa: BLE001
        print("grid:", e)

    # 4. diffusers on the same folder, if a local copy of its source is there
    ref = os.path.join(os.getcwd(), ".ref", "src")
    if os.path.isdir(os.path.join(ref, "diffusers")):
        try:
            sys.path.insert(0, ref)
            import torch
            from diffusers import ZImagePipeline

            dp = ZImagePipeline.from_pretrained(pipe, torch_dtype=torch.bfloat16)
            for i in range(4):
                g = torch.Generator("cpu").manual_seed(i)
                im = dp(prompt=prompts[i], height=128, width=128, num_inference_steps=a.steps, guidance_scale=a.guidance,
                        generator=g).images[0]
                d = np.asarray(im.convert("RGB")).astype(np.float64)
                q = imgs[i].astype(np.float64)
                mse = ((d - q) ** 2).mean()
                psnr = 10 * np.log10(255.0 ** 2 / max(mse, 1e-12))
                print(f"diffusers ZImagePipeline vs qdit, prompt {i}: PSNR {psnr:.1f} dB, checker on diffusers' image: "
                      f"{scenes.check(np.asarray(im.convert('RGB')), prompts[i])}")
        except Exception as e:  # noqa: BLE001
            print(f"diffusers check not run: {type(e).__name__}: {e}")
    print(f"verify: {failures} failures")
    return 1 if failures else 0


def args_str(a):
    return f"{a.steps} steps, guidance {a.guidance}, seeds 0..59"


if __name__ == "__main__":
    sys.exit(main())
