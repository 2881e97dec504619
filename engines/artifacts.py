"""Cached ONNX exports and TensorRT engines of a module, with their full cache keys.

`source_hashes` names what a module was made from: the SHA-256 of its model files (and of the
model config), or, for a module built in memory, of its parameters. `onnx_export_for` returns the
cached export for (sources, precision, export recipe, torch version, dims) or exports it now.
`trt_engine_for` returns the cached engine for (that export, GPU name and compute capability,
TensorRT package and version, precision, profile) or builds it now, reading and updating the
timing cache of that GPU and TensorRT.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Callable

import torch

from .cache import ArtifactCache, atomic_write
from .modules import ModuleDef
from .onnx_export import EXPORT_VERSION, OPSET, export_onnx
from .trt_backend import TrtPackage, build_engine

CONFIG_FILES = ("cosyvoice3.yaml", "CosyVoice-BlankEN/config.json")


def state_hash(module: torch.nn.Module) -> str:
    """SHA-256 over the names, shapes, dtypes and bytes of a module's parameters and buffers."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def source_hashes(mdef: ModuleDef, model_dir: str | Path | None, cache: ArtifactCache) -> dict[str, str]:
    """Hashes of the files a module comes from; of its weights when there is no model directory."""
    if model_dir is not None:
        files = [Path(model_dir) / f for f in mdef.sources + CONFIG_FILES]
        if all(f.is_file() for f in files[:len(mdef.sources)]):
            return {str(f.relative_to(model_dir)): cache.file_hash(f) for f in files if f.is_file()}
    return {"state_dict": state_hash(mdef.wrapper)}


def gpu_identity(device: torch.device) -> dict[str, str]:
    if device.type != "cuda" or not torch.cuda.is_available():
        return {"gpu": "none", "compute_capability": "none"}
    major, minor = torch.cuda.get_device_capability(device)
    return {"gpu": torch.cuda.get_device_name(device), "compute_capability": f"{major}.{minor}"}


def onnx_fields(mdef: ModuleDef, sources: dict[str, str], precision: str) -> dict:
    return {"module": mdef.name, "sources": sources, "precision": precision, "export_version": EXPORT_VERSION,
            "opset": OPSET, "torch": torch.__version__.split("+")[0],
            "dims": {k: list(v) for k, v in mdef.dims.items()}}


def onnx_export_for(mdef: ModuleDef, precision: str, sources: dict[str, str], cache: ArtifactCache,
                    device: torch.device | None = None, on_export: Callable[[], None] | None = None) -> Path:
    """The cached export, or a new one (`on_export` is called first, for progress reports)."""
    fields = onnx_fields(mdef, sources, precision)

    def build(tmp: Path) -> dict:
        if on_export is not None:
            on_export()
        t0 = time.perf_counter()
        export_onnx(mdef, tmp, precision, device=device)
        return {"export_s": round(time.perf_counter() - t0, 2)}

    entry, _ = cache.get_or_build(f"{mdef.name}-{precision}", fields, "onnx", build)
    return entry.path


def trt_fields(mdef: ModuleDef, onnx_sha256: str, sources: dict[str, str], precision: str, pkg: TrtPackage,
               device: torch.device, profile: dict) -> dict:
    return {"module": mdef.name, "onnx_sha256": onnx_sha256, "sources": sources, "precision": precision,
            **gpu_identity(device), "trt_package": pkg.name, "trt_version": pkg.version,
            "profile": {k: [list(s) for s in v] for k, v in profile.items()}, "export_version": EXPORT_VERSION}


def trt_engine_for(mdef: ModuleDef, onnx_path: Path, precision: str, sources: dict[str, str], pkg: TrtPackage,
                   device: torch.device, cache: ArtifactCache, dims: dict | None = None,
                   workspace: int | None = None,
                   progress: Callable[[float, str], None] | None = None) -> tuple[bytes, dict, bool]:
    """(engine bytes, metadata, built now). Raises BuildFailed when TensorRT refuses."""
    profile = mdef.profile(dims)
    onnx_sha = cache.file_hash(onnx_path)
    fields = trt_fields(mdef, onnx_sha, sources, precision, pkg, device, profile)
    if mdef.value_dims:
        fields["shape_values"] = {k: [list(v) for v in r] for k, r in mdef.shape_values(dims).items()}
    ident = gpu_identity(device)
    timing_path = cache.root / ("timing-" + "-".join(
        "".join(c if c.isalnum() else "_" for c in v) for v in (ident["gpu"], ident["compute_capability"],
                                                               pkg.name, pkg.version)) + ".cache")

    def build(tmp: Path) -> dict:
        t0 = time.perf_counter()
        timing = timing_path.read_bytes() if timing_path.is_file() else None
        engine, new_timing = build_engine(pkg, onnx_path, profile, timing, workspace or 0, progress,
                                          mdef.shape_values(dims))
        if new_timing:
            atomic_write(timing_path, lambda f: f.write(new_timing))
        tmp.write_bytes(engine)
        return {"build_s": round(time.perf_counter() - t0, 2)}

    entry, built = cache.get_or_build(f"{mdef.name}-{precision}", fields, "engine", build)
    return entry.path.read_bytes(), entry.meta, built
