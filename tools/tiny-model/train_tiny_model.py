#!/usr/bin/env python3
"""Train qdit's embedded default model on the GPU machine: a small Z-Image-layout text-to-image pipeline
(ZImagePipeline: a byte-level BPE tokenizer, a Qwen3 text encoder, a ZImageTransformer2DModel and an
AutoencoderKL), trained from scratch on scenes it draws itself (tools/tiny-model/scenes.py), and exported
as a diffusers pipeline folder with diffusers / transformers tensor names and configs.

Stages, all seeded:
  1. tokenizer: BPE merges learned on the caption vocabulary and Qwen's chat template, until every word
     is one token; written as a Qwen2-style tokenizer.json with Qwen's chat special tokens.
  2. VAE: AutoencoderKL (4 blocks, 8x, 16 latent channels) on rendered scenes; the latents' mean and
     standard deviation become shift_factor and 1/scaling_factor.
  3. transformer + text encoder, jointly, with the flow-matching objective of Z-Image's pipeline
     (x_s = s*noise + (1-s)*x0, the model sees 1-s and predicts x0 - noise), captions dropped 10% of the
     time so classifier-free guidance works; an exponential moving average of the weights is exported.
  4. evaluation: the held-out prompts (never shown in training) sampled with the pipeline's own Euler
     schedule in PyTorch and judged by the scene checker, for a few guidance scales.
  5. export in bf16, with f32 input/output pairs of each module for the check against `qdit forward`.

The model code here is written for this project to train the model; it is not part of qdit's engine.
Usage: train_tiny_model.py --out DIR [--seed 0] [--vae-steps N] [--dit-steps N] [--smoke]"""
import argparse
import copy
import json
import math
import os
import random
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes  # noqa: E402
from bpe import CAP_LEN, Tokenizer, all_caption_words, write_json  # noqa: E402

# ---------------------------------------------------------------- files

def write_safetensors(path, tensors, dtype=torch.bfloat16):
    """Our own writer: sorted names, 8-aligned header, `format: pt` metadata (as torch's save_file writes)."""
    codes = {torch.bfloat16: "BF16", torch.float32: "F32", torch.int64: "I64"}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        if t.is_floating_point():
            t = t.to(dtype)
        raw = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        header[name] = {"dtype": codes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)) + hj)
        for b in blobs:
            f.write(b)


# ---------------------------------------------------------------- text encoder: Qwen3Model

class HFRMSNorm(nn.Module):
    """transformers' Qwen3RMSNorm: normalise in fp32, cast back, then scale."""

    def __init__(self, n, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(n)), eps

    def forward(self, x):
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


class Qwen3Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, hd, nh, nkv = c["hidden_size"], c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
        self.input_layernorm = HFRMSNorm(h, c["rms_norm_eps"])
        self.post_attention_layernorm = HFRMSNorm(h, c["rms_norm_eps"])
        self.self_attn = nn.Module()
        a = self.self_attn
        a.q_proj, a.k_proj = nn.Linear(h, nh * hd, bias=False), nn.Linear(h, nkv * hd, bias=False)
        a.v_proj, a.o_proj = nn.Linear(h, nkv * hd, bias=False), nn.Linear(nh * hd, h, bias=False)
        a.q_norm, a.k_norm = HFRMSNorm(hd, c["rms_norm_eps"]), HFRMSNorm(hd, c["rms_norm_eps"])
        self.mlp = nn.Module()
        self.mlp.gate_proj = nn.Linear(h, c["intermediate_size"], bias=False)
        self.mlp.up_proj = nn.Linear(h, c["intermediate_size"], bias=False)
        self.mlp.down_proj = nn.Linear(c["intermediate_size"], h, bias=False)
        self.nh, self.nkv, self.hd = nh, nkv, hd

    def forward(self, x, cos, sin):
        B, L, _ = x.shape
        a = self.self_attn
        h = self.input_layernorm(x)
        q = a.q_norm(a.q_proj(h).view(B, L, self.nh, self.hd)).transpose(1, 2)
        k = a.k_norm(a.k_proj(h).view(B, L, self.nkv, self.hd)).transpose(1, 2)
        v = a.v_proj(h).view(B, L, self.nkv, self.hd).transpose(1, 2)

        def rot(t):  # Llama-style rotate_half RoPE, as transformers applies it to Qwen3
            t1, t2 = t[..., : self.hd // 2], t[..., self.hd // 2:]
            return t * cos + torch.cat([-t2, t1], -1) * sin

        q, k = rot(q), rot(k)
        k = k.repeat_interleave(self.nh // self.nkv, dim=1)
        v = v.repeat_interleave(self.nh // self.nkv, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + a.o_proj(o.transpose(1, 2).reshape(B, L, self.nh * self.hd))
        h = self.post_attention_layernorm(x)
        return x + self.mlp.down_proj(F.silu(self.mlp.gate_proj(h)) * self.mlp.up_proj(h))


class Qwen3(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([Qwen3Layer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = HFRMSNorm(c["hidden_size"], c["rms_norm_eps"])
        nn.init.normal_(self.embed_tokens.weight, 0, 0.5)

    def forward(self, ids):
        """hidden_states[-2]: the output of the next-to-last decoder layer, before the final norm."""
        B, L = ids.shape
        hd = self.c["head_dim"]
        inv = 1.0 / (self.c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64, device=ids.device).float() / hd))
        fr = torch.arange(L, device=ids.device).float()[:, None] * inv[None]
        emb = torch.cat([fr, fr], -1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed_tokens(ids)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for layer in self.layers[:-1]:
            x = layer(x, cos, sin)
        return x


# ---------------------------------------------------------------- VAE: AutoencoderKL

class Resnet(nn.Module):
    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin, eps=1e-6), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout, eps=1e-6), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.conv_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if hasattr(self, "conv_shortcut") else x) + h


class VaeAttention(nn.Module):
    """The mid block's single-head spatial self-attention with a residual."""

    def __init__(self, c, groups):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, c, eps=1e-6)
        self.to_q, self.to_k, self.to_v = nn.Linear(c, c), nn.Linear(c, c), nn.Linear(c, c)
        self.to_out = nn.ModuleList([nn.Linear(c, c)])

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.group_norm(x).view(B, C, H * W).transpose(1, 2)
        o = F.scaled_dot_product_attention(self.to_q(h)[:, None], self.to_k(h)[:, None], self.to_v(h)[:, None])[:, 0]
        return x + self.to_out[0](o).transpose(1, 2).reshape(B, C, H, W)


class MidBlock(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.resnets = nn.ModuleList([Resnet(c, c, groups), Resnet(c, c, groups)])
        self.attentions = nn.ModuleList([VaeAttention(c, groups)])

    def forward(self, x):
        return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Down(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    def __init__(self, cin, cout, n, groups, sampler):
        super().__init__()
        self.resnets = nn.ModuleList([Resnet(cin if j == 0 else cout, cout, groups) for j in range(n)])
        if sampler == "down":
            self.downsamplers = nn.ModuleList([Down(cout)])
        elif sampler == "up":
            self.upsamplers = nn.ModuleList([Up(cout)])

    def forward(self, x):
        for r in self.resnets:
            x = r(x)
        for s in getattr(self, "downsamplers", []) or getattr(self, "upsamplers", []):
            x = s(x)
        return x


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        ch, g, n, lat = c["block_out_channels"], c["norm_num_groups"], c["layers_per_block"], c["latent_channels"]
        self.conv_in = nn.Conv2d(3, ch[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            [Block(ch[max(i - 1, 0)], ch[i], n, g, "down" if i + 1 < len(ch) else None) for i in range(len(ch))])
        self.mid_block = MidBlock(ch[-1], g)
        self.conv_norm_out, self.conv_out = nn.GroupNorm(g, ch[-1], eps=1e-6), nn.Conv2d(ch[-1], 2 * lat, 3, padding=1)

    def forward(self, x):
        x = self.conv_in(x)
        for b in self.down_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(self.mid_block(x))))


class Decoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        ch, g, n, lat = c["block_out_channels"], c["norm_num_groups"], c["layers_per_block"], c["latent_channels"]
        rev = list(reversed(ch))
        self.conv_in = nn.Conv2d(lat, rev[0], 3, padding=1)
        self.mid_block = MidBlock(rev[0], g)
        self.up_blocks = nn.ModuleList(
            [Block(rev[max(i - 1, 0)], rev[i], n + 1, g, "up" if i + 1 < len(ch) else None) for i in range(len(ch))])
        self.conv_norm_out, self.conv_out = nn.GroupNorm(g, ch[0], eps=1e-6), nn.Conv2d(ch[0], 3, 3, padding=1)

    def forward(self, z):
        x = self.mid_block(self.conv_in(z))
        for b in self.up_blocks:
            x = b(x)
        return self.conv_out(F.silu(self.conv_norm_out(x)))


class VAE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c, self.encoder, self.decoder = c, Encoder(c), Decoder(c)

    def encode_mean(self, x):
        return self.encoder(x).chunk(2, dim=1)[0]


# ---------------------------------------------------------------- transformer: ZImageTransformer2DModel

class DRMSNorm(nn.Module):
    """diffusers' RMSNorm: fp32 variance, then the weight."""

    def __init__(self, n, eps):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(n)), eps

    def forward(self, x):
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).to(x.dtype)


def rope_apply(x, cos, sin):
    """Interleaved pairs rotated in fp32 (Z-Image's complex multiply): x [B, L, H, hd], cos/sin [L, hd/2]."""
    xf = x.float().unflatten(-1, (-1, 2))
    a, b = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None], sin[None, :, None]
    return torch.stack([a * c - b * s, b * c + a * s], -1).flatten(-2).to(x.dtype)


class ZBlock(nn.Module):
    def __init__(self, D, heads, adaln, eps, modulated):
        super().__init__()
        hd = D // heads
        self.heads, self.hd, self.modulated = heads, hd, modulated
        self.attention = nn.Module()
        a = self.attention
        a.to_q, a.to_k, a.to_v = (nn.Linear(D, D, bias=False) for _ in range(3))
        a.to_out = nn.ModuleList([nn.Linear(D, D, bias=False)])
        a.norm_q, a.norm_k = DRMSNorm(hd, eps), DRMSNorm(hd, eps)
        F_ = int(D / 3 * 8)
        self.feed_forward = nn.Module()
        self.feed_forward.w1, self.feed_forward.w3 = nn.Linear(D, F_, bias=False), nn.Linear(D, F_, bias=False)
        self.feed_forward.w2 = nn.Linear(F_, D, bias=False)
        self.attention_norm1, self.attention_norm2 = DRMSNorm(D, eps), DRMSNorm(D, eps)
        self.ffn_norm1, self.ffn_norm2 = DRMSNorm(D, eps), DRMSNorm(D, eps)
        if modulated:
            self.adaLN_modulation = nn.ModuleList([nn.Linear(adaln, 4 * D)])
            nn.init.zeros_(self.adaLN_modulation[0].weight), nn.init.zeros_(self.adaLN_modulation[0].bias)

    def forward(self, x, adaln, cos, sin):
        B, L, D = x.shape
        if self.modulated:
            sm, gm, sf, gf = self.adaLN_modulation[0](adaln)[:, None].chunk(4, dim=-1)
            sm, sf, gm, gf = 1 + sm, 1 + sf, torch.tanh(gm), torch.tanh(gf)
        a = self.attention
        h = self.attention_norm1(x)
        if self.modulated:
            h = h * sm
        q = a.norm_q(a.to_q(h).view(B, L, self.heads, self.hd))
        k = a.norm_k(a.to_k(h).view(B, L, self.heads, self.hd))
        v = a.to_v(h).view(B, L, self.heads, self.hd)
        q, k = rope_apply(q, cos, sin), rope_apply(k, cos, sin)
        o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
        o = self.attention_norm2(a.to_out[0](o.reshape(B, L, D)))
        x = x + (gm * o if self.modulated else o)
        f = self.ffn_norm1(x)
        if self.modulated:
            f = f * sf
        ff = self.feed_forward
        f = self.ffn_norm2(ff.w2(F.silu(ff.w1(f)) * ff.w3(f)))
        return x + (gf * f if self.modulated else f)


def timestep_embedding(t, dim=256):
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


def rope_tables(c, ids):
    """cos/sin [L, hd/2] for integer positions ids [L, 3]: per axis 1/theta^(2j/d) in float64."""
    cs, sn = [], []
    for ax, d in enumerate(c["axes_dims"]):
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
        ang = (ids[:, ax].double()[:, None] * inv[None]).float()
        cs.append(ang.cos()), sn.append(ang.sin())
    return torch.cat(cs, -1), torch.cat(sn, -1)


class ZImage(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        D, H, eps, ad = c["dim"], c["n_heads"], c["norm_eps"], min(c["dim"], 256)
        tok = 4 * c["in_channels"]
        self.all_x_embedder = nn.ModuleDict({"2-1": nn.Linear(tok, D)})
        fl = nn.Module()
        fl.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(ad, D))
        fl.linear = nn.Linear(D, tok)
        nn.init.zeros_(fl.linear.weight), nn.init.zeros_(fl.linear.bias)
        nn.init.zeros_(fl.adaLN_modulation[1].weight), nn.init.zeros_(fl.adaLN_modulation[1].bias)
        self.all_final_layer = nn.ModuleDict({"2-1": fl})
        self.t_embedder = nn.Module()
        self.t_embedder.mlp = nn.Sequential(nn.Linear(256, 1024), nn.SiLU(), nn.Linear(1024, ad))
        self.cap_embedder = nn.Sequential(DRMSNorm(c["cap_feat_dim"], eps), nn.Linear(c["cap_feat_dim"], D))
        self.x_pad_token = nn.Parameter(torch.randn(1, D) * 0.02)
        self.cap_pad_token = nn.Parameter(torch.randn(1, D) * 0.02)
        self.layers = nn.ModuleList([ZBlock(D, H, ad, eps, True) for _ in range(c["n_layers"])])
        self.noise_refiner = nn.ModuleList([ZBlock(D, H, ad, eps, True) for _ in range(c["n_refiner_layers"])])
        self.context_refiner = nn.ModuleList([ZBlock(D, H, ad, eps, False) for _ in range(c["n_refiner_layers"])])
        self.tables = {}

    def rope(self, N_h, N_w, Lp, device):
        key = (N_h, N_w, Lp, str(device))
        if key not in self.tables:
            img = torch.stack([torch.full((N_h * N_w,), Lp + 1), torch.arange(N_h).repeat_interleave(N_w),
                               torch.arange(N_w).repeat(N_h)], -1)
            cap = torch.stack([1 + torch.arange(Lp), torch.zeros(Lp, dtype=torch.long), torch.zeros(Lp, dtype=torch.long)], -1)
            ci, si = rope_tables(self.c, img)
            cc, sc = rope_tables(self.c, cap)
            self.tables[key] = [t.to(device) for t in (ci, si, cc, sc, torch.cat([ci, cc]), torch.cat([si, sc]))]
        return self.tables[key]

    def forward(self, x, t, cap, cap_len):
        """x [B, C, h, w] latents, t [B] = 1 - sigma, cap [B, Lp, cap_dim] features, cap_len [B] valid rows.
        Returns [B, C, h, w] (x0 - noise under the flow-matching parameterisation)."""
        B, C, h, w = x.shape
        Lp = cap.shape[1]
        assert Lp % 32 == 0 and (h // 2) * (w // 2) % 32 == 0
        adaln = self.t_embedder.mlp(timestep_embedding(t * self.c["t_scale"]).to(x.dtype))
        tok = x.view(B, C, h // 2, 2, w // 2, 2).permute(0, 2, 4, 3, 5, 1).reshape(B, (h // 2) * (w // 2), 4 * C)
        img = self.all_x_embedder["2-1"](tok)
        txt = self.cap_embedder(cap)
        pad = torch.arange(Lp, device=x.device)[None, :, None] >= cap_len[:, None, None]
        txt = torch.where(pad, self.cap_pad_token.to(txt.dtype), txt)
        ci, si, cc, sc, ca, sa = self.rope(h // 2, w // 2, Lp, x.device)
        for b in self.noise_refiner:
            img = b(img, adaln, ci, si)
        for b in self.context_refiner:
            txt = b(txt, None, cc, sc)
        u = torch.cat([img, txt], 1)
        for b in self.layers:
            u = b(u, adaln, ca, sa)
        fl = self.all_final_layer["2-1"]
        N = img.shape[1]
        y = F.layer_norm(u[:, :N], (u.shape[-1],), eps=1e-6) * (1 + fl.adaLN_modulation(adaln)[:, None])
        y = fl.linear(y)
        return y.view(B, h // 2, w // 2, 2, 2, C).permute(0, 5, 1, 3, 2, 4).reshape(B, C, h, w)


# ---------------------------------------------------------------- data

COLOR_T = torch.tensor([scenes.COLORS[k] for k in scenes.COLORS], dtype=torch.float32) / 127.5 - 1
COLOR_ID = {k: i for i, k in enumerate(scenes.COLORS)}


def render_batch(batch, device, res=scenes.RES, ss=2):
    """Scenes -> images [B, 3, res, res] in [-1, 1], 2x supersampled, on the GPU."""
    B, n = len(batch), res * ss
    c = (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / ss
    ys, xs = c[:, None], c[None, :]
    col = COLOR_T.to(device)
    img = col[[COLOR_ID[s["background"]] for s in batch]][:, :, None, None].expand(B, 3, n, n).clone()
    for slot in range(2):
        idx = [i for i, s in enumerate(batch) if len(s["objects"]) > slot]
        if not idx:
            continue
        objs = [batch[i]["objects"][slot] for i in idx]
        cx = torch.tensor([scenes.CELL[scenes.cell_of(o["position"])[1]] * res + o["jx"] for o in objs], device=device)[:, None, None]
        cy = torch.tensor([scenes.CELL[scenes.cell_of(o["position"])[0]] * res + o["jy"] for o in objs], device=device)[:, None, None]
        r = torch.tensor([scenes.SIZES[o["size"]] for o in objs], device=device)[:, None, None]
        kind = torch.tensor([scenes.SHAPES.index(o["shape"]) for o in objs], device=device)[:, None, None]
        dx, dy = xs[None] - cx, ys[None] - cy
        m = torch.where(kind == 0, dx * dx + dy * dy <= r * r,
                        torch.where(kind == 1, (dx.abs() <= r) & (dy.abs() <= r),
                                    torch.where(kind == 2, (dy >= -r) & (dy <= r) & (dx.abs() <= (dy + r) / 2), dx.abs() + dy.abs() <= r)))
        fg = col[[COLOR_ID[o["color"]] for o in objs]][:, :, None, None]
        sel = torch.tensor(idx, device=device)
        img[sel] = torch.where(m[:, None], fg, img[sel])
    return F.avg_pool2d(img, ss)


class Scenes:
    def __init__(self, seed, heldout):
        self.rng, self.heldout = random.Random(seed), set(heldout)

    def batch(self, B):
        out = []
        while len(out) < B:
            s = scenes.random_scene(self.rng)
            s["caption"] = scenes.caption(s)
            if s["caption"] in self.heldout:
                continue
            for o in s["objects"]:
                o["jx"], o["jy"] = self.rng.uniform(-scenes.JITTER, scenes.JITTER), self.rng.uniform(-scenes.JITTER, scenes.JITTER)
            out.append(s)
        return out


# ---------------------------------------------------------------- training

def encode_prompts(tok, prompts, device):
    ids = torch.zeros(len(prompts), CAP_LEN, dtype=torch.long)
    lens = torch.zeros(len(prompts), dtype=torch.long)
    for i, p in enumerate(prompts):
        t = tok.encode(p)
        assert len(t) <= CAP_LEN, f"{len(t)} tokens in {p!r}"
        ids[i, : len(t)] = torch.tensor(t)
        ids[i, len(t):] = tok.special_ids["<|endoftext|>"]
        lens[i] = len(t)
    return ids.to(device), lens.to(device)


class Pool:
    """A fixed set of rendered training scenes (images as uint8 on the GPU, captions as token ids), drawn once:
    per-step Python scene drawing would bound the step time, not the GPU."""

    def __init__(self, data, tok, n, device, log):
        t0 = time.time()
        imgs, ids, lens = [], [], []
        while sum(len(i) for i in imgs) < n:
            b = data.batch(1024)
            imgs.append(((render_batch(b, device) + 1) * 127.5).round().to(torch.uint8))
            i, l_ = encode_prompts(tok, [s["caption"] for s in b], device)
            ids.append(i), lens.append(l_)
        self.img, self.ids, self.lens = torch.cat(imgs)[:n], torch.cat(ids)[:n], torch.cat(lens)[:n]
        self.empty_ids, self.empty_len = encode_prompts(tok, [""], device)
        self.n, self.lat = n, None
        log(f"pool: {n} scenes rendered and tokenized in {time.time() - t0:.0f} s")

    def images(self, idx):
        return self.img[idx].float() / 127.5 - 1

    @torch.no_grad()
    def encode(self, vae, lat):
        shift_f, scale_f = lat
        self.lat = torch.cat([((vae.encode_mean(self.images(torch.arange(i, min(i + 1024, self.n), device=self.img.device))) - shift_f)
                               * scale_f).to(torch.bfloat16) for i in range(0, self.n, 1024)])


def cosine_lr(base, step, steps, warmup):
    return base * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))


def train_vae(vae, pool, steps, batch, device, log):
    opt = torch.optim.AdamW(vae.parameters(), lr=4e-4, weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(1)
    t0 = time.time()
    for step in range(steps):
        x = pool.images(torch.randint(pool.n, (batch,), generator=gen, device=device))
        for g in opt.param_groups:
            g["lr"] = cosine_lr(4e-4, step, steps, 100)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            mean, logvar = vae.encoder(x).float().chunk(2, dim=1)
            logvar = logvar.clamp(-30, 20)
            z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
            y = vae.decoder(z).float()
        kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
        loss = (y - x).abs().mean() + (y - x).pow(2).mean() + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if step % 500 == 0 or step == steps - 1:
            log(f"vae step {step:5d} loss {loss.item():.4f} kl {kl.item():.3f} ({time.time() - t0:.0f} s)")


@torch.no_grad()
def latent_stats(vae, pool):
    idx = torch.arange(0, min(pool.n, 4096), device=pool.img.device)
    zs = torch.cat([vae.encode_mean(pool.images(idx[i:i + 512])) for i in range(0, len(idx), 512)])
    return zs.mean().item(), zs.std().item()


@torch.no_grad()
def vae_psnr(vae, data, device):
    x = render_batch(data.batch(64), device)  # fresh scenes, not from the pool
    y = vae.decoder(vae.encode_mean(x)).clamp(-1, 1)
    mse = ((y - x) / 2).pow(2).mean().item()
    return 10 * math.log10(1 / mse)


def shifted(sigma, shift=3.0):
    return shift * sigma / (1 + (shift - 1) * sigma)


class Denoiser(nn.Module):
    """Text encoder and transformer as one module, so one compiled graph covers the training step."""

    def __init__(self, te, dit):
        super().__init__()
        self.te, self.dit = te, dit

    def forward(self, ids, lens, xs, t):
        return self.dit(xs, t, self.te(ids), lens)


def train_dit(dit, te, pool, steps, batch, device, log, budget_s, compile_, peak):
    model = Denoiser(te, dit)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=peak, weight_decay=0.01, betas=(0.9, 0.99), fused=True)
    ema = [p.detach().clone() for p in params]
    run = model
    if compile_:
        try:
            run = torch.compile(model)
        except Exception as e:  # noqa: BLE001
            log(f"torch.compile unavailable ({e}); eager")
    gen = torch.Generator(device=device).manual_seed(2)
    dit.rope(8, 8, CAP_LEN, device)  # fill the RoPE table cache before tracing
    t0 = time.time()
    step = 0
    while step < steps:
        idx = torch.randint(pool.n, (batch,), generator=gen, device=device)
        x0 = pool.lat[idx].float()
        drop = torch.rand(batch, generator=gen, device=device) < 0.1
        ids = torch.where(drop[:, None], pool.empty_ids, pool.ids[idx])
        lens = torch.where(drop, pool.empty_len, pool.lens[idx])
        sigma = shifted(torch.sigmoid(torch.randn(batch, generator=gen, device=device)))
        noise = torch.randn(x0.shape, generator=gen, device=device)
        s4 = sigma[:, None, None, None]
        xs = s4 * noise + (1 - s4) * x0
        lr = cosine_lr(peak, step, steps, 500)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pred = run(ids, lens, xs, 1 - sigma)
        loss = (pred.float() - (x0 - noise)).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            d = min(0.999, (1 + step) / (10 + step))
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - d)
        if step == 300:  # fit the run into its time budget: the schedule shortens, and the log says so
            torch.cuda.synchronize()
            per = (time.time() - t_warm) / 200
            fit = int(300 + (budget_s - (time.time() - t0)) / per)
            log(f"dit: {per * 1000:.1f} ms per step after warm-up")
            if fit < steps:
                log(f"dit: {steps} steps do not fit {budget_s:.0f} s; training {fit}")
                steps = fit
        if step == 100:
            torch.cuda.synchronize()
            t_warm = time.time()
        if step % 1000 == 0 or step == steps - 1:
            log(f"dit step {step:6d} loss {loss.item():.4f} lr {lr:.2e} ({time.time() - t0:.0f} s)")
        step += 1
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    return steps


@torch.no_grad()
def sample(dit, te, vae, tok, lat, prompts, guidance, steps, device, seed=0):
    """Z-Image's pipeline in PyTorch: static shift 3, Euler, v = -(pos + g (pos - neg)), decode."""
    shift_f, scale_f = lat
    x = sample_latents(dit, te, tok, prompts, guidance, steps, device, seed)
    img = vae.decoder(x / scale_f + shift_f).float()
    return ((img / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def train_decoder(vae, pool, lat, steps, batch, noise, peak, device, log):
    """Fine-tune the VAE decoder with the encoder frozen, so the latent space (and a trained transformer) stays
    valid. Inputs are the pool's latents plus Gaussian noise of a random level in [0, noise] (scaled latent
    units): a generated latent is never exactly an encoded one, and the decoder learns to map near misses
    onto clean shapes. The L1 term keeps edges sharp (a median, not a mean, of what a noisy latent could be)."""
    shift_f, scale_f = lat
    dec = vae.decoder
    dec.train().requires_grad_(True)
    opt = torch.optim.AdamW(dec.parameters(), lr=peak, weight_decay=0.0)
    gen = torch.Generator(device=device).manual_seed(3)
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(pool.n, (batch,), generator=gen, device=device)
        x = pool.images(idx)
        z = pool.lat[idx].float()
        lvl = torch.rand(batch, 1, 1, 1, generator=gen, device=device) * noise
        z = z + lvl * torch.randn(z.shape, generator=gen, device=device)
        for g in opt.param_groups:
            g["lr"] = cosine_lr(peak, step, steps, 100)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = dec(z / scale_f + shift_f).float()
        loss = 2 * (y - x).abs().mean() + (y - x).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dec.parameters(), 1.0)
        opt.step()
        if step % 1000 == 0 or step == steps - 1:
            log(f"decoder step {step:5d} loss {loss.item():.4f} lr {cosine_lr(peak, step, steps, 100):.2e} ({time.time() - t0:.0f} s)")
    dec.eval().requires_grad_(False)


def selection_prompts(n, heldout):
    """Fresh captions for choosing between models (never the held-out ones): many, so the rate is not noisy."""
    rng, held, out = random.Random(424242), set(heldout), []
    while len(out) < n:
        c = scenes.caption(scenes.random_scene(rng))
        if c not in held:
            out.append(c)
    return out


@torch.no_grad()
def sample_latents(dit, te, tok, prompts, guidance, steps, device, seed=0, chunk=256):
    """Z-Image's sampler up to the final latent (scaled units), in chunks; prompt i gets noise from one
    seeded stream, so two models see the same noise."""
    g = torch.Generator(device=device).manual_seed(seed)
    x_all = torch.randn(len(prompts), 16, 16, 16, generator=g, device=device)
    sig = [shifted(1 - i / steps) for i in range(steps)] + [0.0]
    outs = []
    for c in range(0, len(prompts), chunk):
        ps = prompts[c:c + chunk]
        x = x_all[c:c + chunk].clone()
        ids, lens = encode_prompts(tok, ps, device)
        nids, nlens = encode_prompts(tok, [""] * len(ps), device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            pos, neg = te(ids), te(nids)
        for i in range(steps):
            t = torch.full((len(ps),), 1 - sig[i], device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                p = dit(x, t, pos, lens).float()
                if guidance > 0:
                    p = p + guidance * (p - dit(x, t, neg, nlens).float())
            x = x + (sig[i + 1] - sig[i]) * (-p)
        outs.append(x)
    return torch.cat(outs)


@torch.no_grad()
def decode_check(decoder, lat, z, prompts, chunk=256):
    """Checker acceptance of decoded latents z (scaled units) against their prompts."""
    shift_f, scale_f = lat
    ok = 0
    for c in range(0, len(prompts), chunk):
        img = decoder(z[c:c + chunk] / scale_f + shift_f).float()
        img = ((img / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        ok += sum(scenes.check(im, p)[0] for im, p in zip(img, prompts[c:c + chunk]))
    return ok / len(prompts)


# ---------------------------------------------------------------- export

def state(module, prefix=""):
    return {prefix + k: v for k, v in module.state_dict().items()}


def export(out, tok, te, te_cfg, vae, vae_cfg, dit, dit_cfg, lat, log):
    p = os.path.join(out, "pipeline")
    tok.write(os.path.join(p, "tokenizer"))
    write_json(os.path.join(p, "text_encoder", "config.json"), te_cfg)
    write_safetensors(os.path.join(p, "text_encoder", "model.safetensors"), state(te))
    vcfg = dict(vae_cfg, scaling_factor=round(1.0 / lat[1], 6), shift_factor=round(lat[0], 6))
    write_json(os.path.join(p, "vae", "config.json"), vcfg)
    write_safetensors(os.path.join(p, "vae", "diffusion_pytorch_model.safetensors"), state(vae))
    write_json(os.path.join(p, "transformer", "config.json"), dit_cfg)
    write_safetensors(os.path.join(p, "transformer", "diffusion_pytorch_model.safetensors"), state(dit))
    write_json(os.path.join(p, "scheduler", "scheduler_config.json"), {
        "_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.35.0", "num_train_timesteps": 1000,
        "shift": 3.0, "use_dynamic_shifting": False, "base_shift": 0.5, "max_shift": 1.15, "base_image_seq_len": 256,
        "max_image_seq_len": 4096, "invert_sigmas": False, "shift_terminal": None, "use_karras_sigmas": False,
        "use_exponential_sigmas": False, "use_beta_sigmas": False, "time_shift_type": "exponential",
        "stochastic_sampling": False})
    write_json(os.path.join(p, "model_index.json"), {
        "_class_name": "ZImagePipeline", "_diffusers_version": "0.35.0",
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"], "text_encoder": ["transformers", "Qwen3Model"],
        "tokenizer": ["transformers", "Qwen2Tokenizer"], "transformer": ["diffusers", "ZImageTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"]})
    total = 0
    for root, _, files in os.walk(p):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    log(f"exported {p}: {total / 1e6:.2f} MB")
    return vcfg


@torch.no_grad()
def module_checks(out, tok, te, vae, dit, device):
    """f32 inputs and outputs of each module with the exported (bf16-rounded) weights, for `qdit forward`."""
    d = os.path.join(out, "checks")
    os.makedirs(d, exist_ok=True)
    for m in (te, vae, dit):
        for prm in m.parameters():
            prm.copy_(prm.to(torch.bfloat16).float())
    g = torch.Generator(device="cpu").manual_seed(7)
    prompt = scenes.heldout_prompts()[1]
    ids = torch.tensor([tok.encode(prompt)])
    feats = te.float().cpu()(ids)
    write_safetensors(os.path.join(d, "text_encoder.safetensors"), {"input_ids": ids, "hidden_states_minus2": feats}, torch.float32)
    x = torch.randn(1, 16, 16, 16, generator=g)
    L = ids.shape[1]
    cap = torch.zeros(1, CAP_LEN, feats.shape[-1])
    cap[:, :L] = feats
    y = dit.float().cpu()(x, torch.tensor([0.3]), cap, torch.tensor([L]))
    write_safetensors(os.path.join(d, "transformer.safetensors"),
                      {"x": x[0, :, None], "cap_feats": feats[0], "t": torch.tensor([0.3]), "output": y[0, :, None]}, torch.float32)
    z = torch.randn(1, 16, 16, 16, generator=g)
    img = vae.float().cpu().decoder(z)
    write_safetensors(os.path.join(d, "vae.safetensors"), {"z": z, "output": img}, torch.float32)
    for m in (te, vae, dit):
        m.to(device)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vae-steps", type=int, default=2000)
    ap.add_argument("--dit-steps", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--pool", type=int, default=160000, help="training scenes drawn once")
    ap.add_argument("--dit-budget", type=float, default=380.0, help="seconds the transformer's training may take")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--resume", help="a pipeline folder this trainer exported: keep its tokenizer and VAE, continue the transformer and text encoder")
    ap.add_argument("--lr", type=float, default=3e-4, help="peak learning rate of the transformer and text encoder")
    ap.add_argument("--decoder-steps", type=int, default=0, help="fine-tune the VAE decoder (encoder frozen) for this many steps after resuming")
    ap.add_argument("--decoder-noise", type=float, default=0.15, help="largest latent noise level the decoder is fine-tuned on")
    ap.add_argument("--decoder-lr", type=float, default=1e-4)
    ap.add_argument("--select", type=int, default=600, help="fresh (not held-out) prompts the models are compared on")
    ap.add_argument("--smoke", action="store_true", help="a few steps of each stage, to check the plumbing")
    a = ap.parse_args()
    if a.smoke:
        a.vae_steps, a.dit_steps, a.pool, a.select = 100, 400, 8192, 64
        a.decoder_steps = min(a.decoder_steps, 200)
    os.makedirs(a.out, exist_ok=True)
    logf = open(os.path.join(a.out, "train.log"), "w")

    def log(msg):
        print(msg, flush=True)
        logf.write(msg + "\n")
        logf.flush()

    random.seed(a.seed), np.random.seed(a.seed), torch.manual_seed(a.seed)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    device = "cuda"
    heldout = scenes.heldout_prompts()
    data = Scenes(a.seed, heldout)

    tok = Tokenizer(all_caption_words())
    log(f"tokenizer: {len(tok.merges)} merges, {tok.size} tokens")
    te_cfg = {"architectures": ["Qwen3Model"], "model_type": "qwen3", "hidden_size": 128, "num_hidden_layers": 3,
              "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 32, "intermediate_size": 384, "hidden_act": "silu",
              "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "max_position_embeddings": 512, "vocab_size": (tok.size + 63) // 64 * 64,
              "tie_word_embeddings": False, "attention_bias": False, "attention_dropout": 0.0, "use_sliding_window": False,
              "sliding_window": None, "max_window_layers": 3, "bos_token_id": None, "eos_token_id": tok.special_ids["<|im_end|>"],
              "initializer_range": 0.02, "torch_dtype": "bfloat16", "transformers_version": "4.51.0", "use_cache": False}
    vae_cfg = {"_class_name": "AutoencoderKL", "_diffusers_version": "0.35.0", "act_fn": "silu", "in_channels": 3, "out_channels": 3,
               "latent_channels": 16, "block_out_channels": [32, 64, 64, 64], "down_block_types": ["DownEncoderBlock2D"] * 4,
               "up_block_types": ["UpDecoderBlock2D"] * 4, "layers_per_block": 1, "norm_num_groups": 16, "mid_block_add_attention": True,
               "sample_size": scenes.RES, "force_upcast": True, "use_quant_conv": False, "use_post_quant_conv": False,
               "latents_mean": None, "latents_std": None}
    dit_cfg = {"_class_name": "ZImageTransformer2DModel", "_diffusers_version": "0.35.0", "all_patch_size": [2], "all_f_patch_size": [1],
               "in_channels": 16, "dim": 192, "n_layers": 6, "n_refiner_layers": 2, "n_heads": 3, "n_kv_heads": 3, "norm_eps": 1e-5,
               "qk_norm": True, "cap_feat_dim": 128, "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": [16, 24, 24],
               "axes_lens": [256, 64, 64]}

    vae = VAE(vae_cfg).to(device)
    te = Qwen3(te_cfg).to(device)
    dit = ZImage(dit_cfg).to(device)
    for name, m in (("text encoder", te), ("vae", vae), ("transformer", dit)):
        log(f"{name}: {sum(p.numel() for p in m.parameters()) / 1e6:.2f} M parameters")

    t0 = time.time()
    pool = Pool(data, tok, a.pool, device, log)
    if a.resume:
        from safetensors.torch import load_file

        for m, rel in ((te, "text_encoder/model.safetensors"), (vae, "vae/diffusion_pytorch_model.safetensors"),
                       (dit, "transformer/diffusion_pytorch_model.safetensors")):
            m.load_state_dict({k: v.float() for k, v in load_file(os.path.join(a.resume, rel)).items()}, strict=True)
        vc = json.load(open(os.path.join(a.resume, "vae", "config.json")))
        vae.eval().requires_grad_(False)
        lat = (vc["shift_factor"], vc["scaling_factor"])
        log(f"resumed from {a.resume}: vae PSNR {vae_psnr(vae, data, device):.2f} dB, shift {lat[0]} scale {lat[1]}")
    else:
        train_vae(vae, pool, a.vae_steps, 64, device, log)
        vae.eval().requires_grad_(False)
        lat = latent_stats(vae, pool)
        log(f"vae: PSNR {vae_psnr(vae, data, device):.2f} dB on fresh scenes, latent mean {lat[0]:.4f} std {lat[1]:.4f} ({time.time() - t0:.0f} s)")
        lat = (lat[0], 1.0 / lat[1])  # (shift_factor, scaling_factor) as the pipeline uses them
    pool.encode(vae, lat)
    lat_s = lat  # (shift_factor, scaling_factor) in both branches above

    # Model selection uses fresh prompts and the validation set, never the held-out set.
    sel, val = selection_prompts(a.select, heldout), scenes.validation_prompts()
    fresh = Scenes(a.seed + 1000, heldout).batch(min(a.select, 512))
    with torch.no_grad():
        x = render_batch(fresh, device)
        z_rt = torch.cat([(vae.encode_mean(x[i:i + 256]) - lat_s[0]) * lat_s[1] for i in range(0, len(fresh), 256)])
    fresh_caps = [s_["caption"] for s_ in fresh]
    selection = {}

    def report(tag, decoders):
        z_sel = sample_latents(dit, te, tok, sel, 2.0, 20, device)
        z_val = sample_latents(dit, te, tok, val, 2.0, 20, device)
        for dname, dec in decoders:
            r = (decode_check(dec, lat_s, z_sel, sel), decode_check(dec, lat_s, z_val, val), decode_check(dec, lat_s, z_rt, fresh_caps))
            selection[f"{tag}/{dname}"] = r
            log(f"selection [{tag}, {dname} decoder]: {len(sel)} fresh prompts {r[0] * 100:.1f}%, validation "
                f"{round(r[1] * len(val))}/{len(val)}, VAE round trip {r[2] * 100:.1f}% (guidance 2, 20 steps)")

    decoders = [("trained", vae.decoder)]
    if a.resume and a.select:
        report("resumed", decoders)
    if a.decoder_steps:
        old_dec = copy.deepcopy(vae.decoder)
        t0 = time.time()
        train_decoder(vae, pool, lat_s, a.decoder_steps, 64, a.decoder_noise, a.decoder_lr, device, log)
        log(f"decoder fine-tuned in {time.time() - t0:.0f} s ({a.decoder_steps} steps, latent noise <= {a.decoder_noise})")
        decoders = [("previous", old_dec), ("fine-tuned", vae.decoder)]
        if a.resume and a.select:
            report("resumed", decoders[1:])

    if a.dit_steps:
        t0 = time.time()
        a.dit_steps = train_dit(dit, te, pool, a.dit_steps, a.batch, device, log, a.dit_budget, not a.no_compile, a.lr)
        log(f"transformer + text encoder trained in {time.time() - t0:.0f} s ({a.dit_steps} steps of {a.batch})")
    dit.eval(), te.eval()
    if a.select:
        report("final", decoders)
        if len(decoders) == 2:
            best = max(decoders, key=lambda d: selection[f"final/{d[0]}"][0])
            vae.decoder = best[1]
            log(f"exporting the {best[0]} decoder (higher acceptance on the fresh prompts)")

    steps = 20
    results = {}
    for gscale in (0.0, 2.0, 4.0):
        imgs = sample(dit, te, vae, tok, lat, heldout, gscale, steps, device)
        ok = [scenes.check(im, p)[0] for im, p in zip(imgs, heldout)]
        results[gscale] = sum(ok) / len(ok)
        log(f"held-out acceptance (PyTorch sampler, {steps} steps, guidance {gscale}): {sum(ok)}/{len(ok)}")
        if gscale == 2.0:
            for im, p, good in zip(imgs, heldout, ok):
                if not good:
                    log(f"  rejected: {p}: {scenes.check(im, p)[1]}")
            try:
                from PIL import Image

                grid = np.concatenate([np.concatenate(list(imgs[r * 10:(r + 1) * 10]), 1) for r in range(len(imgs) // 10)], 0)
                Image.fromarray(grid).save(os.path.join(a.out, "heldout_grid.png"))
            except ImportError:
                pass

    vcfg = export(a.out, tok, te, te_cfg, vae, vae_cfg, dit, dit_cfg, (lat[0], 1.0 / lat[1]), log)
    write_json(os.path.join(a.out, "train_summary.json"),
               {"seed": a.seed, "vae_steps": a.vae_steps, "dit_steps": a.dit_steps, "batch": a.batch, "pool": a.pool, "lr": a.lr,
                "resumed_from": a.resume,
                "scaling_factor": vcfg["scaling_factor"], "shift_factor": vcfg["shift_factor"],
                "heldout_acceptance_pytorch": {str(k): v for k, v in results.items()},
                "decoder_steps": a.decoder_steps, "decoder_noise": a.decoder_noise,
                "selection_fresh_validation_roundtrip": selection,
                "prompt_ids": {p: tok.encode(p) for p in heldout[:8] + [""]}})
    module_checks(a.out, tok, te, vae, dit, device)
    log("done")


if __name__ == "__main__":
    main()
