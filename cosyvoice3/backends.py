"""The seams where faster backends plug into the model, and their plain-PyTorch defaults.

`CosyVoice3` takes a `Backends` when it is built; whatever is left None runs on the model's own
PyTorch modules. engines/ builds faster ones (CUDA graphs, TensorRT, ONNX Runtime) and the
worker hands them over; the model never learns where they came from, and nothing patches it.

- `DecodeSteps`: the LLM's prefill of joining segments and the batched decode step (model step
  and sampling together) of `cosyvoice3.decoding.token_batch`.
- `Estimator`: one call of the flow's DiT velocity estimator for a batch of rows, each with its
  own attention rule (`chunk_frames`: 0 = full attention, C = streaming chunks of C frames).
- `ChunkEstimator`: the same DiT for new frames of streaming chunks that continue cached
  ones (`DiT.forward_cached`): reads the earlier frames' keys/values and convolution state,
  returns the new frames' (`cosyvoice3.synthesis.flow_cache`).
- `VocoderStack`: HiFT's conv stack (mel + source spectrum -> spectrum logits), the vocoder's
  compute; F0, source and (i)STFT stay in PyTorch.
- `FrontendSession`: what runs an official front-end ONNX file (speaker encoder, speech
  tokenizer): ONNX Runtime by default.
`Backends.report` says, per module, what runs it and why a faster path was not used.
The plain defaults: `TorchDecodeSteps` (it lives with `decode_rows` in
`cosyvoice3.decoding.token_batch`, which needs it and is imported here, never the reverse),
`TorchEstimator`, `TorchChunkEstimator`, `TorchVocoderStack`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from cosyvoice3.decoding.token_batch import TorchDecodeSteps
from cosyvoice3.nn.dit import chunk_attention_mask


class DecodeSteps(Protocol):
    continues_prefix: bool  # prefill takes `start` (`cosyvoice3.decoding.prefix_store`)

    def prefill(self, embeds: torch.Tensor, lengths: torch.Tensor, cache, start=None) -> torch.Tensor:
        """embeds (k, L, D) right-padded inputs, lengths (k,) long, cache: the k rows of a
        `KVCache` they are written into -> hidden state at each row's last position (k, D).
        start (k,) long on the CPU, only where `continues_prefix`: the position of each row's
        first input, the slots before it holding its prefix (`CosyVoice3LM.prefill`)."""

    def decode(self, cache, state, n: int, n_slots: int, sampling) -> torch.Tensor:
        """One decode + sampling step of rows 0..n-1 of `cache` / `state` (a
        `token_batch.DecodeState`), attending over at least `n_slots` slots -> tokens (n,) long."""

    def warm(self, cache, state, sampling) -> None:
        """Prepare for steps on this cache and state (e.g. capture CUDA graphs); may do nothing."""

    def describe(self) -> str:
        """One line for the status report."""

    lm: object  # the LLM module the steps run (the token batch allocates its cache from it)


class Estimator(Protocol):
    def __call__(self, x: torch.Tensor, mask: torch.Tensor, mu: torch.Tensor, t: torch.Tensor,
                 spks: torch.Tensor, cond: torch.Tensor, chunk_frames: torch.Tensor) -> torch.Tensor:
        """x, mu, cond (B, 80, T); mask (B, 1, T) 1 = real frame; t (B,); spks (B, 80);
        chunk_frames (B,) long, 0 = full attention, C = chunks of C frames -> velocity (B, 80, T)."""


class ChunkEstimator(Protocol):
    dtype: torch.dtype  # what it computes in, and the dtype of the caches it reads and returns

    def __call__(self, x, mask, mu, t, spks, cond, past_len, past_kv, past_conv):
        """x, mu, cond (B, 80, Tn) new frames; mask (B, 1, Tn); t (B,); spks (B, 80); past_len (B,)
        long; past_kv (depth, 2, B, H, Tc, Dh); past_conv (B, 2, dim, k-1) -> velocity (B, 80, Tn),
        new_kv (depth, 2, B, H, Tn, Dh), conv_in (B, 2, dim, Tn) (`DiT.forward_cached`)."""

    def cache_shape(self) -> tuple[int, int, int, int]:
        """(depth, heads, dim_head, conv context) of the DiT it runs."""

    def past_buffer(self, rows: int, past: int) -> torch.Tensor | None:
        """Its own input buffer for the `past_kv` of a call of `rows` rows and `past` cached frames
        (at least that large; the caller fills it in place and passes it), or None: the caller
        makes its own."""


class VocoderStack(Protocol):
    def __call__(self, mel: torch.Tensor, source_spec: torch.Tensor) -> torch.Tensor:
        """mel (B, 80, T), source spectrum (B, 18, 120 T + 1) -> spectrum logits (B, 18, 120 T + 1)."""


class FrontendSession(Protocol):
    def run(self, output_names, feed: dict) -> list:
        """ONNX Runtime's `InferenceSession.run` signature: numpy arrays in and out."""


class TorchEstimator:
    """The PyTorch DiT, with the attention mask built from each row's chunk size."""

    def __init__(self, dit):
        self.dit = dit

    def __call__(self, x, mask, mu, t, spks, cond, chunk_frames):
        return self.dit(x, mask, mu, t, spks, cond, attn_mask=chunk_attention_mask(mask, chunk_frames))


class TorchChunkEstimator:
    """The PyTorch DiT's `forward_cached`, in the module's own precision."""

    def __init__(self, dit):
        self.dit = dit
        self.dtype = dit.proj_out.weight.dtype

    def __call__(self, x, mask, mu, t, spks, cond, past_len, past_kv, past_conv):
        d = self.dtype
        return self.dit.forward_cached(x.to(d), mask.to(d), mu.to(d), t.to(d), spks.to(d), cond.to(d), past_len,
                                       past_kv.to(d), past_conv.to(d))

    def cache_shape(self) -> tuple[int, int, int, int]:
        return self.dit.cache_shape()

    def past_buffer(self, rows: int, past: int) -> None:
        return None  # eager: the caller's own tensor is read as it is


class TorchVocoderStack:
    """HiFT's own conv stack."""

    def __init__(self, hift):
        self.hift = hift

    def __call__(self, mel, source_spec):
        return self.hift.decode(mel, source_spec, finalize=True)


@dataclass
class Backends:
    """What runs each seam (None = the model's own PyTorch module) and the per-module report:
    module -> {backend, precision, device, detail, reason, fallback}."""

    decode_steps: DecodeSteps | None = None
    estimator: Estimator | None = None
    chunk_estimator: ChunkEstimator | None = None
    vocoder: VocoderStack | None = None
    speaker_session: FrontendSession | None = None
    speech_tokenizer_session: FrontendSession | None = None
    report: dict[str, dict] = field(default_factory=dict)
