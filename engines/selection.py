"""Choosing a backend per module, building what it needs, and plugging it into the model.

`auto` tries, per module: TensorRT -> PyTorch CUDA fast path (FP16/BF16, CUDA graphs) -> ONNX
Runtime -> PyTorch on the CPU, and keeps the first that sets up and passes a quick parity check
against the model's own PyTorch module. A named backend is tried first, then the same order.
Every candidate that was skipped or failed leaves its reason (not installed, no CUDA device,
build failed: ..., GPU not supported: ...), and the report says what each module runs on and why
the faster ones were not used; the worker's `Ready` carries it. The choice is remembered per
machine and model (engines.choices) and tried first, untimed, at the next start, so a restarted
worker runs the same backends as the one it replaces.

The chosen runner is wrapped in a `FallbackRunner` whose last member is the model's own PyTorch
module in its own precision, so an engine call that returns NaN/Inf or raises is answered by
PyTorch for that call.

Entry points: `build_runners(parts, config, progress)` -> (runners, report), and
`build_backends(parts, config, progress)` -> a `cosyvoice3.backends.Backends` for
`CosyVoice3(parts, backends)`: the runners wrapped in the seams' protocols (engines.adapters), and
on CUDA the batched decode + sampling step captured in CUDA graphs (engines.step_graphs). The
model is handed its backends; nothing here touches its modules.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from cosyvoice3.backends import Backends

from .adapters import EstimatorAdapter, RunnerDecodeSteps, RunnerSession, VocoderAdapter
from .artifacts import onnx_export_for, source_hashes, trt_engine_for
from .chunk_graphs import GraphChunkEstimator
from .cache import ArtifactCache
from .choices import REFERENCE_CHOICE, ChoiceBook
from .compiled import CompiledRunner, use_inductor_cache, use_triton_cache
from .modules import ModuleDef, dit_def, hift_def, llm_decode_def, llm_prefill_def, onnx_file_def
from .ort_backend import OrtRunner
from .runner import BackendUnavailable, FallbackRunner, Runner, relative_error
from .step_graphs import GraphDecodeSteps
from .torch_backend import PRECISIONS, CudaGraphRunner, TorchRunner, auto_precision, copy_module, to_precision
from .trt_backend import BuildFailed, TrtRunner, find_tensorrt

log = logging.getLogger(__name__)

AUTO_ORDER = ("tensorrt", "torch-cuda", "onnxruntime", "torch-cpu")
BACKEND_NAMES = {"auto": AUTO_ORDER, "tensorrt": AUTO_ORDER, "torch": ("torch-cuda", "torch-cpu"),
                 "onnxruntime": ("onnxruntime", "torch-cuda", "torch-cpu")}
MODULES = ("dit", "hift", "llm_prefill", "llm_decode", "campplus", "speech_tokenizer")
# Engine precisions. The DiT: FP16 with its LayerNorms, time embedding and rotary kept in FP32 by
# the model (BF16 has too few mantissa bits, and TensorRT's Mish takes no BF16). The LLM: BF16
# where the GPU has it (Qwen2's residual stream has outliers beyond FP16's range), else FP16.
# HiFT: FP32 (small, and its output is the audio).
FAST_PRECISION = {"dit": "fp16", "hift": "fp32", "llm_prefill": "auto", "llm_decode": "auto"}
FRONTEND = {"campplus": ("speaker_encoder", "campplus.onnx"),
            "speech_tokenizer": ("speech_tokenizer", "speech_tokenizer_v3.onnx")}
GRAPHED = {"dit", "hift", "llm_decode"}  # modules whose shapes repeat: CUDA graphs pay off
PRECISION_OF = {dtype: name for name, dtype in PRECISIONS.items()}  # torch dtype -> "fp16" ...
ORT_MARGIN = 0.9  # ONNX Runtime must be 10% faster than PyTorch on the same device to be kept

ProgressFn = Callable[[str, float, str], None]


@dataclass
class EngineConfig:
    """backend: auto | tensorrt | torch | onnxruntime; precision: None = per module and backend
    (TensorRT and PyTorch CUDA: FAST_PRECISION; ONNX Runtime and CPU: FP32); dims: module -> {dim: (min, opt, max)}
    TensorRT profile overrides; contexts: TensorRT execution contexts per engine; verify: check
    every new runner against the PyTorch module on a small input before using it; measure: keep
    ONNX Runtime only where it is at least 10% faster than the PyTorch module on the same device
    (on 2 CPU cores it often is not); llm_kernels: what the CUDA-graphed decode step runs, "torch"
    (the module's own step) or "triton" (`engines.llm_fused` on the kernels of `engines.llm_triton`;
    the module's step, with the reason in the report, where Triton or the shapes do not allow it)."""

    backend: str = "auto"
    precision: str | None = None
    cache_dir: str | Path | None = None
    modules: tuple[str, ...] = MODULES
    dims: dict[str, dict[str, tuple[int, int, int]]] = field(default_factory=dict)
    contexts: int = 2
    cuda_graphs: bool = True
    graph_bucket: int = 64
    workspace: int | None = None
    ort_threads: int | None = None
    verify: bool = True
    measure: bool = True
    compile: bool = True
    compile_llm: bool = False
    llm_kernels: str = "torch"


def module_defs(model, names=MODULES) -> dict[str, ModuleDef]:
    """The engine definitions of a model's parts (anything with .flow, .hift, .llm, and a
    `model_dir` holding the front-end files, as `cosyvoice3.pipeline.ModelParts`). Front-end
    modules whose ONNX file is absent are left out."""
    lm = model.llm
    make = {"dit": lambda: dit_def(model.flow.estimator), "hift": lambda: hift_def(model.hift),
            "llm_prefill": lambda: llm_prefill_def(lm), "llm_decode": lambda: llm_decode_def(lm)}
    defs = {}
    for n in names:
        if n in FRONTEND:
            path = _frontend_path(model, n)
            if path is not None:
                defs[n] = onnx_file_def(n, path)
        else:
            defs[n] = make[n]()
    return defs


def _frontend_path(model, name: str) -> Path | None:
    attr, file = FRONTEND[name]
    path = getattr(getattr(model, attr, None), "path", None)
    if path is None and getattr(model, "model_dir", None) is not None:
        path = Path(model.model_dir) / file
    return Path(path) if path is not None and Path(path).is_file() else None


def _model_precision(mdef: ModuleDef) -> str:
    if mdef.wrapper is None:
        return "fp32"
    dtype = next((p.dtype for p in mdef.wrapper.parameters() if p.is_floating_point()), torch.float32)
    return PRECISION_OF.get(dtype, "fp32")


def _model_device(mdef: ModuleDef) -> torch.device:
    if mdef.wrapper is None:
        return torch.device("cpu")
    return next((p.device for p in mdef.wrapper.parameters()), torch.device("cpu"))


class _Builder:
    """Makes one candidate runner of one module; raises with the reason when it cannot."""

    def __init__(self, config: EngineConfig, model_dir, device: torch.device, progress: ProgressFn):
        self.config, self.model_dir, self.device, self.progress = config, model_dir, device, progress
        self.cache = ArtifactCache(config.cache_dir)
        self.fraction, self.span = 0.0, 1.0  # this module's share of the overall progress
        self.last_engine: dict | None = None  # metadata of the last TensorRT engine built or loaded

    def precision(self, mdef: ModuleDef, backend: str) -> str:
        if mdef.onnx_path is not None:
            return "fp32"  # the official front-end files are FP32
        if self.config.precision:
            return self.config.precision
        if backend in ("tensorrt", "torch-cuda"):
            fast = FAST_PRECISION[mdef.name]
            return auto_precision(self.device) if fast == "auto" else fast
        return "fp32"

    def make(self, mdef: ModuleDef, backend: str) -> Runner:
        return getattr(self, backend.replace("-", "_"))(mdef, self.precision(mdef, backend))

    def tensorrt(self, mdef: ModuleDef, precision: str) -> Runner:
        pkg = find_tensorrt()
        if self.device.type != "cuda":
            raise BackendUnavailable("no CUDA device")
        sources = source_hashes(mdef, self.model_dir, self.cache)
        onnx_path = self.onnx(mdef, precision, sources, self.device)

        def report(fraction: float, phase: str) -> None:
            self.progress("engines", self.fraction + self.span * fraction,
                          f"{mdef.name}: building a TensorRT engine ({phase}, {fraction:.0%})")

        try:
            engine, meta, built = trt_engine_for(mdef, onnx_path, precision, sources, pkg, self.device, self.cache,
                                                 self.config.dims.get(mdef.name), self.config.workspace, report)
        except BuildFailed as e:
            raise BuildFailed(f"build failed: {e}") from e
        self.last_engine = {**meta, "built_now": built}
        try:
            return TrtRunner(pkg, engine, mdef.name, mdef.inputs, mdef.outputs, self.device, precision,
                             mdef.accepted() | _overrides(self.config.dims.get(mdef.name)),
                             self.config.contexts,
                             f"{pkg.name} {pkg.version}, {meta['file']}{' (built now)' if built else ''}")
        except BackendUnavailable as e:
            raise BackendUnavailable(f"GPU not supported: {e}") from e

    def onnx(self, mdef: ModuleDef, precision: str, sources: dict, device: torch.device) -> Path:
        """The module's ONNX file: the official file itself, or our cached export."""
        if mdef.onnx_path is not None:
            if precision != "fp32":
                raise BackendUnavailable(f"{mdef.onnx_path.name} is an FP32 model; no {precision} version")
            return mdef.onnx_path
        return onnx_export_for(mdef, precision, sources, self.cache, device, lambda: self.progress(
            "engines", self.fraction, f"{mdef.name}: exporting to ONNX ({precision})"))

    def torch_cuda(self, mdef: ModuleDef, precision: str) -> Runner:
        if mdef.wrapper is None:
            raise BackendUnavailable("no PyTorch implementation (an ONNX model)")
        if self.device.type != "cuda":
            raise BackendUnavailable("no CUDA device")
        eager = TorchRunner(mdef.wrapper, mdef.name, mdef.inputs, mdef.outputs, self.device, precision,
                            mdef.accepted())
        if self.config.cuda_graphs and mdef.name in GRAPHED:
            compile_large = mdef.graph_elements and self.config.compile and mdef.name in COMPILE_SIZES
            large = self.compiled(mdef, eager) if compile_large else None
            return CudaGraphRunner(eager, mdef.pad_dims, self.config.graph_bucket, max_elements=mdef.graph_elements,
                                   large=large, derived=mdef.derived)
        return eager

    def compiled(self, mdef: ModuleDef, eager: TorchRunner) -> Runner | None:
        """torch.compile for the module's large shapes, warmed and checked on one of them (the
        kernels are kept in the engine cache: only a machine's first start compiles); None, with
        the reason logged, when it does not work here."""
        folder = use_inductor_cache(self.cache.root, self.device)
        self.progress("engines", self.fraction, f"{mdef.name}: compiling the large shapes (kernels in {folder})")
        runner = CompiledRunner(eager)
        try:
            example = mdef.example(COMPILE_SIZES[mdef.name][0], self.device)
            t0 = time.perf_counter()
            err = relative_error(runner.run({k: v.clone() for k, v in example.items()}),
                                 eager.run({k: v.clone() for k, v in example.items()}))
            log.info("engines: %s compiled in %.1f s (error %.2g against eager)", mdef.name,
                     time.perf_counter() - t0, err)
            if not err <= mdef.tolerance[eager.info.precision]:
                raise BackendUnavailable(f"compiled output differs from eager by {err:.3g}")
            for sizes in COMPILE_SIZES[mdef.name][1:]:  # the other specialisations serving meets
                runner.run(mdef.example(sizes, self.device))
            runner.sealed = True
        except Exception as e:  # noqa: BLE001 - the eager runner serves every shape then
            log.warning("engines: %s stays eager at large shapes: %s: %s", mdef.name, type(e).__name__, e)
            return None
        return runner

    def onnxruntime(self, mdef: ModuleDef, precision: str) -> Runner:
        sources = source_hashes(mdef, self.model_dir, self.cache)
        onnx_path = self.onnx(mdef, precision, sources, _model_device(mdef))
        return OrtRunner(onnx_path, mdef.name, mdef.inputs, mdef.outputs, self.device, precision,
                         mdef.accepted(), self.config.ort_threads)

    def torch_cpu(self, mdef: ModuleDef, precision: str) -> Runner:
        if mdef.wrapper is None:
            raise BackendUnavailable("no PyTorch implementation (an ONNX model)")
        return TorchRunner(mdef.wrapper, mdef.name, mdef.inputs, mdef.outputs, "cpu", "fp32", mdef.accepted())


def _run_device(model, mdef: ModuleDef) -> torch.device:
    """Where a module's engines run: the model's device (the front-end files follow the model)."""
    if mdef.wrapper is not None:
        return _model_device(mdef)
    return torch.device(getattr(model, "device", "cpu"))


REFERENCE = "the model's own module"


def _reference(mdef: ModuleDef, device: torch.device) -> Runner:
    """The runner every engine is checked against and falls back to: the model's PyTorch module,
    or, for an ONNX file module, the file on ONNX Runtime's CPU provider."""
    if mdef.wrapper is None:  # no size limits: the reference answers whatever the engines cannot
        runner = OrtRunner(mdef.onnx_path, mdef.name, mdef.inputs, mdef.outputs, "cpu", "fp32")
    else:
        runner = TorchRunner(mdef.wrapper, mdef.name, mdef.inputs, mdef.outputs, device, _model_precision(mdef))
    runner.info.detail = REFERENCE
    return runner


def _same(a: Runner, b: Runner) -> bool:
    """An eager PyTorch runner on the model's own device and precision: the reference itself."""
    return (type(a) is type(b) and a.info.backend == b.info.backend and a.info.device == b.info.device
            and a.info.precision == b.info.precision)


def _overrides(dims: dict | None) -> dict[str, tuple[int, int]]:
    return {d: (lo, hi) for d, (lo, _, hi) in (dims or {}).items()}


def parity_error(mdef: ModuleDef, runner: Runner, reference: Runner, sizes: dict[str, int]) -> float:
    """max |runner - reference| / max(1, max |reference|) over the outputs, on the module's
    example inputs of `sizes`; inf when the runner's output holds NaN/Inf."""
    example = mdef.example(sizes, _model_device(mdef))
    ref = reference.run({k: v.clone() for k, v in example.items()})
    return relative_error(runner.run({k: v.clone() for k, v in example.items()}), ref)


def parity_tolerance(mdef: ModuleDef, runner: Runner, reference: Runner) -> float:
    """Both sides approximate the FP32 module: when the reference itself runs in 16 bits (a BF16
    model), their difference may reach the sum of the two precisions' tolerances."""
    tol = mdef.tolerance[runner.info.precision]
    if reference.info.precision != "fp32":
        tol += mdef.tolerance[reference.info.precision]
    return tol


def _median_ms(runner: Runner, mdef: ModuleDef, sizes: dict[str, int], repeats: int = 3) -> float:
    example = mdef.example(sizes, _model_device(mdef))
    sync = torch.cuda.synchronize if example and next(iter(example.values())).is_cuda else (lambda: None)
    runner.run({k: v.clone() for k, v in example.items()})
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        runner.run({k: v.clone() for k, v in example.items()})
        sync()
        times.append(time.perf_counter() - t0)
    return 1000 * sorted(times)[len(times) // 2]


# Large serving shapes compiled at start-up (frames padded to multiples of 64, rows to powers of
# two): rows that are a multiple of 16 and rows that are not get kernels of their own.
COMPILE_SIZES = {"dit": [{"batch": 32, "frames": 640, "chunk": 50}, {"batch": 4, "frames": 1024, "chunk": 50}]}
MEASURE_SIZES = {"dit": {"batch": 2, "frames": 200, "chunk": 50}, "hift": {"batch": 1, "frames": 50},
                 "llm_prefill": {"batch": 1, "length": 64, "slots": 128}, "llm_decode": {"batch": 1, "slots": 256}}
VERIFY_SIZES = {"dit": {"batch": 2, "frames": 70, "chunk": 50}, "hift": {"batch": 1, "frames": 9},
                "llm_prefill": {"batch": 1, "length": 12, "slots": 20}, "llm_decode": {"batch": 1, "slots": 20},
                "campplus": {"T": 200}, "speech_tokenizer": {"T": 200}}


def build_runners(model, config: EngineConfig | None = None,
                  progress: ProgressFn | None = None) -> tuple[dict[str, Runner], dict[str, dict]]:
    """Pick, build and verify a runner for every configured module of `model`.

    Returns (runners: module -> FallbackRunner ending in the model's PyTorch module,
    report: module -> {backend, precision, device, detail, reason, fallback, tried}).
    Never raises for a backend that does not work: it is skipped with its reason.
    """
    config = config or EngineConfig()
    progress = progress or (lambda stage, fraction, message="": None)
    if config.backend not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {config.backend!r}; expected one of {', '.join(BACKEND_NAMES)}")
    order = BACKEND_NAMES[config.backend]
    defs = module_defs(model, config.modules)
    runners, report = {}, {}
    book = ChoiceBook(ArtifactCache(config.cache_dir))
    for i, (name, mdef) in enumerate(defs.items()):
        device = _model_device(mdef)
        builder = _Builder(config, getattr(model, "model_dir", None), _run_device(model, mdef), progress)
        builder.fraction, builder.span = i / len(defs), 1 / len(defs)
        reference = _reference(mdef, device)
        key = book.key(name, source_hashes(mdef, getattr(model, "model_dir", None), builder.cache),
                       _run_device(model, mdef), config.backend, config.precision)
        remembered = book.recall(key)
        candidates = list(order)
        if remembered in candidates:
            candidates.remove(remembered)
            candidates.insert(0, remembered)
        elif remembered == REFERENCE_CHOICE:
            candidates = []
        tried, chosen, chosen_as = [], None, REFERENCE_CHOICE
        for backend in candidates:
            progress("engines", i / len(defs), f"{name}: trying {backend}")
            try:
                runner = builder.make(mdef, backend)
                if config.verify:
                    err = parity_error(mdef, runner, reference, VERIFY_SIZES[name])
                    tol = parity_tolerance(mdef, runner, reference)
                    if not err <= tol:
                        runner.close()
                        raise BackendUnavailable(f"parity check failed: error {err:.3g} > {tol:g}")
                if (config.measure and backend == "onnxruntime" and mdef.wrapper is not None
                        and runner.info.device == reference.info.device and backend != remembered):
                    ours, theirs = (_median_ms(r, mdef, MEASURE_SIZES[name]) for r in (runner, reference))
                    if ours > ORT_MARGIN * theirs:
                        runner.close()
                        raise BackendUnavailable(f"not faster than PyTorch here ({ours:.2f} ms vs {theirs:.2f} ms)")
            except torch.cuda.OutOfMemoryError as e:
                tried.append({"backend": backend, "ok": False, "reason": f"out of GPU memory: {e}"})
                torch.cuda.empty_cache()
                continue
            except Exception as e:  # noqa: BLE001 - every failure becomes a fallback reason
                reason = str(e) if isinstance(e, (BackendUnavailable, BuildFailed)) else f"{type(e).__name__}: {e}"
                tried.append({"backend": backend, "ok": False, "reason": reason})
                log.info("engines: %s cannot use %s: %s", name, backend, reason)
                continue
            tried.append({"backend": backend, "ok": True, "reason": runner.info.detail})
            chosen, chosen_as = runner, backend
            break
        if chosen is None or _same(chosen, reference):
            chosen, chosen_as = reference, REFERENCE_CHOICE
        chain = [chosen] if chosen is reference else [chosen, reference]
        runners[name] = FallbackRunner(chain, checked=(mdef.outputs[0].name,))
        skipped = [f"{t['backend']}: {t['reason']}" for t in tried if not t["ok"]]
        if remembered == REFERENCE_CHOICE and not skipped:
            skipped = [f"{reference.info.backend}/{reference.info.precision} was the choice of the last start here"]
        report[name] = {**chosen.info.as_dict(), "reason": "; ".join(skipped) or "fastest available",
                        "fallback": f"{reference.info.backend}/{reference.info.precision}" if len(chain) > 1 else "",
                        "tried": tried, "remembered": remembered == chosen_as}
        if remembered != chosen_as:
            book.remember(key, name, chosen_as, chosen.info.precision)
        log.info("engines: %s runs on %s/%s (%s%s)", name, chosen.info.backend, chosen.info.precision,
                 report[name]["reason"], "; as at the last start" if remembered == chosen_as else "")
    progress("engines", 1.0, "engines ready")
    return runners, report


def build_backends(parts, config: EngineConfig | None = None, progress: ProgressFn | None = None,
                   backend: str = "auto", precision: str | None = None) -> Backends:
    """Build runners for the model's parts and wrap them as the model's backends. On CUDA, the LLM
    decode step (with its sampling) runs in CUDA graphs unless TensorRT takes it; without a
    TensorRT package the plain llm_decode runner is not built at all."""
    config = config or EngineConfig(backend=backend, precision=precision)
    progress = progress or (lambda stage, fraction, message="": None)
    lm = parts.llm
    on_cuda = config.cuda_graphs and lm.device.type == "cuda"
    modules = tuple(m for m in config.modules if not (on_cuda and m == "llm_decode" and not _tensorrt_present()))
    runners, report = build_runners(parts, dataclasses.replace(config, modules=modules), progress)
    plugged = {name: r for name, r in runners.items() if r.runners[0].info.detail != REFERENCE}
    graphs = on_cuda and report.get("llm_decode", {}).get("backend") != "tensorrt"
    if graphs:
        plugged.pop("llm_decode", None)
    backends = Backends(report=report)
    if "dit" in plugged:
        backends.estimator = EstimatorAdapter(plugged["dit"])
    if "hift" in plugged:
        backends.vocoder = VocoderAdapter(plugged["hift"])
    if "campplus" in plugged:
        backends.speaker_session = RunnerSession(plugged["campplus"])
    if "speech_tokenizer" in plugged:
        backends.speech_tokenizer_session = RunnerSession(plugged["speech_tokenizer"])
    if graphs:
        progress("engines", 0.99, "llm: the batched decode step in CUDA graphs")
        fast = _in_fast_precision(lm)
        step_lm, kernels_reason = _decode_step_model(fast, config.llm_kernels, config.cache_dir)
        steps = GraphDecodeSteps(fast, compile=config.compile_llm, step_lm=step_lm)
        backends.decode_steps = steps
        tried = kernels_reason or report.get("llm_decode", {}).get("reason") or _no_tensorrt_reason()
        report["llm_decode"] = {"backend": "torch", "precision": _precision_of(steps.lm), "device": str(lm.device),
                                "detail": steps.describe(), "reason": tried, "fallback": "", "tried": []}
    elif "llm_prefill" in plugged or "llm_decode" in plugged:
        backends.decode_steps = RunnerDecodeSteps(lm, plugged.get("llm_prefill"), plugged.get("llm_decode"))
    for seam, name in (("flow", "dit"), ("llm", "llm_decode")):
        if name in report:
            report[seam] = report[name]
    if config.cuda_graphs and "dit" in config.modules and parts.flow.estimator.proj_out.weight.is_cuda:
        progress("engines", 0.995, "flow: cached streaming chunks in CUDA graphs")
        backends.chunk_estimator = chunk_graphs(parts.flow.estimator, config.precision)
        report["flow_chunks"] = {"backend": "torch", "precision": PRECISION_OF[backends.chunk_estimator.dtype],
                                 "device": str(parts.flow.estimator.proj_out.weight.device),
                                 "detail": backends.chunk_estimator.describe(), "reason": "", "fallback": "",
                                 "tried": []}
    return backends


def chunk_graphs(dit, precision: str | None) -> GraphChunkEstimator:
    """The cached streaming DiT call in CUDA graphs, on a copy of `dit` in the DiT's engine
    precision (or `precision`), its common shapes captured now."""
    name = precision or FAST_PRECISION["dit"]
    dtype = PRECISIONS[auto_precision(dit.proj_out.weight.device) if name == "auto" else name]
    module = dit if dit.proj_out.weight.dtype == dtype else to_precision(copy_module(dit), dit.proj_out.weight.device,
                                                                          dtype).eval()
    estimator = GraphChunkEstimator(module)
    estimator.warm()
    return estimator


def _tensorrt_present() -> bool:
    try:
        find_tensorrt()
    except BackendUnavailable:
        return False
    return True


def _no_tensorrt_reason() -> str:
    try:
        find_tensorrt()
    except BackendUnavailable as e:
        return f"tensorrt: {e}"
    return ""


def _decode_step_model(lm, kernels: str, cache_dir):
    """(what the graphed decode step runs: None for the module's own step, or the fused step on
    Triton kernels, compiled into the engine cache; why the fused step was asked for and not
    taken, or "")."""
    if kernels == "torch":
        return None, ""
    if kernels != "triton":
        raise ValueError(f"unknown llm_kernels {kernels!r} (torch or triton)")
    from .llm_fused import fused_decoder

    try:
        fused = fused_decoder(lm, "triton")
    except (ImportError, ValueError) as exc:
        why = f"the Triton decode step is not available ({exc}): the module's step"
        log.warning("llm: %s", why)
        return None, why
    use_triton_cache(ArtifactCache(cache_dir).root)  # its kernels compile when the graphs are captured
    return fused, ""


def _in_fast_precision(lm):
    """`lm` itself when it already has the device's fast precision, else a copy in it."""
    dtype = PRECISIONS[auto_precision(lm.device)]
    return lm if lm.dtype == dtype else to_precision(copy_module(lm), lm.device, dtype).eval()


def _precision_of(module) -> str:
    return PRECISION_OF.get(module.dtype, str(module.dtype))
