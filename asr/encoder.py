"""SenseVoice-Small's network: four task queries, the SAN-M encoder and the CTC head.

Module and parameter names are those of the released `model.pt` (FunASR's `SenseVoiceSmall`), so
the file loads with a strict key and shape check and nothing renamed:

    embed.weight                                   (16, 560)   the task queries
    encoder.encoders0.0.*                          first layer, 560 -> 512 (no residual around attention)
    encoder.encoders.{0..48}.*                     512 -> 512
    encoder.after_norm.*, encoder.tp_encoders.{0..19}.*, encoder.tp_norm.*
    ctc.ctc_lo.weight / .bias                      (25055, 512) / (25055,)

A layer (pre-norm): x + SANM(LN(x)), then x + FFN(LN(x)). SAN-M attention is multi-head
self-attention whose values also feed an FSMN memory: a depthwise 1-D convolution over time
(kernel 11, zero padded, no bias) plus the values themselves, added to the attention output.
Before the first layer the input is scaled by sqrt(output_size) and a sinusoidal position
encoding over the input width is added, positions counted from 1. LayerNorm runs in float32 (as
the reference does) whatever the weights' dtype. Shapes: B batch, T frames, D width.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import SenseVoiceConfig

N_QUERIES = 16  # 7 reserved + 7 languages + 2 text-normalisation styles (embed.weight rows)


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, returned in the input's dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class SANMAttention(nn.Module):
    """Multi-head self-attention plus the FSMN memory of the values. (B, T, in) -> (B, T, D)."""

    def __init__(self, in_size: int, size: int, heads: int, kernel_size: int, shift: int = 0):
        super().__init__()
        self.heads, self.head_dim = heads, size // heads
        self.linear_q_k_v = nn.Linear(in_size, 3 * size)
        self.linear_out = nn.Linear(size, size)
        self.fsmn_block = nn.Conv1d(size, size, kernel_size, groups=size, bias=False)
        left = (kernel_size - 1) // 2 + shift
        self.padding = (left, kernel_size - 1 - left)

    def fsmn(self, v: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """v (B, T, D), keep (B, T, 1) or None -> memory (B, T, D)."""
        if keep is not None:
            v = v * keep
        memory = self.fsmn_block(F.pad(v.transpose(1, 2), self.padding)).transpose(1, 2) + v
        return memory * keep if keep is not None else memory

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        b, t, _ = x.shape
        q, k, v = self.linear_q_k_v(x).chunk(3, dim=-1)                    # 3 x (B, T, D)
        memory = self.fsmn(v, keep)

        def heads(z):
            return z.reshape(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, d)

        mask = None if keep is None else keep[:, None, :, 0].bool()[:, :, None, :]  # (B, 1, 1, T): key is valid
        attended = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=mask)
        attended = attended.transpose(1, 2).reshape(b, t, -1)              # (B, T, D)
        return self.linear_out(attended) + memory


class FeedForward(nn.Module):
    def __init__(self, size: int, hidden: int):
        super().__init__()
        self.w_1 = nn.Linear(size, hidden)
        self.w_2 = nn.Linear(hidden, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(torch.relu(self.w_1(x)))


class SANMLayer(nn.Module):
    """Pre-norm encoder layer; the attention has a residual only when in_size == size."""

    def __init__(self, in_size: int, cfg: SenseVoiceConfig):
        super().__init__()
        size = cfg.output_size
        self.residual = in_size == size
        self.self_attn = SANMAttention(in_size, size, cfg.attention_heads, cfg.kernel_size, cfg.sanm_shift)
        self.feed_forward = FeedForward(size, cfg.linear_units)
        self.norm1 = LayerNorm(in_size)
        self.norm2 = LayerNorm(size)

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        attended = self.self_attn(self.norm1(x), keep)
        x = x + attended if self.residual else attended
        return x + self.feed_forward(self.norm2(x))


def sinusoid_positions(length: int, width: int, device, dtype) -> torch.Tensor:
    """(1, T, width): [sin(p * w_i), cos(p * w_i)], p = 1..T, w_i = 10000^(-i / (width/2 - 1))."""
    half = width // 2
    step = math.log(10000.0) / (half - 1)
    rates = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -step)  # (width/2,)
    angles = torch.arange(1, length + 1, device=device, dtype=torch.float32)[:, None] * rates[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[None].to(dtype)


class SenseVoiceEncoder(nn.Module):
    """(B, T, input_size) LFR features with their task queries -> (B, T, output_size)."""

    def __init__(self, cfg: SenseVoiceConfig):
        super().__init__()
        self.scale = cfg.output_size ** 0.5
        self.encoders0 = nn.ModuleList([SANMLayer(cfg.input_size, cfg)])
        self.encoders = nn.ModuleList([SANMLayer(cfg.output_size, cfg) for _ in range(cfg.num_blocks - 1)])
        self.after_norm = LayerNorm(cfg.output_size)
        self.tp_encoders = nn.ModuleList([SANMLayer(cfg.output_size, cfg) for _ in range(cfg.tp_blocks)])
        self.tp_norm = LayerNorm(cfg.output_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        b, t, width = x.shape
        keep = None
        if lengths is not None and bool((lengths < t).any()):  # a padded batch: mask the padding
            keep = (torch.arange(t, device=x.device)[None, :] < lengths[:, None]).to(x.dtype)[..., None]
        x = x * self.scale + sinusoid_positions(t, width, x.device, x.dtype)
        for layer in self.encoders0:
            x = layer(x, keep)
        for layer in self.encoders:
            x = layer(x, keep)
        x = self.after_norm(x)
        for layer in self.tp_encoders:
            x = layer(x, keep)
        return self.tp_norm(x)


class CTCHead(nn.Module):
    def __init__(self, size: int, vocab_size: int):
        super().__init__()
        self.ctc_lo = nn.Linear(size, vocab_size)


class SenseVoiceSmall(nn.Module):
    """Task queries + encoder + CTC projection. `forward(features, queries)` -> logits (B, T, V)."""

    def __init__(self, cfg: SenseVoiceConfig, vocab_size: int):
        super().__init__()
        self.config, self.vocab_size = cfg, vocab_size
        self.embed = nn.Embedding(N_QUERIES, cfg.input_size)
        self.encoder = SenseVoiceEncoder(cfg)
        self.ctc = CTCHead(cfg.output_size, vocab_size)

    def forward(self, features: torch.Tensor, queries: torch.Tensor,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """features (B, T, input_size) after CMVN; queries (B, 4) ids [language, 1, 2, text norm];
        lengths (B,) valid feature frames (None: all). Returns CTC logits (B, 4 + T, V): the first
        four frames answer the queries (language, emotion, event, text norm tags)."""
        x = torch.cat([self.embed(queries).to(features.dtype), features], dim=1)
        if lengths is not None:
            lengths = lengths + queries.shape[1]
        return self.ctc.ctc_lo(self.encoder(x, lengths))
