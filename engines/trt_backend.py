"""TensorRT: building engines from ONNX and running them, for `tensorrt` (10.x/11.x) and
TensorRT for RTX (`tensorrt_rtx`, or `tensorrt_rtx_bindings` when only the bindings and libs
wheels are installed) through one code path.

Build: a strongly typed network (precision comes from the ONNX tensor types, so an FP16 export
gives an FP16 engine with the FP32 islands the export kept), one optimisation profile
(min/opt/max per input), a timing cache read and written around the build (full TensorRT only:
TensorRT-RTX has none), a progress monitor that reports to the caller, and every builder/parser
error message kept for the failure reason. The workspace is left to TensorRT unless a limit is
given (TensorRT-RTX without a GPU fails to allocate any explicit workspace limit).

Run: `TrtRunner` deserialises the engine (a refusal, e.g. TensorRT-RTX on compute capability 9.0,
becomes `BackendUnavailable` with TensorRT's own words) and keeps a pool of execution contexts,
each with its own CUDA stream. A call takes a free context, orders its stream after the caller's
current stream, enqueues, and orders the caller's stream after it; no host synchronisation.
A context is reused only after its previous enqueue has finished (an event per context).
"""

from __future__ import annotations

import importlib
import queue
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from .runner import DTYPES, BackendUnavailable, Runner, RunnerInfo, TensorSpec

PACKAGES = ("tensorrt", "tensorrt_rtx", "tensorrt_rtx_bindings")

ProgressFn = Callable[[float, str], None]  # (fraction of the build, message)


class BuildFailed(RuntimeError):
    """The builder or the ONNX parser refused; the message holds TensorRT's errors."""


@dataclass
class TrtPackage:
    module: object
    name: str  # import name: "tensorrt" | "tensorrt_rtx" | "tensorrt_rtx_bindings"
    version: str

    @property
    def is_rtx(self) -> bool:
        return self.name.startswith("tensorrt_rtx")


_found: dict = {}


def find_tensorrt() -> TrtPackage:
    """The first TensorRT package that imports, or `BackendUnavailable` with every import error."""
    if "pkg" in _found:
        return _found["pkg"]
    if "error" in _found:
        raise BackendUnavailable(_found["error"])
    errors = []
    for name in PACKAGES:
        try:
            mod = importlib.import_module(name)
            version = str(getattr(mod, "__version__", "unknown"))
            getattr(mod, "Builder")
        except (ImportError, OSError, AttributeError) as e:
            errors.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            continue
        _found["pkg"] = TrtPackage(mod, name, version)
        return _found["pkg"]
    _found["error"] = "TensorRT is not installed (" + "; ".join(errors) + ")"
    raise BackendUnavailable(_found["error"])


def _logger(trt):
    """A TensorRT logger that keeps warnings and errors for failure reasons."""

    class Log(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.lines: list[tuple[int, str]] = []

        def log(self, severity, msg):
            level = int(severity)
            if level <= int(trt.ILogger.Severity.WARNING):
                self.lines.append((level, msg))

        def errors(self) -> str:
            errs = [m for lvl, m in self.lines if lvl <= int(trt.ILogger.Severity.ERROR)]
            return " | ".join(errs[-4:]) or "no error message from TensorRT"

    return Log()


def _monitor(trt, progress: ProgressFn):
    """A progress monitor: the fraction counts the steps of the top-level build phases."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.top: dict[str, int] = {}
            self.parents: dict[str, str | None] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            self.parents[phase_name] = parent_phase
            if parent_phase is None:
                self.top[phase_name] = max(1, int(num_steps))
                progress(0.0, phase_name)

        def step_complete(self, phase_name, step):
            if phase_name in self.top:
                progress(min(1.0, (int(step) + 1) / self.top[phase_name]), phase_name)
            return True

        def phase_finish(self, phase_name):
            if phase_name in self.top:
                progress(1.0, phase_name)

    return Monitor()


def build_engine(pkg: TrtPackage, onnx_path: str | Path, profile: dict[str, tuple[tuple, tuple, tuple]],
                 timing_cache: bytes | None = None, workspace: int = 0,
                 progress: ProgressFn | None = None,
                 shape_values: dict[str, tuple[tuple, tuple, tuple]] | None = None) -> tuple[bytes, bytes]:
    """Build a serialized engine from an ONNX file.

    profile: input name -> (min, opt, max) shapes, for every input; shape_values: the same for
    the values of shape-tensor inputs (an input whose value sets an output length, like the
    speech tokenizer's `feats_length`); workspace: byte limit, 0 = TensorRT's.
    Returns (engine bytes, timing cache bytes; empty for TensorRT-RTX). Raises BuildFailed with
    TensorRT's messages.
    """
    trt = pkg.module
    log = _logger(trt)
    builder = trt.Builder(log)
    if builder is None:
        raise BuildFailed(f"cannot create a builder: {log.errors()}")
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, log)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise BuildFailed(f"ONNX parser: {' | '.join(errs) or log.errors()}")
    config = builder.create_builder_config()
    if workspace:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    opt_profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        name = tensor.name
        if name not in profile:
            raise BuildFailed(f"no profile shapes for input {name!r}")
        opt_profile.set_shape(name, *profile[name])
        if tensor.is_shape_tensor:
            if name not in (shape_values or {}):
                raise BuildFailed(f"input {name!r} is a shape tensor and has no value range")
            opt_profile.set_shape_input(name, *shape_values[name])
    config.add_optimization_profile(opt_profile)
    if not pkg.is_rtx:  # TensorRT-RTX has no timing cache (its timing calls are deprecated no-ops)
        cache = config.create_timing_cache(timing_cache or b"")
        if not config.set_timing_cache(cache, False):
            cache = config.create_timing_cache(b"")  # a cache of another device or version: start afresh
            config.set_timing_cache(cache, False)
    if progress is not None:
        config.progress_monitor = _monitor(trt, progress)
    try:
        serialized = builder.build_serialized_network(network, config)
    except Exception as e:  # noqa: BLE001 - bindings raise plain exceptions for some failures
        raise BuildFailed(f"{type(e).__name__}: {e}; {log.errors()}") from e
    if serialized is None:
        raise BuildFailed(log.errors())
    timing = b"" if pkg.is_rtx else bytes(config.get_timing_cache().serialize())
    return bytes(serialized), timing


def _torch_dtype(trt, dt) -> torch.dtype:
    table = {"FLOAT": torch.float32, "HALF": torch.float16, "BF16": torch.bfloat16, "INT32": torch.int32,
             "INT64": torch.int64, "BOOL": torch.bool, "INT8": torch.int8, "UINT8": torch.uint8}
    for name, torch_dt in table.items():
        if getattr(trt.DataType, name, None) == dt:
            return torch_dt
    raise BackendUnavailable(f"engine tensor type {dt} has no torch equivalent")


@dataclass
class _Slot:
    context: object
    stream: torch.cuda.Stream
    done: torch.cuda.Event | None = None


class TrtRunner(Runner):
    def __init__(self, pkg: TrtPackage, engine_bytes: bytes, module: str, inputs: tuple[TensorSpec, ...],
                 outputs: tuple[TensorSpec, ...], device: torch.device | str, precision: str,
                 dims: dict[str, tuple[int, int]] | None = None, contexts: int = 2, detail: str = ""):
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailable("TensorRT needs a CUDA device")
        trt = pkg.module
        self._log = _logger(trt)
        with torch.cuda.device(self.device):
            self.runtime = trt.Runtime(self._log)
            self.engine = self.runtime.deserialize_cuda_engine(engine_bytes)
            if self.engine is None:
                raise BackendUnavailable(f"{pkg.name} {pkg.version} cannot load the engine: {self._log.errors()}")
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            expected = [s.name for s in inputs] + [s.name for s in outputs]
            if sorted(names) != sorted(expected):
                raise BackendUnavailable(f"engine tensors {names} differ from the module's {expected}")
            self._dtype = {n: _torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in names}
            self._host = {n for n in names if self.engine.get_tensor_location(n) == trt.TensorLocation.HOST}
            self.pool: queue.Queue[_Slot] = queue.Queue()
            for _ in range(max(1, contexts)):
                ctx = self.engine.create_execution_context()
                if ctx is None:
                    raise BackendUnavailable(f"cannot create an execution context: {self._log.errors()}")
                self.pool.put(_Slot(ctx, torch.cuda.Stream(self.device)))
        self.info = RunnerInfo(module, "tensorrt", precision, str(self.device), inputs, outputs, dict(dims or {}),
                               detail or f"{pkg.name} {pkg.version}, {contexts} contexts")

    def _run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        caller = torch.cuda.current_stream(self.device)
        slot = self.pool.get()
        try:
            if slot.done is not None:
                slot.done.synchronize()  # the context's previous enqueue must be over before rebinding
            ctx, stream = slot.context, slot.stream
            feed = []
            for s in self.info.inputs:
                where = "cpu" if s.name in self._host else self.device  # shape tensors live on the host
                t = inputs[s.name].to(where, self._dtype[s.name]).contiguous()
                if not ctx.set_input_shape(s.name, tuple(t.shape)):
                    raise ValueError(f"{s.name}: shape {tuple(t.shape)} outside the engine's profile")
                ctx.set_tensor_address(s.name, t.data_ptr())
                feed.append(t)
            outs = {}
            for s in self.info.outputs:
                shape = tuple(ctx.get_tensor_shape(s.name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"{s.name}: unresolved output shape {shape}")
                o = torch.empty(shape, dtype=self._dtype[s.name], device=self.device)
                ctx.set_tensor_address(s.name, o.data_ptr())
                outs[s.name] = o
            stream.wait_stream(caller)  # inputs and output allocations are ordered on the caller's stream
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"execute_async_v3 failed: {self._log.errors()}")
            for t in feed + list(outs.values()):
                if t.is_cuda:
                    t.record_stream(stream)
            slot.done = torch.cuda.Event()
            slot.done.record(stream)
            caller.wait_stream(stream)
        finally:
            self.pool.put(slot)
        return {s.name: outs[s.name].to(DTYPES[s.dtype]) for s in self.info.outputs}

    def close(self):
        while not self.pool.empty():
            slot = self.pool.get_nowait()
            if slot.done is not None:
                slot.done.synchronize()
        self.engine = None
        self.runtime = None
