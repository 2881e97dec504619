"""Loading a model directory with its backends: the parts, the engines built for them, the model.

    model = engines.load_model(model_dir, device="cuda", dtype=torch.bfloat16, backend="auto")

`backend="torch"` gives the plain PyTorch model (no engine is built or tried).
"""

from __future__ import annotations

from pathlib import Path

import torch

from cosyvoice3.backends import Backends
from cosyvoice3.modes import Limits
from cosyvoice3.pipeline import CosyVoice3, load_parts

from .selection import EngineConfig, ProgressFn, build_backends
from .torch_backend import PRECISIONS, auto_precision


def model_dtype(name: str, device: str | torch.device) -> torch.dtype:
    """The model's weight dtype for a `--dtype` value: "auto" is the device's fast precision
    (bfloat16 on GPUs that have it, float16 on older ones, float32 on the CPU)."""
    if name == "auto":
        return PRECISIONS[auto_precision(torch.device(device))]
    return getattr(torch, name)


def load_model(model_dir: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               backend: str = "auto", progress: ProgressFn | None = None, limits: Limits | None = None,
               config: EngineConfig | None = None, llm_kernels: str = EngineConfig.llm_kernels) -> CosyVoice3:
    parts = load_parts(model_dir, device, dtype, progress)
    if backend == "torch" and config is None:
        backends = Backends()
    else:
        backends = build_backends(parts, config or EngineConfig(backend=backend, llm_kernels=llm_kernels), progress)
    return CosyVoice3(parts, backends, limits)
