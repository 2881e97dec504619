"""`ServeWorkers`: the replicas of the Serve application, seen by the web side as one Supervisor.

The web side talks to its worker through `worker.client.WorkerClient`, which needs a supervisor's
face, `worker.workers.WorkerSet`: `submit(msg)` (an event queue with `get()`, ending with Done or
Failed), `cancel(id)`, `health()`, `state`, `wait_for`, `start` and `stop`. `ServeWorkers` gives that face over Serve deployment
handles, so `WorkerClient(ServeWorkers(...))` serves the same page and OpenAI-compatible API as
`WorkerClient(Supervisor(...))`, and nothing in webui/ knows which it talks to.

- `submit` calls `WorkerReplica.submit` through a streaming handle; Serve's router picks the
  replica with fewer ongoing requests (of two it samples). The events come back as the replica's
  supervisor makes them. A replica that dies before the request delivered any output (audio,
  prompt features, a transcript) has its request sent again, to another replica, at most
  `max_resubmits` times; one that dies later answers `worker_crashed` (the replica's own
  supervisor resumes streams after a worker restart; across replicas a stream is not resumed).
  Serve's back-pressure (every replica's queue full) answers `overloaded` at once.
- `cancel` cancels the stream (Serve cancels the replica's generator, which cancels the request
  in the worker); the request's next event is then `Failed("cancelled")`.
- `health` is the last `cluster_report` of the HealthBoard (board.py), read every `refresh_s` by
  a thread of its own: `health()` never waits, so the API's async routes may call it.

No torch here, and no blocking call on an event loop: every wait is on a caller's own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from typing import Callable

from ray.exceptions import RayActorError, TaskCancelledError
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
)

from ray_serve.board import cluster_report
from worker.protocol import (
    CANCELLED,
    INTERNAL,
    OVERLOADED,
    WORKER_CRASHED,
    Chunk,
    Done,
    Failed,
    PreparePrompt,
    PromptPrepared,
    Synthesize,
    Transcribe,
    Transcript,
)
from worker.supervisor import READY, STARTING

log = logging.getLogger("ray_serve.workers")

REPLICA_GONE = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)
CANCELLED_ERRORS = (TaskCancelledError, asyncio.CancelledError, concurrent.futures.CancelledError)
OUTPUTS = (Chunk, PromptPrepared, Transcript)  # what a resubmission would deliver twice


class ServeWorkers:
    """replicas: the WorkerReplica deployment's handle; board: the HealthBoard's."""

    def __init__(self, replicas, board, refresh_s: float = 1.0, max_resubmits: int = 2):
        self._replicas = replicas.options(stream=True)
        self._board = board
        self._refresh_s, self._max_resubmits = refresh_s, max_resubmits
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._streams: dict[str, ReplicaStream] = {}
        self._report = cluster_report([])
        self._stopped = threading.Event()
        threading.Thread(target=self._refresh, name="serve-health", daemon=True).start()

    # ------------------------------------------------------------------ a supervisor's face (worker.workers.WorkerSet)

    def start(self) -> None:
        """Nothing to start: Serve runs the replicas, and the health thread runs from construction."""

    def submit(self, msg: Synthesize | PreparePrompt | Transcribe) -> "ReplicaStream":
        stream = ReplicaStream(self._replicas, msg, self._max_resubmits, on_end=self._forget)
        with self._lock:
            self._streams[msg.request_id] = stream
        return stream

    def cancel(self, request_id: str) -> None:
        with self._lock:
            stream = self._streams.pop(request_id, None)
        if stream is not None:
            stream.cancel()

    def health(self) -> dict:
        return self._report

    @property
    def state(self) -> str:
        return READY if self._report["status"] == "ok" else self._report["worker"].get("state", STARTING)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds, evaluated after each health refresh. False on timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading health (the replicas are Serve's to stop); returns at once."""
        self._stopped.set()

    # ------------------------------------------------------------------ inside

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._streams.pop(request_id, None)

    def _refresh(self) -> None:
        while True:
            try:
                report = cluster_report(self._board.reports.remote().result(timeout_s=10 * self._refresh_s))
            except Exception as e:  # the board is being replaced; say so until it answers again
                log.warning("could not read the replicas' health: %s", e)
                report = cluster_report([], note=f"the replicas' health could not be read ({type(e).__name__})")
            with self._changed:
                self._report = report
                self._changed.notify_all()
            if self._stopped.wait(self._refresh_s):
                return


class ReplicaStream:
    """One request's events from the replica serving it (`get()`, as a supervisor's event queue),
    ending with exactly one Done or Failed (see the module docstring)."""

    def __init__(self, replicas, msg, max_resubmits: int, on_end: Callable[[str], None]):
        self._replicas, self._msg, self._on_end = replicas, msg, on_end
        self._resubmits_left = max_resubmits
        self._delivered = False
        self._cancelled = False
        self._ended = False
        self._response = self._send()

    def _send(self):
        """The request sent to a replica: its response stream, or the Failed that answers it."""
        try:
            return self._replicas.submit.remote(self._msg)
        except Exception as e:  # the application is being deleted or redeployed
            log.warning("request %s could not be sent to a replica: %s", self._msg.request_id, e)
            return Failed(self._msg.request_id, INTERNAL, f"no replica could take it ({type(e).__name__}: {e})")

    def get(self):
        """The next event (blocks); after the last one, the same last answer is never repeated:
        callers stop at Done or Failed."""
        rid = self._msg.request_id
        while True:
            if isinstance(self._response, Failed):
                return self._end(self._response)
            try:
                event = next(self._response)
            except StopIteration:
                if self._cancelled:
                    return self._end(Failed(rid, CANCELLED, "cancelled"))
                return self._end(Failed(rid, INTERNAL, "the replica ended the request without an answer"))
            except CANCELLED_ERRORS:
                return self._end(Failed(rid, CANCELLED, "cancelled"))
            except BackPressureError:
                return self._end(Failed(rid, OVERLOADED, "every replica's queue is full"))
            except REPLICA_GONE as e:
                if self._cancelled:
                    return self._end(Failed(rid, CANCELLED, "cancelled"))
                if self._delivered or self._resubmits_left <= 0:
                    return self._end(Failed(rid, WORKER_CRASHED, f"the replica serving it died ({type(e).__name__})"))
                self._resubmits_left -= 1
                log.warning("request %s: its replica died (%s); sending it to another", rid, type(e).__name__)
                self._response = self._send()
                continue
            except Exception as e:
                log.exception("request %s: the replica's stream failed", rid)
                return self._end(Failed(rid, INTERNAL, f"the replica's stream failed ({type(e).__name__}: {e})"))
            if isinstance(event, OUTPUTS):
                self._delivered = True
            if isinstance(event, (Done, Failed)):
                return self._end(event)
            return event

    def cancel(self) -> None:
        """Cancel the stream without waiting (Serve's cancel may wait for the request's replica
        to be chosen, and this can be called on an event loop)."""
        self._cancelled = True
        if not isinstance(self._response, Failed):
            threading.Thread(target=self._response.cancel, name="serve-cancel", daemon=True).start()

    def _end(self, event: Done | Failed) -> Done | Failed:
        if not self._ended:
            self._ended = True
            self._on_end(self._msg.request_id)
        return event
