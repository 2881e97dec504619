"""Runners (named tensors in, named tensors out) behind the model's backend seams.

Each adapter implements one protocol of `cosyvoice3.backends` on top of a `Runner` (TensorRT,
ONNX Runtime or a PyTorch runner with CUDA graphs):
- `EstimatorAdapter` -> `Estimator`: the DiT call; the per-row chunk sizes go in as a tensor.
- `VocoderAdapter` -> `VocoderStack`: HiFT's conv stack.
- `RunnerDecodeSteps` -> `DecodeSteps`: prefill and decode steps on LLM runners that take the KV
  cache as inputs and return it (TensorRT, ONNX Runtime); the sampling runs in PyTorch.
- `RunnerSession` -> `FrontendSession`: an official front-end ONNX model run by a runner.
"""

from __future__ import annotations

import numpy as np
import torch

from cosyvoice3.decoding.token_batch import choose

from .runner import Runner


class EstimatorAdapter:
    def __init__(self, runner: Runner):
        self.runner = runner

    def __call__(self, x, mask, mu, t, spks, cond, chunk_frames):
        out = self.runner.run({"x": x, "mask": mask, "mu": mu, "t": t, "spks": spks, "cond": cond,
                               "chunk_frames": chunk_frames.to(torch.int64)})
        return out["velocity"].to(x.dtype)


class VocoderAdapter:
    def __init__(self, runner: Runner):
        self.runner = runner

    def __call__(self, mel, source_spec):
        return self.runner.run({"mel": mel, "source_spec": source_spec})["spectrum"]


class RunnerDecodeSteps:
    """LLM steps on runners. prefill: one runner call per joining row (its exact length);
    decode: rows 0..n-1 with the cache narrowed to the slots they need, written back after."""

    def __init__(self, lm, prefill: Runner | None, decode: Runner | None):
        self.lm, self.prefill_runner, self.decode_runner = lm, prefill, decode

    @property
    def continues_prefix(self) -> bool:
        """An exported prefill starts at position 0: only the module's own continues a prefix."""
        return self.prefill_runner is None

    def prefill(self, embeds, lengths, cache, start=None):
        if self.prefill_runner is None:
            return self.lm.prefill(embeds, cache, lengths, start=start)
        if start is not None:
            raise ValueError("an exported prefill cannot continue a prompt prefix")
        hidden = []
        for row, n in enumerate(lengths.tolist()):
            k, v = cache.k[:, row:row + 1, :, :n], cache.v[:, row:row + 1, :, :n]
            out = self.prefill_runner.run({"embeds": embeds[row:row + 1, :n], "k_cache": k.contiguous(),
                                           "v_cache": v.contiguous()})
            k.copy_(out["k_cache_out"].to(k.dtype))
            v.copy_(out["v_cache_out"].to(v.dtype))
            hidden.append(out["hidden"].to(self.lm.dtype))
        return torch.cat(hidden)

    def decode(self, cache, state, n, n_slots, sampling):
        if self.decode_runner is None:
            from cosyvoice3.decoding.token_batch import decode_rows

            return decode_rows(self.lm, cache, state, 0, n, n_slots, sampling)
        k, v = cache.k[:, :n, :, :n_slots], cache.v[:, :n, :, :n_slots]
        out = self.decode_runner.run({"tokens": state.token[:n], "positions": state.position[:n],
                                      "k_cache": k.contiguous(), "v_cache": v.contiguous()})
        k.copy_(out["k_cache_out"].to(k.dtype))
        v.copy_(out["v_cache_out"].to(v.dtype))
        chosen = choose(self.lm.logprobs(out["hidden"].to(self.lm.dtype)), state, 0, n, sampling)
        state.position[:n] += 1
        return chosen

    def warm(self, cache, state, sampling) -> None:
        pass

    def describe(self) -> str:
        names = [f"{what} {r.info.backend}/{r.info.precision}" for what, r in
                 (("prefill", self.prefill_runner), ("decode", self.decode_runner)) if r is not None]
        return ", ".join(names) + "; sampling in PyTorch"


class RunnerSession:
    """`InferenceSession.run(output_names, feed)` routed through a runner (numpy in and out)."""

    def __init__(self, runner: Runner):
        self.runner = runner
        self.names = [spec.name for spec in runner.info.outputs]
        self.device = torch.device(runner.info.device)

    def run(self, output_names, feed):
        out = self.runner.run({k: torch.from_numpy(np.asarray(v)).to(self.device) for k, v in feed.items()})
        return [out[n].cpu().numpy() for n in (output_names or self.names)]
