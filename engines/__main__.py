"""Command line: build engines ahead of time, and check every backend against PyTorch.

    python -m engines build --model-dir D [--backend tensorrt] [--precision fp16] [--device cuda]
    python -m engines check --model-dir D [--device cuda]

`build` runs the same selection as the worker (so later starts find the engines in the cache) and
prints one JSON line per module: what it runs on and why faster backends were not used. It exits
1 when a backend was named and some module could not use it.

`check` runs every backend that sets up here - PyTorch FP32/FP16/BF16 and CUDA graphs, ONNX
Runtime FP32/FP16, TensorRT FP32/FP16 - on the same inputs per module and prints one JSON line
per module, backend and precision: the largest error relative to PyTorch FP32
(max |out - ref| / max(1, max |ref|)), the tolerance, and the median time of 3 runs. A backend
that cannot run prints its reason (a TensorRT engine that was built but refused by the GPU says
so). Exit status 1 when any output is outside its tolerance.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import types
from pathlib import Path

import torch

from .runner import BackendUnavailable, relative_error
from .selection import GRAPHED, MODULES, EngineConfig, _Builder, _reference, _run_device, build_runners, module_defs
from .torch_backend import CudaGraphRunner, TorchRunner
from .trt_backend import BuildFailed

CHECK_SIZES = {
    "dit": ({"batch": 2, "frames": 200, "chunk": 50}, {"batch": 4, "frames": 333, "chunk": 0}),
    "hift": ({"batch": 1, "frames": 50},),
    "llm_prefill": ({"batch": 1, "length": 64, "slots": 128},),
    "llm_decode": ({"batch": 1, "slots": 256}, {"batch": 4, "slots": 256}),
    "campplus": ({"T": 300},),
    "speech_tokenizer": ({"T": 300},),
}


def load_model(model_dir: str | Path, device: str) -> types.SimpleNamespace:
    """The heavy modules of a model directory (no tokenizer or front end), in FP32 on `device`."""
    from cosyvoice3.config import load_config
    from cosyvoice3.nn.flow import load_flow
    from cosyvoice3.nn.hift import load_hift
    from cosyvoice3.nn.llm import load_llm

    d = Path(model_dir)
    cfg = load_config(d)
    return types.SimpleNamespace(flow=load_flow(d / "flow.pt", cfg.flow, device),
                                 hift=load_hift(d / "hift.pt", cfg.hift, device),
                                 llm=load_llm(d / "llm.pt", cfg.llm, cfg.qwen, device),
                                 model_dir=d, device=torch.device(device), config=cfg)


def _print(obj: dict) -> None:
    print(json.dumps(obj, default=str), flush=True)


def cmd_build(args) -> int:
    model = load_model(args.model_dir, args.device)
    config = _config(args)

    def progress(stage, fraction, message=""):
        print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    _, report = build_runners(model, config, progress)
    missed = 0
    for name, r in report.items():
        _print({"module": name, **r})
        if args.backend != "auto" and r["backend"] != args.backend.split("-")[0]:
            missed += 1
    return 1 if missed else 0


def _candidates(builder: _Builder, mdef) -> list[tuple[str, str]]:
    """(backend, precision) pairs to compare with the reference: every PyTorch CUDA precision, CUDA
    graphs in the precision `auto` uses, ONNX Runtime and TensorRT in FP32 and their `auto` one."""
    out = []
    if builder.device.type == "cuda":
        out += [("torch-cuda", p) for p in ("fp16", "bf16")]
        if mdef.name in GRAPHED:
            out.append(("torch-graphs", builder.precision(mdef, "torch-cuda")))
    for backend in ("onnxruntime", "tensorrt"):
        out += [(backend, p) for p in dict.fromkeys(("fp32", "fp16", builder.precision(mdef, "tensorrt")))]
    return out


def _timed(runner, inputs, repeats: int = 3):
    out = runner.run({k: v.clone() for k, v in inputs.items()})  # warm-up (captures, lazy init)
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = runner.run({k: v.clone() for k, v in inputs.items()})
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return out, 1000 * statistics.median(times)


def cmd_check(args) -> int:
    model = load_model(args.model_dir, args.device)
    config = _config(args)
    defs = module_defs(model, config.modules)
    mismatch = False
    for name, mdef in defs.items():
        device = _run_device(model, mdef)
        builder = _Builder(config, model.model_dir, device, lambda *a: None)
        reference = _reference(mdef, device if mdef.wrapper is not None else torch.device("cpu"))
        examples = [mdef.example(s, device) for s in CHECK_SIZES[name]]
        refs = [_timed(reference, ex) for ex in examples]
        for sizes, (_, ms) in zip(CHECK_SIZES[name], refs):
            _print({"module": name, "backend": reference.info.backend, "precision": reference.info.precision,
                    "device": reference.info.device, "sizes": sizes, "max_err": 0.0, "ms": round(ms, 3),
                    "ok": True, "detail": "reference"})
        for backend, precision in _candidates(builder, mdef):
            if backend not in args.backends.split(",") or precision not in args.precisions.split(","):
                continue
            line = {"module": name, "backend": backend, "precision": precision, "device": str(device)}
            builder.last_engine = None
            try:
                runner = _make(builder, mdef, backend, precision)
            except (BackendUnavailable, BuildFailed) as e:
                engine = builder.last_engine
                _print({**line, "ok": None, "error": str(e),
                        **({"engine_built": True, "engine": engine["file"], "engine_bytes": engine["size"],
                            "build_s": engine.get("build_s")} if engine else {})})
                continue
            except Exception as e:  # noqa: BLE001 - report and go on with the next backend
                _print({**line, "ok": None, "error": f"{type(e).__name__}: {e}"})
                continue
            tol = mdef.tolerance[precision]
            for sizes, example, (ref, _) in zip(CHECK_SIZES[name], examples, refs):
                try:
                    out, ms = _timed(runner, example)
                except Exception as e:  # noqa: BLE001
                    _print({**line, "sizes": sizes, "ok": None, "error": f"{type(e).__name__}: {e}"})
                    continue
                err = relative_error(out, ref)
                ok = err <= tol
                mismatch |= not ok
                _print({**line, "device": runner.info.device, "detail": runner.info.detail, "sizes": sizes,
                        "max_err": err, "tol": tol, "ok": ok, "ms": round(ms, 3)})
            runner.close()
    return 1 if mismatch else 0


def _make(builder: _Builder, mdef, backend: str, precision: str):
    if backend == "torch-graphs":
        if mdef.wrapper is None or builder.device.type != "cuda":
            raise BackendUnavailable("needs a PyTorch module on a CUDA device")
        eager = TorchRunner(mdef.wrapper, mdef.name, mdef.inputs, mdef.outputs, builder.device, precision,
                            mdef.accepted())
        return CudaGraphRunner(eager, mdef.pad_dims, builder.config.graph_bucket, max_elements=mdef.graph_elements,
                               derived=mdef.derived)
    return getattr(builder, backend.replace("-", "_"))(mdef, precision)


def _config(args) -> EngineConfig:
    return EngineConfig(backend=getattr(args, "backend", "auto"), precision=getattr(args, "precision", None),
                        cache_dir=args.cache_dir, modules=tuple(args.modules.split(",")), contexts=args.contexts,
                        workspace=int(args.workspace_gb * (1 << 30)) if args.workspace_gb else None)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engines", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for cmd in ("build", "check"):
        p = sub.add_parser(cmd)
        p.add_argument("--model-dir", required=True)
        p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
        p.add_argument("--cache-dir", default=None, help="engine cache (default $COSYFAST_ENGINE_CACHE or "
                                                         "~/.cache/cosyfast/engines)")
        p.add_argument("--modules", default=",".join(MODULES))
        p.add_argument("--contexts", type=int, default=2, help="TensorRT execution contexts per engine")
        p.add_argument("--workspace-gb", type=float, default=None, help="TensorRT workspace limit")
        if cmd == "check":
            p.add_argument("--backends", default="torch-cuda,torch-graphs,onnxruntime,tensorrt",
                           help="candidates to run besides the PyTorch FP32 reference")
            p.add_argument("--precisions", default="fp32,fp16,bf16")
        if cmd == "build":
            p.add_argument("--backend", default="auto", choices=("auto", "tensorrt", "torch", "onnxruntime"))
            p.add_argument("--precision", default=None, choices=("fp32", "fp16", "bf16"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return {"build": cmd_build, "check": cmd_check}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
