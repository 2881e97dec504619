"""The one interface of a runnable module, and the chain that falls back when an engine fails.

A `Runner` takes named tensors and returns named tensors. Every backend (TensorRT, ONNX Runtime,
PyTorch) implements it with the same input and output names, float32 at the boundary whatever
the precision inside, and the device of the inputs (CUDA work is ordered on the caller's current
stream). `RunnerInfo` says what a runner is: module, backend, precision, device and the range of
every dynamic dimension it accepts.

`FallbackRunner` puts runners of one module in order of preference. A call goes to the first
runner that accepts the shapes; if its (checked) output holds NaN/Inf or it raises (CUDA
out-of-memory excepted: the worker handles that), the same call is repeated on the next runner
and the event is counted and logged. The next call tries the preferred runner again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Mapping

import torch

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


class BackendUnavailable(RuntimeError):
    """A backend cannot run a module here; the message is the reason shown to the user."""


class NonFiniteOutput(RuntimeError):
    """An engine returned NaN or Inf."""


@dataclass(frozen=True)
class TensorSpec:
    """name: tensor name in every backend; dtype: a key of DTYPES; shape: ints for fixed sizes,
    strings for dynamic dimensions (the same string = the same size across tensors)."""

    name: str
    dtype: str
    shape: tuple


@dataclass
class RunnerInfo:
    module: str
    backend: str  # "tensorrt" | "onnxruntime" | "torch"
    precision: str  # "fp32" | "fp16" | "bf16"
    device: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict[str, tuple[int, int]] = field(default_factory=dict)  # dynamic dim -> (min, max) accepted
    detail: str = ""  # package version, provider, CUDA graphs, engine file, ...

    def as_dict(self) -> dict:
        return {"module": self.module, "backend": self.backend, "precision": self.precision,
                "device": self.device, "detail": self.detail,
                "dims": {k: list(v) for k, v in self.dims.items()}}


class Runner:
    """Base class: subclasses set `self.info` and implement `_run`."""

    info: RunnerInfo

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """inputs: one tensor per `info.inputs` name, shaped as its spec. Returns one tensor per
        `info.outputs` name, owned by the caller, on the inputs' device."""
        missing = [s.name for s in self.info.inputs if s.name not in inputs]
        if missing:
            raise ValueError(f"{self.info.module}: missing inputs {missing}")
        return self._run(inputs)

    def _run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def unsupported(self, inputs: Mapping[str, torch.Tensor]) -> str | None:
        """Why these shapes are outside what this runner accepts, or None when they are inside."""
        sizes = dim_sizes(self.info.inputs, inputs)
        for dim, (lo, hi) in self.info.dims.items():
            if dim in sizes and not lo <= sizes[dim] <= hi:
                return f"{dim}={sizes[dim]} outside {lo}..{hi}"
        return None

    def close(self) -> None:
        """Release engines, contexts and buffers."""


def dim_sizes(specs: tuple[TensorSpec, ...], tensors: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The size of every named dynamic dimension, read from the tensors that carry it."""
    sizes: dict[str, int] = {}
    for spec in specs:
        t = tensors.get(spec.name)
        if t is None:
            continue
        if t.dim() != len(spec.shape):
            raise ValueError(f"{spec.name}: expected {len(spec.shape)} dims {spec.shape}, got {tuple(t.shape)}")
        for d, size in zip(spec.shape, t.shape):
            if isinstance(d, str):
                if sizes.setdefault(d, int(size)) != int(size):
                    raise ValueError(f"{spec.name}: dim {d} is {size}, elsewhere {sizes[d]}")
            elif d != size:
                raise ValueError(f"{spec.name}: expected shape {spec.shape}, got {tuple(t.shape)}")
    return sizes


def non_finite(outputs: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of floating outputs that hold NaN or Inf (one device sync)."""
    names = [k for k, v in outputs.items() if v.is_floating_point()]
    if not names:
        return []
    flags = torch.stack([torch.isfinite(outputs[k]).all() for k in names]).cpu().tolist()
    return [k for k, ok in zip(names, flags) if not ok]


def relative_error(outputs: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor]) -> float:
    """max over outputs of max |out - ref| / max(1, max |ref|); inf when an output holds NaN/Inf."""
    if non_finite(outputs):
        return float("inf")
    return max(float((outputs[k].to(r.device, r.dtype) - r).abs().max()) / max(1.0, float(r.abs().max()))
               for k, r in reference.items())


class FallbackRunner(Runner):
    """Runners of one module in order of preference; a failing call is repeated on the next one."""

    def __init__(self, runners: list[Runner], checked: tuple[str, ...] | None = None):
        """checked: outputs tested for NaN/Inf after each call (None = every floating output). A
        KV cache need not be scanned at every step: a bad value in it shows in the next hidden state."""
        if not runners:
            raise ValueError("FallbackRunner needs at least one runner")
        self.runners, self.checked = runners, checked
        self.info = runners[0].info
        self.fallbacks: dict[str, int] = {}  # "<backend>: <reason kind>" -> count
        self.last_fallback = ""
        self._lock = threading.Lock()

    def _run(self, inputs):
        *preferred, last = self.runners
        for runner, nxt in zip(preferred, self.runners[1:]):
            reason = runner.unsupported(inputs)
            if reason is None:
                try:
                    outputs = runner.run(inputs)
                except torch.cuda.OutOfMemoryError:
                    raise
                except Exception as e:  # noqa: BLE001 - any engine failure moves to the next backend
                    reason = f"{type(e).__name__}: {e}"
                else:
                    checked = outputs if self.checked is None else {k: outputs[k] for k in self.checked}
                    bad = non_finite(checked)
                    if not bad:
                        return outputs
                    reason = f"NaN/Inf in {', '.join(bad)}"
            self._count(runner, reason, nxt)
        reason = last.unsupported(inputs)
        if reason is not None:
            raise ValueError(f"{last.info.module}: no runner accepts these shapes ({reason})")
        return last.run(inputs)

    def _count(self, runner: Runner, reason: str, nxt: Runner) -> None:
        key = f"{runner.info.backend}/{runner.info.precision}: {reason.split(':')[0][:80]}"
        with self._lock:
            self.fallbacks[key] = self.fallbacks.get(key, 0) + 1
            self.last_fallback = reason
            first = self.fallbacks[key] == 1
        (log.warning if first else log.debug)(
            "%s: %s/%s failed (%s); this call runs on %s/%s", runner.info.module, runner.info.backend,
            runner.info.precision, reason, nxt.info.backend, nxt.info.precision)

    def unsupported(self, inputs):
        reasons = [r.unsupported(inputs) for r in self.runners]
        return None if any(r is None for r in reasons) else reasons[-1]

    def close(self):
        for r in self.runners:
            r.close()
