#!/usr/bin/env python3
# A random-weight BF16 FLUX.1-style transformer folder of any size (diffusers names, config.json), for
# benchmarks that need a real checkpoint on disk, e.g. `qdit convert dequantize` (docs/benchmarks.md).
# usage: /usr/bin/python3 bench/make_flux_bf16.py INNER_DIM DOUBLE_BLOCKS SINGLE_BLOCKS OUT_DIR   (numpy only)
import json, struct, sys

import numpy as np

D=int(sys.argv[1]); L=int(sys.argv[2]); S=int(sys.argv[3]); out=sys.argv[4]
H=D//128
cfg={"_class_name":"FluxTransformer2DModel","patch_size":1,"in_channels":64,"out_channels":None,"num_layers":L,"num_single_layers":S,
     "attention_head_dim":128,"num_attention_heads":H,"joint_attention_dim":4096,"pooled_projection_dim":768,"guidance_embeds":True,"axes_dims_rope":[16,56,56]}
json.dump(cfg,open(out+'/config.json','w'))
T={}
def lin(n,i,o,bias=True):
    T[n+'.weight']=(o,i)
    if bias: T[n+'.bias']=(o,)
lin('x_embedder',64,D); lin('context_embedder',4096,D)
for e in ['timestep_embedder','guidance_embedder']:
    lin('time_text_embed.%s.linear_1'%e,256,D); lin('time_text_embed.%s.linear_2'%e,D,D)
lin('time_text_embed.text_embedder.linear_1',768,D); lin('time_text_embed.text_embedder.linear_2',D,D)
for b in range(L):
    p='transformer_blocks.%d.'%b
    lin(p+'norm1.linear',D,6*D); lin(p+'norm1_context.linear',D,6*D)
    for n in ['to_q','to_k','to_v','add_q_proj','add_k_proj','add_v_proj','to_out.0','to_add_out']: lin(p+'attn.'+n,D,D)
    for n in ['norm_q','norm_k','norm_added_q','norm_added_k']: T[p+'attn.%s.weight'%n]=(128,)
    lin(p+'ff.net.0.proj',D,4*D); lin(p+'ff.net.2',4*D,D); lin(p+'ff_context.net.0.proj',D,4*D); lin(p+'ff_context.net.2',4*D,D)
for b in range(S):
    p='single_transformer_blocks.%d.'%b
    lin(p+'norm.linear',D,3*D)
    for n in ['to_q','to_k','to_v']: lin(p+'attn.'+n,D,D)
    for n in ['norm_q','norm_k']: T[p+'attn.%s.weight'%n]=(128,)
    lin(p+'proj_mlp',D,4*D); lin(p+'proj_out',5*D,D)
lin('norm_out.linear',D,2*D); lin('proj_out',D,64)
rng=np.random.default_rng(0)
hdr={}; off=0; blobs=[]
for n,sh in T.items():
    if len(sh)==2: a=(rng.standard_normal(sh,dtype=np.float32)/np.sqrt(sh[1])).astype(np.float32)
    else: a=(1+0.1*rng.standard_normal(sh,dtype=np.float32)).astype(np.float32)
    u=a.view(np.uint32); bf=((u+0x7fff+((u>>16)&1))>>16).astype(np.uint16)
    b=bf.tobytes(); hdr[n]={"dtype":"BF16","shape":list(sh),"data_offsets":[off,off+len(b)]}; off+=len(b); blobs.append(b)
h=json.dumps(hdr).encode(); h+=b' '*((8-len(h)%8)%8)
with open(out+'/diffusion_pytorch_model.safetensors','wb') as f:
    f.write(struct.pack('<Q',len(h))); f.write(h)
    for b in blobs: f.write(b)
print(off/1e6,'MB')
