"""The backend each module was given at the last start, remembered per machine and model.

`auto` picks a backend per module partly by timing (ONNX Runtime is kept only where it beats
PyTorch), and timings vary from one start to the next. A worker restarted after a crash must run
the same backends as the one before it: a different backend can change sampled tokens, and a
resumed stream would be spliced from two renditions. So the choice is written next to the engine
cache under a key of everything it depends on - the module's model files, the GPU, the versions
of torch, ONNX Runtime and TensorRT, and the requested backend and precision - and the next start
with the same key tries that backend first, without timing it again. A remembered backend that no
longer sets up is simply not used: the choice is made anew and replaces the record. Records are
written atomically (a kill leaves the old record whole).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from .artifacts import gpu_identity
from .cache import ArtifactCache, atomic_write, key_of
from .ort_backend import ort_version

log = logging.getLogger(__name__)

REFERENCE_CHOICE = "reference"  # the model's own module
FOLDER = "choices"


def _tensorrt_version() -> str:
    from .runner import BackendUnavailable
    from .trt_backend import find_tensorrt

    try:
        pkg = find_tensorrt()
    except BackendUnavailable:
        return "none"
    return f"{pkg.name} {pkg.version}"


class ChoiceBook:
    def __init__(self, cache: ArtifactCache):
        self.folder = Path(cache.root) / FOLDER

    def key(self, module: str, sources: dict[str, str], device: torch.device, backend: str,
            precision: str | None) -> str:
        return key_of({"module": module, "sources": sources, **gpu_identity(device),
                       "torch": torch.__version__.split("+")[0], "onnxruntime": ort_version(),
                       "tensorrt": _tensorrt_version(), "backend": backend, "precision": precision or "auto"})

    def recall(self, key: str) -> str | None:
        """The backend candidate ("tensorrt", "torch-cuda", "onnxruntime", "torch-cpu" or
        "reference") chosen at the last start with this key, or None."""
        path = self.folder / f"{key}.json"
        try:
            return json.loads(path.read_text())["choice"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring an unreadable backend choice %s: %s", path, e)
            return None

    def remember(self, key: str, module: str, choice: str, precision: str) -> None:
        record = {"module": module, "choice": choice, "precision": precision}
        try:
            atomic_write(self.folder / f"{key}.json", lambda f: f.write(json.dumps(record).encode()))
        except OSError as e:  # a read-only cache: the next start chooses again
            log.warning("could not remember the backend of %s: %s", module, e)
