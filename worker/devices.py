"""Which devices the workers of one app run on: the `--gpus` and `--workers` flags as devices.

The app process never imports torch, so it counts GPUs the way CUDA will number them: the
entries of `CUDA_VISIBLE_DEVICES` when it is set, else the GPUs NVML (nvidia-ml-py) sees. A
machine without an NVIDIA driver shows none; asking for GPUs there is a `ValueError` with a
sentence saying so, which app.py turns into a usage error.
"""

from __future__ import annotations

import os


def visible_gpus() -> tuple[int, str]:
    """(how many GPUs CUDA will show a worker, why none when 0)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e for e in visible.split(",") if e.strip()]
        if not entries or entries[0].strip().startswith("-"):  # CUDA stops at the first invalid index
            return 0, f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
        return len(entries), ""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...: no usable NVIDIA driver
        return 0, f"no NVIDIA driver answers ({exc})"
    return count, "" if count else "the NVIDIA driver lists no GPU"


def on_gpu(device: str) -> bool:
    """Whether a worker on `device` runs on a GPU ("auto": when CUDA will show it one)."""
    return device.startswith("cuda") or (device == "auto" and visible_gpus()[0] > 0)


def gpu_devices(spec: str, visible: int, why_none: str = "") -> list[str]:
    """The devices of `--gpus SPEC`: "all" (every visible GPU), "0,2" (these indices) or "N" (the
    first N), as "cuda:i", for a machine showing `visible` GPUs."""
    spec = spec.strip()
    if visible == 0:
        raise ValueError(f"this machine shows no GPU to run workers on ({why_none or 'none found'}); "
                         "use --workers N for CPU workers")
    if spec == "all":
        return [f"cuda:{i}" for i in range(visible)]
    try:
        if "," in spec:
            indices = [int(part) for part in spec.split(",") if part.strip()]
        else:
            count = int(spec)
            if count < 1:
                raise ValueError(f"{spec!r} asks for no GPU")
            indices = list(range(count))
    except ValueError as exc:
        raise ValueError(f"{spec!r} is not 'all', a count (2) or a list of GPU indices (0,2): {exc}") from None
    wrong = [i for i in indices if not 0 <= i < visible]
    if wrong or not indices:
        raise ValueError(f"{spec!r}: this machine shows {visible} GPU{'s' if visible != 1 else ''} "
                         f"(indices 0 to {visible - 1})")
    if len(set(indices)) != len(indices):
        raise ValueError(f"{spec!r} names a GPU twice")
    return [f"cuda:{i}" for i in indices]


def worker_devices(gpus: str | None, workers: int | None, device: str) -> list[str]:
    """One device per worker: `--gpus SPEC` (one worker per GPU), else `--workers N` workers on
    `device` (N CPU workers on a machine without a GPU), else one worker on `device`."""
    if gpus is not None:
        if device not in ("auto", "cuda"):
            raise ValueError(f"--gpus gives each worker its GPU; it does not go with --device {device}")
        return gpu_devices(gpus, *visible_gpus())
    if workers is not None and workers < 1:
        raise ValueError(f"--workers {workers}: at least one worker")
    return [device] * (workers or 1)


def worker_name(index: int, devices: list[str]) -> str:
    """The process name of worker `index`: "cosyfast-worker" alone, "cosyfast-worker-gpu2" on GPU 2,
    "cosyfast-worker-1" otherwise."""
    if len(devices) == 1:
        return "cosyfast-worker"
    device = devices[index]
    return f"cosyfast-worker-gpu{device.split(':')[1]}" if device.startswith("cuda:") else f"cosyfast-worker-{index}"
