"""PyTorch runners: eager FP32/FP16/BF16, and CUDA graphs replayed per shape bucket.

`TorchRunner` runs an export wrapper (engines.modules) - the same function the ONNX export
traces - in the chosen precision: a half/bfloat16 copy of the wrapper is made once; float inputs
are cast on entry and outputs cast back to float32 on exit.

`CudaGraphRunner` captures one CUDA graph per shape key and replays it. A dimension listed in
`pad_dims` is rounded up to a bucket (a multiple of `bucket`, or the next power of two for a dim
marked "pow2"), the inputs are zero-padded into static buffers and the outputs sliced back; this
is exact for modules whose padded tail cannot reach the real data (the DiT: padded frames have
mask 0, so no query attends to them, and its convolutions are causal; padded batch rows are
independent rows). Other dynamic dimensions are part of the key. All graphs share one memory
pool; outputs are cloned before they are returned, since the next replay overwrites them.
"""

from __future__ import annotations

import copy
import math
import threading
from dataclasses import dataclass
from typing import Mapping

import torch
from torch import nn

from .runner import DTYPES, Runner, RunnerInfo, TensorSpec, dim_sizes

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy of a module's parameters and buffers; other attributes (noise tables, configs,
    locks) are shared with the original, not copied."""
    memo = {}
    for m in module.modules():
        for k, v in vars(m).items():
            if not k.startswith("_") and not isinstance(v, (nn.Module, torch.Tensor, int, float, str, bool,
                                                            type(None), tuple, list, dict)):
                memo[id(v)] = v
    return copy.deepcopy(module, memo)


def to_precision(module: nn.Module, device: torch.device | str, dtype: torch.dtype) -> nn.Module:
    """Move a module to `device` and cast its floating parameters to `dtype`, in place. Buffers keep
    their dtype: they hold constants such as the DiT's rotary frequencies, which rounded to 16 bits
    would turn the rotation angle of frame 3000 by more than a radian."""
    module.to(device)
    for p in module.parameters():
        if p.is_floating_point():
            p.data = p.data.to(dtype)
    return module


def auto_precision(device: torch.device) -> str:
    """The fast precision of a device: bf16 where the GPU has it, fp16 on older GPUs, fp32 on CPU."""
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


class TorchRunner(Runner):
    def __init__(self, wrapper: nn.Module, module: str, inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], device: torch.device | str, precision: str = "fp32",
                 dims: dict[str, tuple[int, int]] | None = None, detail: str = "eager"):
        """wrapper: forward(*inputs in `inputs` order) -> tuple of outputs in `outputs` order."""
        self.device = torch.device(device)
        self.dtype = PRECISIONS[precision]
        model_dtype = next((p.dtype for p in wrapper.parameters()), torch.float32)
        model_device = next((p.device for p in wrapper.parameters()), self.device)
        if model_dtype == self.dtype and model_device == self.device:
            self.wrapper = wrapper
        else:  # a private copy in the runner's precision; the model's own module stays untouched
            self.wrapper = to_precision(copy_module(wrapper), self.device, self.dtype)
        self.wrapper.eval()
        self.info = RunnerInfo(module, "torch", precision, str(self.device), inputs, outputs, dict(dims or {}),
                               detail)

    def cast_inputs(self, inputs: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        cast = []
        for s in self.info.inputs:
            dt = self.dtype if DTYPES[s.dtype].is_floating_point else DTYPES[s.dtype]
            cast.append(inputs[s.name].to(self.device, dt))
        return cast

    @torch.inference_mode()
    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.wrapper(*args))

    def _run(self, inputs):
        where = next(iter(inputs.values())).device
        outs = self.forward(*self.cast_inputs(inputs))
        return {s.name: o.to(where, DTYPES[s.dtype]) for s, o in zip(self.info.outputs, outs)}


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: tuple[torch.Tensor, ...]


class CudaGraphRunner(Runner):
    def __init__(self, eager: TorchRunner, pad_dims: dict[str, str | None] | tuple[str, ...] = (), bucket: int = 64,
                 max_graphs: int = 128, warmup: int = 2, max_elements: int | None = None,
                 large: Runner | None = None, derived: dict[str, tuple[str, int, int]] | None = None):
        """eager: the runner whose forward is captured; pad_dims: dim -> None (round up to a
        multiple of `bucket`) or "pow2" (the next power of two); a tuple means all None.
        max_elements: calls whose padded dims multiply to more go to `large` (or eager): large
        shapes are bound by arithmetic, not launches, so a graph would only cost its capture and
        memory; `large` may be a compiled runner (engines.compiled). derived: dim -> (base dim, a,
        b), a dim whose size is a * base + b (padded with its base: HiFT's source spectrum)."""
        if not isinstance(pad_dims, dict):
            pad_dims = {d: None for d in pad_dims}
        self.max_elements = max_elements
        self.large = large or eager
        if eager.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device")
        self.eager, self.pad_dims, self.bucket = eager, pad_dims, bucket
        self.derived = dict(derived or {})
        self.max_graphs, self.warmup = max_graphs, warmup
        self.graphs: dict[tuple, _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self._lock = threading.Lock()
        i = eager.info
        detail = f"CUDA graphs ({', '.join(pad_dims)} padded)" if pad_dims else "CUDA graphs"
        if large is not None:
            detail += f", {large.info.detail} above {max_elements} padded elements"
        self.info = RunnerInfo(i.module, "torch", i.precision, i.device, i.inputs, i.outputs, dict(i.dims), detail)

    def _padded_sizes(self, sizes: dict[str, int]) -> dict[str, int]:
        out = {}
        for d, n in sizes.items():
            if d not in self.pad_dims:
                out[d] = n
            elif self.pad_dims[d] == "pow2":
                out[d] = 1 << max(0, n - 1).bit_length()
            else:
                out[d] = math.ceil(n / self.bucket) * self.bucket
        for d, (base, a, b) in self.derived.items():
            if d in out and base in out:
                out[d] = a * out[base] + b
        return out

    def _run(self, inputs):
        sizes = dim_sizes(self.info.inputs, inputs)
        padded = self._padded_sizes(sizes)
        if self.max_elements and math.prod(padded[d] for d in self.pad_dims if d in padded) > self.max_elements:
            return self._run_large(inputs, sizes, padded)
        key = tuple(sorted(padded.items()))
        with self._lock:
            g = self.graphs.get(key)
            if g is None:
                if len(self.graphs) >= self.max_graphs:
                    return self.eager.run(inputs)  # too many shapes: eager keeps memory bounded
                g = self.graphs[key] = self._capture(padded)
            for static, s, value in zip(g.inputs, self.info.inputs, self.eager.cast_inputs(inputs)):
                _copy_padded(static, value)
            g.graph.replay()
            result = {}
            for s, out in zip(self.info.outputs, g.outputs):
                for axis, d in enumerate(s.shape):
                    if isinstance(d, str) and padded.get(d, 0) != sizes.get(d, 0):
                        out = out.narrow(axis, 0, sizes[d])
                result[s.name] = out.to(DTYPES[s.dtype], copy=True)
            return result

    def _run_large(self, inputs, sizes: dict[str, int], padded: dict[str, int]):
        """A large call, padded like a graph's (so a compiled runner meets few distinct shapes:
        its kernels are specialised on sizes), outputs cut back."""
        if padded == sizes:
            return self.large.run(inputs)
        staged = {}
        for s in self.info.inputs:
            value = inputs[s.name]
            shape = [padded[d] if isinstance(d, str) else d for d in s.shape]
            staged[s.name] = value.new_zeros(shape)
            _copy_padded(staged[s.name], value)
        result = self.large.run(staged)
        for s in self.info.outputs:
            out = result[s.name]
            for axis, d in enumerate(s.shape):
                if isinstance(d, str) and padded.get(d, 0) != sizes.get(d, 0):
                    out = out.narrow(axis, 0, sizes[d])
            result[s.name] = out
        return result

    def _capture(self, sizes: dict[str, int]) -> _Graph:
        static = []
        for s in self.info.inputs:
            shape = [sizes[d] if isinstance(d, str) else d for d in s.shape]
            dt = self.eager.dtype if DTYPES[s.dtype].is_floating_point else DTYPES[s.dtype]
            static.append(torch.zeros(shape, dtype=dt, device=self.eager.device))
        side = torch.cuda.Stream(self.eager.device)
        side.wait_stream(torch.cuda.current_stream(self.eager.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.eager.forward(*static)
        torch.cuda.current_stream(self.eager.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.eager.forward(*static)
        return _Graph(graph, static, outputs)

    def close(self):
        self.graphs.clear()


def _copy_padded(static: torch.Tensor, value: torch.Tensor) -> None:
    """Copy `value` into the leading corner of `static` and zero the rest."""
    if static.shape == value.shape:
        static.copy_(value)
        return
    static.zero_()
    static[tuple(slice(0, n) for n in value.shape)].copy_(value)
