"""`WorkerSet`: the face of the workers that the web side talks to, declared once.

`worker.client.WorkerClient` takes a `WorkerSet`; three things have this face, and nothing in
webui/ knows which one it holds:

- `worker.supervisor.Supervisor`: one GPU worker process, kept by the app process;
- `worker.router.Router`: several supervisors (one per GPU), the least-loaded ready one chosen;
- `ray_serve.workers.ServeWorkers`: the replicas of a Ray Serve application.

The protocol is `runtime_checkable`, so `isinstance(x, WorkerSet)` checks that the methods are
there (tests/test_worker_set.py); the signatures are the documentation. No torch here.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable


@runtime_checkable
class WorkerSet(Protocol):
    def start(self) -> None:
        """Start the worker(s); returns at once (`wait_for` a state to know when they are ready)."""

    def stop(self, timeout: float = 5.0) -> None:
        """Answer every open request and stop, within about `timeout` seconds."""

    def submit(self, msg):
        """Admit a request (`Synthesize`, `PreparePrompt`, `Transcribe` of worker.protocol, its
        `request_id` set) -> a queue of its events (`get()`), ending with one `Done` or `Failed`;
        a refusal (`overloaded`, ...) is that `Failed`, at once."""

    def cancel(self, request_id: str) -> None:
        """Answer the request with `Failed("cancelled")` and stop its work; unknown ids are ignored."""

    def health(self) -> dict:
        """The health report (the `/health` shape); never waits on the workers."""

    @property
    def state(self) -> str:
        """One of worker.supervisor's states (READY, LOADING, BOOT_FAILED, STOPPED, ...)."""

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds, evaluated each time something changed; False on timeout."""
