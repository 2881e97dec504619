"""Why a worker process is restarted: the restart causes, the one place they are named.

Each cause says which protocol error code a request gets when the last attempt it was allowed
dies of it, the words the supervisor uses for it in messages and logs ("the model worker ..."),
and whether it is planned (the worker is healthy; it is replaced once idle, with no backoff).
Health's `worker.last_restart_cause` and `worker.restart_causes` carry the names; the web UI keys
its labels on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.protocol import OOM, WORKER_CRASHED, WORKER_HUNG

CRASHED = "crashed"  # the process exited (or was killed) without being asked
HUNG = "hung"  # no heartbeat for hang_timeout_s
STALLED = "stalled"  # heartbeats, but a busy worker's step counter did not move for stall_timeout_s
OUT_OF_MEMORY = "oom"  # the worker said Poisoned: a second CUDA out-of-memory in a row
CUDA_ERROR = "cuda_error"  # the worker said Poisoned: a CUDA error its context does not survive
MEMORY = "memory"  # RSS or GPU memory over the configured ceiling (planned)
RECYCLED = "recycled"  # served its request budget (planned)
BOOT_CRASHED = "boot_crashed"  # exited while booting, without saying BootFailed


@dataclass(frozen=True)
class Cause:
    name: str
    code: str  # the error code of a request whose last attempt dies of this cause
    words: str  # "the model worker <words>"
    planned: bool = False


CAUSES = {c.name: c for c in (
    Cause(CRASHED, WORKER_CRASHED, "crashed"),
    Cause(HUNG, WORKER_HUNG, "stopped responding"),
    Cause(STALLED, WORKER_HUNG, "stopped making progress"),
    Cause(OUT_OF_MEMORY, OOM, "ran out of GPU memory"),
    Cause(CUDA_ERROR, WORKER_CRASHED, "hit a CUDA error"),
    Cause(MEMORY, WORKER_CRASHED, "used too much memory", planned=True),
    Cause(RECYCLED, WORKER_CRASHED, "was recycled", planned=True),
    Cause(BOOT_CRASHED, WORKER_CRASHED, "crashed while starting"),
)}


def cause(name: str) -> Cause:
    """The cause called `name`; an unknown name (a newer worker's Poisoned) reads as a crash."""
    return CAUSES.get(name) or Cause(name, WORKER_CRASHED, name)
