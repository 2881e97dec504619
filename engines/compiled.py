"""torch.compile for the large shapes of a module, with the compiled kernels kept on disk.

A DiT call on many rows is bound by arithmetic and by the memory traffic of its elementwise
operations (adaptive LayerNorm, gates, residuals, GELU); Inductor fuses those and is about 1.7x
faster there (bench/dit_variants.py on an H200). Small calls stay on CUDA graphs of the eager
module (launch-bound; a graph replays them fastest).

What Inductor produces (generated Triton kernels, autotuning results, FX graphs) goes to a folder
of the engine cache keyed by the GPU and the versions of torch and Triton, so only the first start
on a machine compiles (about 40 s for the DiT); later starts load from there. The runner is warmed
at start-up on a typical large shape and checked against the eager runner there.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .artifacts import gpu_identity
from .cache import key_of
from .torch_backend import TorchRunner

log = logging.getLogger(__name__)

INDUCTOR_ENV = "TORCHINDUCTOR_CACHE_DIR"
TRITON_ENV = "TRITON_CACHE_DIR"


def inductor_cache_dir(cache_root: Path, device: torch.device) -> Path:
    """The engine cache's folder for Inductor on this GPU and these versions."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    key = key_of({**gpu_identity(device), "torch": torch.__version__, "triton": triton_version})
    return Path(cache_root) / "inductor" / key[:20]


def _use_folder(env: str, folder: Path) -> Path:
    """Point the compiler that reads `env` at `folder` (created), unless the user chose one already."""
    folder = Path(os.environ.get(env) or folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[env] = str(folder)
    return folder


def use_inductor_cache(cache_root: Path, device: torch.device) -> Path:
    """Point Inductor at the engine cache (unless the user chose a folder already)."""
    return _use_folder(INDUCTOR_ENV, inductor_cache_dir(cache_root, device))


def use_triton_cache(cache_root: Path) -> Path:
    """Keep Triton's compiled kernels (the fused decode step's) in the engine cache, so only a
    machine's first start compiles them (unless the user chose a folder already). Triton's own
    keys hold the GPU, the kernel source and the versions."""
    return _use_folder(TRITON_ENV, Path(cache_root) / "triton")


class CompiledRunner(TorchRunner):
    """A TorchRunner whose wrapper runs through torch.compile (dynamic shapes: one compilation
    serves every size). Once `sealed` (after the start-up warm-up), a call whose shapes the
    compiled code does not cover runs eager instead of compiling again: a compilation takes tens
    of seconds, and serving never waits for one."""

    def __init__(self, eager: TorchRunner):
        self.device, self.dtype, self.info = eager.device, eager.dtype, eager.info
        self.wrapper = eager.wrapper
        self.compiled = torch.compile(eager.wrapper, dynamic=True)
        self.info = type(eager.info)(**{**eager.info.__dict__, "detail": "torch.compile"})
        self.sealed = False
        self.eager_calls = 0  # sealed calls the compiled code did not cover

    @torch.inference_mode()
    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # The compiled code is guarded on each input's dispatch keys: tensors made under inference
        # mode (the flow's) and outside it (the start-up examples) would each need their own
        # compilation. Every call hands it inference tensors.
        args = tuple(a if a.is_inference() else a.clone() for a in args)
        if not self.sealed:
            return tuple(self.compiled(*args))
        try:
            with torch.compiler.set_stance("fail_on_recompile"):
                return tuple(self.compiled(*args))
        except Exception as e:  # noqa: BLE001 - sorted below: only a refused recompilation runs eager
            if "recompil" not in str(e).lower():
                raise
            self.eager_calls += 1
            if self.eager_calls in (1, 10, 100, 1000):
                log.warning("engines: %s call %d not covered by the compiled code, run eager: %s",
                            self.info.module, self.eager_calls, " ".join(str(e).split())[:600])
            return tuple(self.wrapper(*args))
