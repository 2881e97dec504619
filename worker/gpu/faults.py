"""Test-only fault injection inside the worker process.

Off unless the worker was started with `WorkerConfig.faults=True` or the environment variable
`COSYFAST_FAULTS=1`; a request's `fault` field is ignored (with a warning) otherwise. A fault
spec is a dict:

    {"kind": "crash" | "hang" | "stall" | "freeze_in_send" | "oom" | "cuda_error" | "leak",
     "step": 3,          # fire before the request's step 3 of this attempt (0-based)
     "attempts": [0],    # fire only on these attempts (default [0]), so a retry does not loop
     "mb": 256}          # leak only: megabytes to allocate and keep

kinds:
    crash       SIGKILL the worker itself.
    hang        stop the heartbeats and block the model loop for good.
    stall       block the model loop for good; heartbeats go on with a frozen step counter.
    freeze_in_send
                the next audio chunk the worker sends is written up to its length header and half
                its payload, then the whole process stops itself with SIGSTOP (every thread, the
                heartbeat's too): the app's end of the pipe holds half a message. On SIGCONT the
                rest is written, as an interrupted send would finish.
    oom         raise torch.cuda.OutOfMemoryError, as a failed CUDA allocation does.
    cuda_error  raise the RuntimeError that an illegal memory access gives.
    leak        allocate `mb` megabytes, touch them and keep them; the step runs normally.
"""

from __future__ import annotations

import logging
import os
import signal
import struct
import threading
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler

import numpy as np

log = logging.getLogger("worker.faults")

KINDS = ("crash", "hang", "stall", "freeze_in_send", "oom", "cuda_error", "leak")
ENV_FLAG = "COSYFAST_FAULTS"


def enabled_by_env() -> bool:
    return os.environ.get(ENV_FLAG, "") == "1"


class FaultInjector:
    """Fires the fault of a request at its chosen step. `heartbeat_paused` is read by the
    worker's heartbeat thread, `send` is the worker's real send path (see `freeze_in_send`)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.heartbeat_paused = threading.Event()
        self.freeze_next_chunk = threading.Event()
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
        elif kind == "freeze_in_send":
            self.freeze_next_chunk.set()
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

    def send(self, conn: Connection, msg) -> None:
        """Send `msg` as `Connection.send` does, unless a `freeze_in_send` fault is armed and
        `msg` is audio: then write the same frame (4-byte length, pickled payload) by hand and
        stop the process with SIGSTOP after the header and half the payload."""
        if not (self.freeze_next_chunk.is_set() and type(msg).__name__ == "Chunk"):
            conn.send(msg)
            return
        self.freeze_next_chunk.clear()
        payload = bytes(ForkingPickler.dumps(msg))
        half = len(payload) // 2
        _write_all(conn.fileno(), struct.pack("!i", len(payload)) + payload[:half])
        log.warning("fault injection: stopping the worker (SIGSTOP) inside the send of chunk %d of %s "
                    "(%d of %d bytes written)", msg.seq, msg.request_id, half, len(payload))
        os.kill(os.getpid(), signal.SIGSTOP)
        _write_all(conn.fileno(), payload[half:])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
