"""The four operations of the fused LLM decode step, in plain PyTorch: the twins of the Triton
kernels of `engines/llm_triton.py` (same signatures), used on the CPU and as their test oracles.

One decode step feeds one token per row. Shapes: B rows, D hidden, H query heads, K kv heads of
`hd` dims, the cache layer (B, K, S, hd) as `cosyvoice3.nn.qwen2.KVCache` holds it (strided views
allowed). The arithmetic is the model's (`cosyvoice3.nn.qwen2`), which these call where it has a
function for it; a kernel may keep float32 where the model rounds in between.

- `add_rms_norm(x, residual, weight, eps)`: the residual sum `x + residual` (or `x` alone for
  the first layer) and its RMSNorm -> (normed, sum);
- `rotary_write(qkv, positions, k_cache, v_cache, n_heads, n_kv_heads, theta)`: split the fused
  projection, rotate q and k at each row's position, write k and v into the cache slot of that
  position -> q (B, H, hd);
- `decode_attention(q, k_cache, v_cache, positions)`: each row's query heads attend over the cache
  slots 0..its position (its own length: no padding to a bucket) -> (B, H * hd);
- `silu_gate(gate_up)`: SiLU of the first half times the second -> (B, F);
- `choose_tokens(logits, state, start, stop, sampling)`: the next token of rows start..stop-1
  (`cosyvoice3.decoding.token_batch.choose` on the log-softmax; the kernel is in
  `engines/sampling_triton.py`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cosyvoice3.decoding.token_batch import choose
from cosyvoice3.nn.qwen2 import apply_rotary, rotary_cos_sin

KIND = "PyTorch twins"


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    summed = x if residual is None else x + residual
    return F.rms_norm(summed, weight.shape, weight, eps), summed


def rotary_write(qkv: torch.Tensor, positions: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 n_heads: int, n_kv_heads: int, theta: float) -> torch.Tensor:
    batch, head_dim = qkv.shape[0], k_cache.shape[-1]
    q, k, v = qkv.split([n_heads * head_dim, n_kv_heads * head_dim, n_kv_heads * head_dim], dim=-1)
    cos, sin = rotary_cos_sin(positions[:, None], head_dim, theta, qkv.dtype)  # (B, 1, 1, hd)
    q = apply_rotary(q.view(batch, n_heads, 1, head_dim), cos, sin)
    k = apply_rotary(k.view(batch, n_kv_heads, 1, head_dim), cos, sin)
    rows = torch.arange(batch, device=qkv.device)
    k_cache[rows, :, positions] = k[:, :, 0]
    v_cache[rows, :, positions] = v.view(batch, n_kv_heads, head_dim)
    return q[:, :, 0]


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     positions: torch.Tensor) -> torch.Tensor:
    batch, n_heads, head_dim = q.shape
    n_kv_heads, slots = k_cache.shape[1], k_cache.shape[2]
    group = n_heads // n_kv_heads
    q = q.reshape(batch, n_kv_heads, group, head_dim)  # query head h uses kv head h // group
    scores = (q @ k_cache.transpose(-1, -2)) * head_dim ** -0.5  # (B, K, G, S)
    visible = torch.arange(slots, device=q.device)[None, :] <= positions[:, None]  # (B, S)
    probs = scores.float().masked_fill(~visible[:, None, None], float("-inf")).softmax(dim=-1)
    out = probs.to(v_cache.dtype) @ v_cache  # (B, K, G, hd)
    return out.reshape(batch, n_heads * head_dim)


def silu_gate(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def choose_tokens(logits: torch.Tensor, state, start: int, stop: int, sampling) -> torch.Tensor:
    return choose(logits.log_softmax(dim=-1), state, start, stop, sampling)
