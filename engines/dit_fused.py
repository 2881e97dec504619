"""The cached streaming DiT call with fewer, larger kernels (`FusedChunkDiT`), for CUDA graphs.

A cached chunk is a few hundred frames, so every kernel of `DiT.forward_cached` costs its launch
and little else; this computes the same function in about two thirds of the kernels:
- the adaptive-norm modulation of every block (and of the final norm) comes from one matrix
  product of the time embedding with all blocks' weights stacked (they depend on t alone);
- q, k and v are one projection (weights concatenated at build time: the module keeps the
  checkpoint's separate weights);
- the rotation (head 0 of q and k) is one pass over both, in float32 as the reference;
- modulate-and-shift and gate-and-residual are single `addcmul`s.
Its twin and test oracle is `DiT.forward_cached` of the module it was built from; the result
equals it up to float rounding (tests/test_engines_dit_fused.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice3.nn.dit import continuation_mask


class FusedChunkDiT(nn.Module):
    """Built from a `cosyvoice3.nn.dit.DiT` (weights copied in its dtype and device)."""

    def __init__(self, dit):
        super().__init__()
        self.cfg = dit.cfg
        self.source = dit  # time embedding, input embedding, rotary frequencies, output projection
        blocks = dit.transformer_blocks
        self.depth, self.dim = len(blocks), dit.cfg.dim
        self.heads, self.dim_head = dit.cfg.heads, dit.cfg.dim_head
        with torch.no_grad():
            mod_w = [b.attn_norm.linear.weight for b in blocks] + [dit.norm_out.linear.weight]
            mod_b = [b.attn_norm.linear.bias for b in blocks] + [dit.norm_out.linear.bias]
            self.mod = nn.Linear(self.dim, 1, device=mod_w[0].device, dtype=mod_w[0].dtype)
            self.mod.weight = nn.Parameter(torch.cat(mod_w).clone(), requires_grad=False)
            self.mod.bias = nn.Parameter(torch.cat(mod_b).clone(), requires_grad=False)
            self.qkv_w = nn.ParameterList(
                [nn.Parameter(torch.cat([b.attn.to_q.weight, b.attn.to_k.weight, b.attn.to_v.weight]).clone(),
                              requires_grad=False) for b in blocks])
            self.qkv_b = nn.ParameterList(
                [nn.Parameter(torch.cat([b.attn.to_q.bias, b.attn.to_k.bias, b.attn.to_v.bias]).clone(),
                              requires_grad=False) for b in blocks])
        self.blocks = blocks  # to_out, ff: used as they are

    def cache_shape(self):
        return self.source.cache_shape()

    def forward(self, x, mask, mu, t, spks, cond, past_len, past_kv, past_conv):
        """`DiT.forward_cached`'s arguments and results."""
        src, d, n = self.source, self.dim, self.depth
        b, _, t_new = x.shape
        c = src.time_embed(t.reshape(-1).expand(b))
        mod = self.mod(F.silu(c)).view(b, n * 6 + 2, d)  # per block: shift, scale, gate (msa), same (mlp)
        blocks_mod = mod[:, :6 * n].view(b, n, 6, d)
        scales = 1 + blocks_mod[:, :, 1::3]  # (B, n, 2, D): 1 + scale_msa, 1 + scale_mlp
        h, conv_in = src.input_embed.forward_cached(x.transpose(1, 2), cond.transpose(1, 2), mu.transpose(1, 2),
                                                    spks, past_conv)
        visible = continuation_mask(mask, past_len, past_kv.shape[4], self.cfg.static_chunk_size)
        bias = torch.zeros(visible.shape, device=x.device, dtype=h.dtype).masked_fill(~visible, float("-inf"))
        positions = past_len.reshape(-1, 1).to(x.device) + torch.arange(t_new, device=x.device)[None]
        cos, sin = src.rotary_embed.at(positions)  # (B, Tn, Dh) float32
        cos, sin = cos[:, :, None], sin[:, :, None]
        rot = cos.shape[-1]
        new_k, new_v = [], []
        for i, block in enumerate(self.blocks):
            m = blocks_mod[:, i]
            norm = torch.addcmul(m[:, 0, None], F.layer_norm(h, (d,), eps=1e-6), scales[:, i, 0, None])
            qkv = F.linear(norm, self.qkv_w[i], self.qkv_b[i]).view(b, t_new, 3, d)
            head = qkv[:, :, :2, :rot].float()  # head 0 of q and k
            swapped = head.unflatten(-1, (rot // 2, 2)).flip(-1).flatten(-2)
            qkv[:, :, :2, :rot] = torch.addcmul(head * cos, swapped, sin)
            q, k, v = qkv.view(b, t_new, 3, self.heads, self.dim_head).permute(2, 0, 3, 1, 4)
            keys = torch.cat([past_kv[i, 0].to(k.dtype), k], dim=2)
            values = torch.cat([past_kv[i, 1].to(v.dtype), v], dim=2)
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=bias)
            a = block.attn.to_out[0](out.transpose(1, 2).reshape(b, t_new, d))
            h = torch.addcmul(h, m[:, 2, None], a)
            norm = torch.addcmul(m[:, 3, None], F.layer_norm(h, (d,), eps=1e-6), scales[:, i, 1, None])
            h = torch.addcmul(h, m[:, 5, None], block.ff(norm))
            new_k.append(k)
            new_v.append(v)
        scale, shift = mod[:, 6 * n], mod[:, 6 * n + 1]
        h = torch.addcmul(shift[:, None], F.layer_norm(h, (d,), eps=1e-6), 1 + scale[:, None])
        new_kv = torch.stack([torch.stack(new_k), torch.stack(new_v)], dim=1)
        return src.proj_out(h).transpose(1, 2), new_kv, conv_in
