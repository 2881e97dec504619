"""Test-only fault injection inside the worker process.

Off unless the worker was started with `WorkerConfig.faults=True` or the environment variable
`COSYFAST_FAULTS=1`; a request's `fault` field is ignored (with a warning) otherwise. A fault
spec is a dict:

    {"kind": "crash" | "hang" | "stall" | "oom" | "cuda_error" | "leak",
     "step": 3,          # fire before the request's step 3 of this attempt (0-based)
     "attempts": [0],    # fire only on these attempts (default [0]), so a retry does not loop
     "mb": 256}          # leak only: megabytes to allocate and keep

kinds:
    crash       SIGKILL the worker itself.
    hang        stop the heartbeats and block the model loop for good.
    stall       block the model loop for good; heartbeats go on with a frozen step counter.
    oom         raise torch.cuda.OutOfMemoryError, as a failed CUDA allocation does.
    cuda_error  raise the RuntimeError that an illegal memory access gives.
    leak        allocate `mb` megabytes, touch them and keep them; the step runs normally.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import numpy as np

log = logging.getLogger(__name__)

KINDS = ("crash", "hang", "stall", "oom", "cuda_error", "leak")
ENV_FLAG = "COSYFAST_FAULTS"


def enabled_by_env() -> bool:
    return os.environ.get(ENV_FLAG, "") == "1"


class FaultInjector:
    """Fires the fault of a request at its chosen step. `heartbeat_paused` is read by the
    worker's heartbeat thread."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.heartbeat_paused = threading.Event()
        self._leaked: list[np.ndarray] = []
        self._warned = False

    def before_step(self, request, step: int) -> None:
        """Called by the scheduler before `step` (0-based, counted in this attempt) of `request`
        (a Synthesize, PreparePrompt or Transcribe message)."""
        spec = request.fault
        if not spec:
            return
        if not self.enabled:
            if not self._warned:
                log.warning("request %s carries a fault spec but fault injection is off; ignored",
                            request.request_id)
                self._warned = True
            return
        if step != spec.get("step", 0) or request.attempt not in spec.get("attempts", [0]):
            return
        kind = spec["kind"]
        log.warning("fault injection: %s at step %d of %s (attempt %d)",
                    kind, step, request.request_id, request.attempt)
        if kind == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "hang":
            self.heartbeat_paused.set()
            threading.Event().wait()
        elif kind == "stall":
            threading.Event().wait()
        elif kind == "oom":
            import torch

            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        elif kind == "cuda_error":
            raise RuntimeError("CUDA error: an illegal memory access was encountered (injected)")
        elif kind == "leak":
            block = np.ones(int(spec.get("mb", 256)) << 20, dtype=np.uint8)  # ones: pages are touched
            self._leaked.append(block)
        else:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
