"""Adapters that plug runners into the model's seams (cosyvoice3/), each with the seam's signature.

- `EstimatorAdapter` -> `CausalFlow.estimator_fn(x, mask, mu, t, spks, cond, attn_mask)`. The flow
  passes a (1, 1, T, T) bool mask; the engines take `chunk_frames` instead (engines.modules). The
  adapter recognises the mask (full, or chunks of the configured size) once per mask tensor - the
  flow reuses one mask for all Euler steps - and sends any other mask to the PyTorch DiT.
- `HiFTDecodeAdapter` -> `CausalHiFT.decode(mel, source_spec, finalize)`; a non-final call is the
  final one cut after 120 (T - 4) + 1 frames (see engines.modules).
- `EngineLM` -> the LM object `SpeechTokenDecoder` drives: `prefill` and `decode_one` go through
  runners (the KV cache tensors are replaced by the runner's outputs), everything else is the
  wrapped `CosyVoice3LM`.
"""

from __future__ import annotations

import torch

from .modules import chunk_attention_mask
from .runner import Runner


class EstimatorAdapter:
    def __init__(self, runner: Runner, dit: torch.nn.Module, chunk_frames: int):
        self.runner, self.dit, self.chunk_frames = runner, dit, chunk_frames
        self._seen: tuple[torch.Tensor, int | None] | None = None  # (mask tensor, its chunk size)

    def chunk_of(self, mask: torch.Tensor, attn_mask: torch.Tensor | None) -> int | None:
        """0 = full attention, C = chunks of C frames, None = a mask the engines cannot express."""
        if attn_mask is None:
            return 0
        if self._seen is not None and self._seen[0] is attn_mask:
            return self._seen[1]
        found = None
        for chunk in (self.chunk_frames, 0):
            built = chunk_attention_mask(mask, torch.tensor([chunk], device=mask.device))
            if attn_mask.shape[-2:] == built.shape[-2:] and bool((built == attn_mask).all()):
                found = chunk
                break
        self._seen = (attn_mask, found)
        return found

    def __call__(self, x, mask, mu, t, spks, cond, attn_mask=None):
        chunk = self.chunk_of(mask, attn_mask)
        if chunk is None:
            return self.dit(x, mask, mu, t, spks, cond, attn_mask)
        out = self.runner.run({"x": x, "mask": mask, "mu": mu, "t": t, "spks": spks, "cond": cond,
                               "chunk_frames": torch.tensor([chunk], dtype=torch.int64, device=x.device)})
        return out["velocity"].to(x.dtype)


class HiFTDecodeAdapter:
    def __init__(self, runner: Runner, upsample_factor: int, look_ahead: int):
        self.runner, self.upsample_factor, self.look_ahead = runner, upsample_factor, look_ahead

    def __call__(self, mel: torch.Tensor, source_spec: torch.Tensor, finalize: bool = True) -> torch.Tensor:
        """mel (1, 80, T), source_spec (1, 18, 120 T + 1) -> spectrum logits, as `CausalHiFT.decode`."""
        out = self.runner.run({"mel": mel, "source_spec": source_spec})["spectrum"]
        if not finalize:
            out = out[:, :, :self.upsample_factor * (mel.shape[2] - self.look_ahead) + 1]
        return out


class EngineLM:
    """`CosyVoice3LM` with prefill and decode steps on runners."""

    def __init__(self, lm, prefill: Runner | None, decode: Runner | None, step_graphs=None):
        self.lm, self.prefill_runner, self.decode_runner = lm, prefill, decode
        self.step_graphs = step_graphs  # engines.step_graphs.StepGraphPool lent to SpeechTokenDecoder

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def prefill(self, inputs_embeds: torch.Tensor, cache, start_pos: int = 0) -> torch.Tensor:
        if self.prefill_runner is None or start_pos != 0:
            return self.lm.prefill(inputs_embeds, cache, start_pos)
        out = self.prefill_runner.run({"embeds": inputs_embeds, "k_cache": cache.k, "v_cache": cache.v})
        cache.k, cache.v = out["k_cache_out"].to(cache.k.dtype), out["v_cache_out"].to(cache.v.dtype)
        return out["hidden"].to(self.lm.dtype)

    def decode_one(self, tokens: torch.Tensor, positions: torch.Tensor, cache) -> torch.Tensor:
        if self.decode_runner is None:
            return self.lm.decode_one(tokens, positions, cache)
        out = self.decode_runner.run({"tokens": tokens, "positions": positions, "k_cache": cache.k,
                                      "v_cache": cache.v})
        cache.k, cache.v = out["k_cache_out"].to(cache.k.dtype), out["v_cache_out"].to(cache.v.dtype)
        return out["hidden"].to(self.lm.dtype)
