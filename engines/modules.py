"""What each accelerated module is: its named tensors, dynamic dimensions, default shape profile,
parity tolerances, example inputs, and the PyTorch function (`wrapper`) that every backend runs.

The wrapper is the single definition of a module's computation at the engine boundary: ONNX
export traces it, `TorchRunner` runs it, and the parity check compares the two. Wrappers only
rearrange calls into the model's own modules (cosyvoice3/), they hold no weights of their own.

Modules:
- `dit`: the flow's DiT estimator. Batch = 2 x requests (classifier-free guidance pairs).
  The attention mask is not an input tensor: the input `chunk_frames` (B,) int64 (per row: 0 =
  full attention, C > 0 = streaming chunks of C frames) and `mask` (B, 1, T) are enough to build
  it in the graph, with `cosyvoice3.nn.dit.chunk_attention_mask`. A (B, 1, T, T) input would
  cost T^2 bytes per call (9 MB per row at T = 3000) and a T x T dimension in every TensorRT
  profile, for a mask that only ever takes these two forms.
- `hift`: the vocoder's conv stack (`CausalHiFT.decode`: mel + source spectrum -> magnitude/phase
  logits), about all of its compute. The F0 predictor (float64 on purpose), the harmonic source
  (phase accumulation over the fixed noise buffers) and the 16-point STFT/iSTFT stay in PyTorch:
  they are cheap, and TensorRT has no STFT. The source spectrum has 120 T + 1 frames for a T-frame
  mel: a derived dimension. A non-final (streaming) decode equals the final one cut after
  120 (T - 4) + 1 frames (`conv_pre` looks 4 frames ahead, everything after it is causal).
  So frames zero-padded on the right change no real output (conv_pre's look-ahead reads the
  zeros it would pad itself): CUDA graphs pad frames (and the source spectrum with them).
- `llm_prefill` / `llm_decode`: the Qwen2 body with the static KV cache as explicit inputs
  (`k_cache`, `v_cache`: layers x batch x kv_heads x slots x head_dim) and outputs
  (`k_cache_out`, `v_cache_out`), positions explicit. Prefill writes slots 0..L-1 and attends
  over them; a decode step writes the slot of its position and attends over every slot up to it.
  The speech-token embedding of the decode step is inside the graph; the output head (logits)
  stays in PyTorch (one small matrix product), so the engines return the hidden state the
  decoding loop already expects from `CosyVoice3LM.prefill` / `decode_one`.
- `campplus` / `speech_tokenizer`: the official ONNX files as they are (`onnx_file_def`): names,
  dtypes and dynamic dims read from the file; no PyTorch implementation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from cosyvoice3.nn.dit import chunk_attention_mask

from .runner import TensorSpec

# Default profiles: 1-32 requests per flow/vocoder batch, up to 30 s of new audio plus a 30 s prompt.
MAX_REQUESTS = 32
DIT_MAX_FRAMES = 3000  # mel frames (50 Hz) of prompt + output
LLM_MAX_PREFILL = 1024  # sos + text + task id + prompt speech tokens (30 s = 750)
LLM_MAX_SLOTS = 4096  # KV cache positions of one request


@dataclass
class ModuleDef:
    """name: module id; sources: model files it is made from (cache key); dims: dynamic dim ->
    (min, opt, max) profile; derived: dim -> (base dim, a, b), size = a * base + b;
    tolerance: precision -> max |engine - torch fp32| / max(1, max|ref|);
    pad_dims: dims a CUDA graph may zero-pad to a bucket without changing the real outputs."""

    name: str
    sources: tuple[str, ...]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, tuple[int, int, int]]
    wrapper: nn.Module | None  # None for an ONNX file module
    example: Callable[[dict[str, int], torch.device], dict[str, torch.Tensor]]
    tolerance: dict[str, float] = field(default_factory=lambda: {"fp32": 1e-4, "fp16": 2e-2, "bf16": 6e-2})
    pad_dims: dict[str, str | None] = field(default_factory=dict)
    graph_elements: int | None = None  # CUDA graphs only up to this product of the padded dims
    derived: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    onnx_path: Path | None = None  # the module is this ONNX file (campplus, speech tokenizer)
    value_dims: dict[str, str] = field(default_factory=dict)  # input whose values are a dim's size

    def shape_values(self, dims: dict[str, tuple[int, int, int]] | None = None) -> dict[str, tuple]:
        """TensorRT value ranges of shape-tensor inputs: (min, opt, max) value lists."""
        dims = {**self.dims, **(dims or {})}
        out = {}
        for name, dim in self.value_dims.items():
            n = next(int(math.prod(x for x in s.shape if isinstance(x, int))) for s in self.inputs if s.name == name)
            out[name] = tuple([dims[dim][i]] * n for i in range(3))
        return out

    def accepted(self) -> dict[str, tuple[int, int]]:
        return {d: (lo, hi) for d, (lo, _, hi) in self.dims.items()}

    def profile(self, dims: dict[str, tuple[int, int, int]] | None = None) -> dict[str, tuple[tuple, tuple, tuple]]:
        """TensorRT shapes per input: (min, opt, max)."""
        dims = {**self.dims, **(dims or {})}
        for d, (base, a, b) in self.derived.items():
            dims[d] = tuple(a * n + b for n in dims[base])
        out = {}
        for s in self.inputs:
            out[s.name] = tuple(tuple(dims[d][i] if isinstance(d, str) else d for d in s.shape) for i in range(3))
        return out


# ---------------------------------------------------------------------------- DiT


class DiTStep(nn.Module):
    """One estimator call: (x, mask, mu, t, spks, cond, chunk_frames) -> velocity (B, 80, T)."""

    def __init__(self, dit: nn.Module):
        super().__init__()
        self.dit = dit

    def forward(self, x, mask, mu, t, spks, cond, chunk_frames):
        return (self.dit(x, mask, mu, t, spks, cond, attn_mask=chunk_attention_mask(mask, chunk_frames)),)


def _f32(name: str, *shape) -> TensorSpec:
    return TensorSpec(name, "float32", shape)


def dit_def(dit: nn.Module, mel: int = 80) -> ModuleDef:
    inputs = (_f32("x", "batch", mel, "frames"), _f32("mask", "batch", 1, "frames"),
              _f32("mu", "batch", mel, "frames"), _f32("t", "batch"), _f32("spks", "batch", mel),
              _f32("cond", "batch", mel, "frames"), TensorSpec("chunk_frames", "int64", ("batch",)))

    def example(sizes, device):
        b, n = sizes.get("batch", 2), sizes.get("frames", 130)
        g = torch.Generator().manual_seed(n)
        mu = torch.randn(b, mel, n, generator=g)
        mu[1::2] = 0  # the unconditional rows of the guidance batch
        cond = torch.randn(b, mel, n, generator=g)
        cond[:, :, n // 3:] = 0
        ex = {"x": torch.randn(b, mel, n, generator=g), "mask": torch.ones(b, 1, n), "mu": mu,
              "t": torch.rand(b, generator=g), "spks": torch.randn(b, mel, generator=g), "cond": cond,
              "chunk_frames": torch.full((b,), sizes.get("chunk", 0), dtype=torch.int64)}
        return {k: v.to(device) for k, v in ex.items()}

    return ModuleDef("dit", ("flow.pt",), inputs, (_f32("velocity", "batch", mel, "frames"),),
                     {"batch": (1, 2, 2 * MAX_REQUESTS), "frames": (1, 500, DIT_MAX_FRAMES)},
                     DiTStep(dit), example, pad_dims={"frames": None, "batch": "pow2"}, graph_elements=4 * 512)


# ---------------------------------------------------------------------------- HiFT


class HiFTDecode(nn.Module):
    """(mel (B, 80, T), source_spec (B, 18, 120 T + 1)) -> spectrum logits (B, 18, 120 T + 1)."""

    def __init__(self, hift: nn.Module):
        super().__init__()
        self.hift = hift

    def forward(self, mel, source_spec):
        return (self.hift.decode(mel, source_spec, finalize=True),)


def hift_def(hift: nn.Module) -> ModuleDef:
    up = hift.upsample_factor
    mels, spec = hift.cfg.in_channels, hift.n_fft + 2
    inputs = (TensorSpec("mel", "float32", ("batch", mels, "frames")),
              TensorSpec("source_spec", "float32", ("batch", spec, "spec_frames")))
    outputs = (TensorSpec("spectrum", "float32", ("batch", spec, "spec_frames")),)

    def example(sizes, device):
        b, n = sizes.get("batch", 1), sizes.get("frames", 13)
        g = torch.Generator().manual_seed(n)
        return {"mel": (torch.randn(b, mels, n, generator=g) - 5).to(device),
                "source_spec": (0.1 * torch.randn(b, spec, up * n + 1, generator=g)).to(device)}

    return ModuleDef("hift", ("hift.pt",), inputs, outputs,
                     {"batch": (1, 1, MAX_REQUESTS), "frames": (1, 200, DIT_MAX_FRAMES // 2)},
                     HiFTDecode(hift), example, tolerance={"fp32": 1e-4, "fp16": 3e-2, "bf16": 8e-2},
                     derived={"spec_frames": ("frames", up, 1)}, pad_dims={"frames": None, "batch": "pow2"},
                     graph_elements=8 * 320)


# ---------------------------------------------------------------------------- LLM


class LLMPrefill(nn.Module):
    """(embeds (B, L, D), k_cache, v_cache) -> (hidden of the last position (B, D), k, v caches).
    Positions 0..L-1; `functional` copies the caches first (the export must not write its inputs)."""

    def __init__(self, lm: nn.Module, functional: bool = False):
        super().__init__()
        self.lm, self.functional = lm, functional

    def forward(self, embeds, k_cache, v_cache):
        if self.functional:
            k_cache, v_cache = k_cache.clone(), v_cache.clone()
        batch, length = embeds.shape[0], embeds.shape[1]
        positions = torch.arange(length, device=embeds.device)[None].expand(batch, length)
        hidden = self.lm.body(embeds, positions, k_cache, v_cache, kv_len=length)
        return hidden[:, -1], k_cache, v_cache


class LLMDecode(nn.Module):
    """(tokens (B,) int64, positions (B,) int64, k_cache, v_cache) -> (hidden (B, D), k, v caches)."""

    def __init__(self, lm: nn.Module, functional: bool = False):
        super().__init__()
        self.lm, self.functional = lm, functional

    def forward(self, tokens, positions, k_cache, v_cache):
        if self.functional:
            k_cache, v_cache = k_cache.clone(), v_cache.clone()
        x = self.lm.speech_embedding(tokens)[:, None]  # (B, 1, D)
        hidden = self.lm.body(x, positions[:, None], k_cache, v_cache)
        return hidden[:, 0], k_cache, v_cache


def _cache_specs(lm, suffix: str = "") -> tuple[TensorSpec, TensorSpec]:
    q = lm.qwen_config
    shape = (q.num_hidden_layers, "batch", q.num_key_value_heads, "slots", q.head_dim)
    return TensorSpec("k_cache" + suffix, "float32", shape), TensorSpec("v_cache" + suffix, "float32", shape)


def llm_prefill_def(lm: nn.Module) -> ModuleDef:
    d = lm.qwen_config.hidden_size
    inputs = (TensorSpec("embeds", "float32", ("batch", "length", d)), *_cache_specs(lm))
    outputs = (TensorSpec("hidden", "float32", ("batch", d)), *_cache_specs(lm, "_out"))

    def example(sizes, device):
        b, n, s = sizes.get("batch", 1), sizes.get("length", 40), sizes.get("slots", 64)
        g = torch.Generator().manual_seed(n)
        k, v = (torch.zeros(_shape(spec, batch=b, slots=s)) for spec in _cache_specs(lm))
        return {"embeds": torch.randn(b, n, d, generator=g).to(device), "k_cache": k.to(device),
                "v_cache": v.to(device)}

    return ModuleDef("llm_prefill", ("llm.pt",), inputs, outputs,
                     {"batch": (1, 1, MAX_REQUESTS), "length": (1, 256, LLM_MAX_PREFILL),
                      "slots": (1, 1024, LLM_MAX_SLOTS)},
                     LLMPrefill(lm), _sized(example, slots=64),
                     tolerance={"fp32": 1e-4, "fp16": 3e-2, "bf16": 8e-2})


def llm_decode_def(lm: nn.Module) -> ModuleDef:
    d = lm.qwen_config.hidden_size
    inputs = (TensorSpec("tokens", "int64", ("batch",)), TensorSpec("positions", "int64", ("batch",)),
              *_cache_specs(lm))
    outputs = (TensorSpec("hidden", "float32", ("batch", d)), *_cache_specs(lm, "_out"))

    def example(sizes, device):
        b, s = sizes.get("batch", 1), sizes.get("slots", 64)
        g = torch.Generator().manual_seed(s)
        k, v = (0.5 * torch.randn(_shape(spec, batch=b, slots=s), generator=g) for spec in _cache_specs(lm))
        return {"tokens": torch.randint(0, lm.speech_token_size, (b,), generator=g).to(device),
                "positions": torch.randint(s // 2, s, (b,), generator=g).to(device),
                "k_cache": k.to(device), "v_cache": v.to(device)}

    return ModuleDef("llm_decode", ("llm.pt",), inputs, outputs,
                     {"batch": (1, 1, MAX_REQUESTS), "slots": (1, 1024, LLM_MAX_SLOTS)},
                     LLMDecode(lm), _sized(example, slots=64),
                     tolerance={"fp32": 1e-4, "fp16": 3e-2, "bf16": 8e-2})


def _shape(spec: TensorSpec, **sizes: int) -> tuple[int, ...]:
    return tuple(sizes[d] if isinstance(d, str) else d for d in spec.shape)


def _sized(example, **defaults):
    """Example inputs with default sizes filled in (so every example has consistent dims)."""
    return lambda sizes, device: example({**defaults, **sizes}, device)


# ---------------------------------------------------------------------------- ONNX files

_ONNX_DTYPES = {1: "float32", 10: "float16", 6: "int32", 7: "int64", 9: "bool"}
# time axes of the front-end models: feature frames at 100 Hz, up to 30 s
FRONTEND_FRAMES = (4, 500, 3000)


def onnx_file_def(name: str, path: str | Path, time_dims: tuple[int, int, int] = FRONTEND_FRAMES) -> ModuleDef:
    """A module that is an ONNX file. Its symbolic dims become dynamic dims: a leading (batch) one
    with profile (1, 1, 1), the others `time_dims`. An integer input of shape (1,) is taken to
    hold the length of the time axis (the speech tokenizer's `feats_length`)."""
    import onnx

    path = Path(path)
    graph = onnx.load(str(path), load_external_data=False).graph
    dims: dict[str, tuple[int, int, int]] = {}

    def specs(values):
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = []
            for axis, d in enumerate(t.shape.dim):
                if d.dim_param or not d.dim_value:
                    dim = d.dim_param or f"{v.name}_{axis}"
                    dims.setdefault(dim, (1, 1, 1) if axis == 0 else time_dims)
                    shape.append(dim)
                else:
                    shape.append(d.dim_value)
            out.append(TensorSpec(v.name, _ONNX_DTYPES.get(t.elem_type, "float32"), tuple(shape)))
        return tuple(out)

    inputs, outputs = specs(graph.input), specs(graph.output)
    output_only = {d for s in outputs for d in s.shape if isinstance(d, str)} - {
        d for s in inputs for d in s.shape if isinstance(d, str)}
    for d in output_only:
        dims.pop(d, None)

    def example(sizes, device):
        g = torch.Generator().manual_seed(7)
        full = {d: sizes.get(d, opt) for d, (_, opt, _) in dims.items()}
        time_len = next((n for d, n in full.items() if dims[d] != (1, 1, 1)), 1)
        ex = {}
        for s in inputs:
            shape = tuple(full[d] if isinstance(d, str) else d for d in s.shape)
            if s.dtype.startswith("float"):
                ex[s.name] = torch.randn(shape, generator=g)
            else:
                ex[s.name] = torch.full(shape, time_len, dtype=torch.int64 if s.dtype == "int64" else torch.int32)
        return {k: v.to(device) for k, v in ex.items()}

    time_dim = next((d for d, r in dims.items() if r != (1, 1, 1)), None)
    value_dims = {s.name: time_dim for s in inputs if not s.dtype.startswith("float") and time_dim}
    return ModuleDef(name, (path.name,), inputs, outputs, dims, None, example,
                     tolerance={"fp32": 1e-3, "fp16": 3e-2, "bf16": 8e-2}, onnx_path=path, value_dims=value_dims)
