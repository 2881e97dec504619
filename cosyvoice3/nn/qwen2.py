"""Qwen2 decoder stack (the CosyVoice3 LLM body) with a static, preallocated KV cache.

Owns the transformer only: RMSNorm, rotary position embedding (NeoX / rotate-half layout),
grouped-query attention through `F.scaled_dot_product_attention`, the SwiGLU MLP and the final
norm. Token embedding lookup and output heads belong to `llm.py`.

Every forward call takes explicit `positions` (B, T) as a tensor and writes K/V into the cache
slots named by those positions; attention always runs over a fixed number of cache slots with
the mask `key_slot <= query_position`. Shapes therefore never depend on Python integers that
change from step to step, so a one-token decode step can be captured in a CUDA graph or
exported to ONNX (the gpt-fast recipe). Parameter names follow Hugging Face's `Qwen2Model`, so
`llm.pt` loads without renaming.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cosyvoice3.config import Qwen2Config


@dataclass
class KVCache:
    """Per-request key/value storage, allocated once.

    k, v: (layers, batch, kv_heads, max_len, head_dim). Slot `p` holds the key/value of
    position `p`; slots not yet written are never attended to (masked by position).
    """

    k: torch.Tensor
    v: torch.Tensor

    @classmethod
    def allocate(cls, cfg: Qwen2Config, max_len: int, batch: int = 1, device="cpu",
                 dtype: torch.dtype = torch.float32) -> "KVCache":
        shape = (cfg.num_hidden_layers, batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    @property
    def max_len(self) -> int:
        return self.k.shape[3]

    @property
    def batch(self) -> int:
        return self.k.shape[1]

    def rows(self, start: int, stop: int) -> "KVCache":
        """A view of batch rows start..stop-1 (the same storage: writes land in this cache)."""
        return KVCache(self.k[:, start:stop], self.v[:, start:stop])

    def move_row(self, source: int, target: int, length: int) -> None:
        """Copy the first `length` positions of row `source` into row `target`."""
        self.k[:, target, :, :length].copy_(self.k[:, source, :, :length])
        self.v[:, target, :, :length].copy_(self.v[:, source, :, :length])


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., dim). One fused kernel accumulating in float32; for float32 input this is
        Hugging Face's arithmetic, for bf16/fp16 it skips HF's extra rounding before the scale.
        While exporting, the same arithmetic spelled out: CUDA builds of torch lower `rms_norm`
        to a fused op that the ONNX exporter cannot translate."""
        if torch.compiler.is_exporting():
            x32 = x.float()
            x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
            return (x32 * self.weight.float()).to(x.dtype)
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def rotary_cos_sin(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    """positions: (B, T) long -> cos, sin: (B, 1, T, head_dim), computed in float32.

    Frequencies are computed here rather than stored, so the module has no buffers to restore
    after `to_empty` and an exported graph constant-folds them.
    """
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (theta ** exponent)  # (head_dim/2,)
    freqs = positions.float()[..., None] * inv_freq  # (B, T, head_dim/2)
    angles = torch.cat([freqs, freqs], dim=-1)[:, None]  # (B, 1, T, head_dim)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, heads, T, head_dim); cos/sin: (B, 1, T, head_dim)."""
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    # One-token decode steps attend with plain matmuls + softmax (a few tiny kernels) instead of
    # the fused SDPA kernel, whose blocking is built for many query rows; a class-wide switch so
    # benchmarks can compare both.
    decode_with_sdpa = False

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        d = cfg.hidden_size
        self.q_proj = nn.Linear(d, self.n_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                mask: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        """x: (B, T, D); positions: (B, T) long; mask: (B, 1, group * T, S) bool (True = may
        attend; the (T, S) mask repeated for the group of query heads sharing a kv head);
        k_cache, v_cache: (B, kv_heads, max_len, head_dim), written in place at `positions`;
        attention reads the first S slots. Returns (B, T, D)."""
        batch, length, _ = x.shape
        q = self.q_proj(x).view(batch, length, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)

        slots = positions[:, None, :, None].expand(batch, self.n_kv_heads, length, self.head_dim)
        k_cache.scatter_(2, slots, k)
        v_cache.scatter_(2, slots, v)
        n_slots = mask.shape[-1]
        # narrow (not slicing) keeps S an exact size under torch.export: S <= max_len is checked
        keys, values = k_cache.narrow(2, 0, n_slots), v_cache.narrow(2, 0, n_slots)  # (B, kv_heads, S, hd)

        # Grouped-query attention without copying K/V: query head h uses kv head h // group, so
        # the heads of one group are laid out as extra query rows of their kv head.
        group = self.n_heads // self.n_kv_heads
        q = q.reshape(batch, self.n_kv_heads, group * length, self.head_dim)
        if length == 1 and not self.decode_with_sdpa:
            scores = (q @ keys.transpose(-1, -2)) * self.head_dim ** -0.5  # (B, kv_heads, G, S)
            probs = scores.float().masked_fill(~mask, float("-inf")).softmax(dim=-1)
            out = probs.to(values.dtype) @ values  # (B, kv_heads, G, hd)
        else:
            out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, kv_heads, G*T, hd)
        out = out.reshape(batch, self.n_heads, length, self.head_dim).transpose(1, 2)
        return self.o_proj(out.reshape(batch, length, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, positions, mask, k_cache, v_cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, positions, mask, k_cache, v_cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Qwen2Model(nn.Module):
    """Embedding table + decoder layers + final norm (Hugging Face `Qwen2Model` names)."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, inputs_embeds: torch.Tensor, positions: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, kv_len: int | None = None) -> torch.Tensor:
        """inputs_embeds: (B, T, D); positions: (B, T) long, the absolute position of each input;
        k_cache, v_cache: (layers, B, kv_heads, max_len, head_dim) (a `KVCache`'s tensors),
        updated in place; kv_len: attend over the first kv_len slots only (a prefill speed-up;
        None = all max_len slots, the static shape of a decode step).
        Returns hidden states (B, T, D) after the final RMSNorm."""
        n_slots = k_cache.shape[3] if kv_len is None else kv_len
        cos, sin = rotary_cos_sin(positions, self.cfg.head_dim, self.cfg.rope_theta, inputs_embeds.dtype)
        key_slots = torch.arange(n_slots, device=positions.device)
        mask = key_slots[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, T, S)
        group = self.cfg.num_attention_heads // self.cfg.num_key_value_heads
        mask = mask.repeat(1, 1, group, 1)  # (B, 1, group * T, S), see Attention
        x = inputs_embeds
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, positions, mask, k_cache[i], v_cache[i])
        return self.norm(x)


class Qwen2ForCausalLM(nn.Module):
    """`model` + the text `lm_head`. The head is never used for speech; it exists because the
    official `llm.pt` stores it. When the config ties embeddings it shares `embed_tokens.weight`
    (no extra memory)."""

    def __init__(self, cfg: Qwen2Config):
        super().__init__()
        self.cfg = cfg
        self.model = Qwen2Model(cfg)
        if cfg.tie_word_embeddings:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False, device="meta")
        else:
            self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Share the embedding Parameter with `lm_head`."""
        if self.cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def _apply(self, fn, recurse=True):
        # `.to(device)` and `to_empty` replace each module's Parameter separately, which unties.
        super()._apply(fn, recurse)
        self.tie_weights()
        return self
