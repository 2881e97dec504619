"""The LLM's one-token decode step in few, fat kernels (`FusedDecodeLM`), for CUDA graphs.

Per layer the step is: residual add + RMSNorm (one kernel), the q/k/v projection as one matrix
product, rotation + cache write (one kernel), attention over each row's own length (two: its
splits, then their combine), the output projection, residual add + RMSNorm, the gate/up projection
as one matrix product, SiLU-gate (one kernel), the down projection: ten launches where the
module's step makes about thirty. After the head, the next token is chosen in one kernel too (`choose`: the sampling of
`engines/sampling_triton.py`, where `choose` of the token batch takes about a hundred). The
operations come from `ops`: `engines.llm_triton` (the kernels) or `engines.llm_ops` (their plain
PyTorch twins, with which this runs on the CPU).

The q/k/v and gate/up weights are concatenated at build time and the module's own Linear weights
are then pointed at slices of the concatenation, so the fused weights cost no memory and the
checkpoint's layout (and the prefill, which runs the module) stays as it is.

Attention reads each row's position, so the step's shapes depend on the rows alone:
`reads_own_lengths` tells `engines.step_graphs` to capture one graph per row bucket, not one per
(rows, slots) bucket. Its twin and test oracle is `CosyVoice3LM.decode_one` of the module it was
built from: the hidden state equals it up to float rounding (tests/test_engines_llm_fused.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class _Layer:
    input_norm: torch.Tensor
    qkv_weight: torch.Tensor
    qkv_bias: torch.Tensor
    o_weight: torch.Tensor
    post_norm: torch.Tensor
    gate_up_weight: torch.Tensor
    down_weight: torch.Tensor


def _concatenate(linears: list[nn.Linear], attribute: str) -> torch.Tensor:
    """The rows of the linears' `attribute` (weight or bias) in one tensor; each linear's own
    parameter becomes a view of its rows."""
    joined = torch.cat([getattr(linear, attribute).detach() for linear in linears])
    start = 0
    for linear in linears:
        rows = getattr(linear, attribute).shape[0]
        setattr(linear, attribute, nn.Parameter(joined[start:start + rows], requires_grad=False))
        start += rows
    return joined


class FusedDecodeLM:
    """Built from a `CosyVoice3LM` (its weights shared, not copied); `ops` provides the five
    operations (`engines.llm_triton` or `engines.llm_ops`)."""

    reads_own_lengths = True

    def __init__(self, lm, ops):
        self.lm, self.ops = lm, ops
        body = lm.body
        cfg = body.cfg
        self.n_heads, self.n_kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.theta, self.eps = cfg.rope_theta, cfg.rms_norm_eps
        with torch.no_grad():
            self.layers = []
            for layer in body.layers:
                attn, mlp = layer.self_attn, layer.mlp
                projections = [attn.q_proj, attn.k_proj, attn.v_proj]
                self.layers.append(_Layer(
                    input_norm=layer.input_layernorm.weight, qkv_weight=_concatenate(projections, "weight"),
                    qkv_bias=_concatenate(projections, "bias"), o_weight=attn.o_proj.weight,
                    post_norm=layer.post_attention_layernorm.weight,
                    gate_up_weight=_concatenate([mlp.gate_proj, mlp.up_proj], "weight"),
                    down_weight=mlp.down_proj.weight))
        self.final_norm = body.norm.weight
        self.device = lm.device

    def decode_one(self, tokens: torch.Tensor, positions: torch.Tensor, cache, kv_len: int | None = None) -> torch.Tensor:
        """`CosyVoice3LM.decode_one`: tokens (B,) at positions (B,) -> hidden (B, D), the cache
        written at the positions. kv_len is not needed: each row attends over its own length."""
        ops = self.ops
        x = self.lm.speech_embedding(tokens)
        residual = None
        for i, layer in enumerate(self.layers):
            k_cache, v_cache = cache.k[i], cache.v[i]
            normed, residual = ops.add_rms_norm(x, residual, layer.input_norm, self.eps)
            qkv = F.linear(normed, layer.qkv_weight, layer.qkv_bias)
            q = ops.rotary_write(qkv, positions, k_cache, v_cache, self.n_heads, self.n_kv_heads, self.theta)
            x = F.linear(ops.decode_attention(q, k_cache, v_cache, positions), layer.o_weight)
            normed, residual = ops.add_rms_norm(x, residual, layer.post_norm, self.eps)
            x = F.linear(ops.silu_gate(F.linear(normed, layer.gate_up_weight)), layer.down_weight)
        hidden, _ = ops.add_rms_norm(x, residual, self.final_norm, self.eps)
        return hidden

    def logprobs(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm.logprobs(hidden)

    def choose(self, hidden: torch.Tensor, state, start: int, stop: int, sampling) -> torch.Tensor:
        """The next token of rows start..stop-1 from their hidden states (`decode_rows` calls this
        in place of `choose(lm.logprobs(hidden), ...)`): one kernel with the Triton ops."""
        return self.ops.choose_tokens(self.lm.logits(hidden), state, start, stop, sampling)

    def describe(self) -> str:
        return f"fused decode step ({self.ops.KIND})"


def fused_decoder(lm, kernels: str) -> FusedDecodeLM:
    """A `FusedDecodeLM` on `lm` with the operations named: "triton" (the kernels; Triton must be
    importable and the config fit them) or "twins" (their PyTorch twins)."""
    if kernels == "triton":
        from engines import llm_triton as ops

        if not ops.supported(lm.qwen_config):
            raise ValueError(f"the LLM's shapes do not fit the Triton decode kernels (head dim "
                             f"{lm.qwen_config.head_dim}, {lm.qwen_config.num_attention_heads} heads)")
    elif kernels == "twins":
        from engines import llm_ops as ops
    else:
        raise ValueError(f"unknown decode kernels {kernels!r} (triton or twins)")
    return FusedDecodeLM(lm, ops)
