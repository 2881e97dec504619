"""What the UI holds: submit a request, read its events, cancel it, ask for health.

`WorkerClient.submit(msg)` admits the request at once (a full queue answers `overloaded` right
away) and returns an `EventStream`: an iterator of `Progress`, `Chunk`, `PromptPrepared`,
`Transcript` and finally one `Done` or `Failed`, after which it ends. While the worker restarts, a request sees
`Progress(stage="recovering")`. Closing the stream (or dropping it, as a cancelled Gradio
handler does) before the end cancels the request. No torch here.

It talks to a `WorkerSet` (worker/workers.py, the declared face: `start`, `stop`, `submit`,
`cancel`, `health`, `state`, `wait_for`): one `Supervisor`, a `Router` (worker/router.py) over
several, or `ray_serve.workers.ServeWorkers`.
"""

from __future__ import annotations

import uuid

import numpy as np

from worker.protocol import (
    Done,
    Failed,
    PreparePrompt,
    PromptFeatures,
    PromptPrepared,
    Synthesize,
    Transcribe,
    Transcript,
)
from worker.supervisor import BOOT_FAILED, READY, STOPPED
from worker.workers import WorkerSet


class EventStream:
    """Events of one request, ending after its Done or Failed."""

    def __init__(self, client: "WorkerClient", request_id: str, events):
        self.request_id = request_id
        self._client = client
        self._events = events
        self._ended = False

    def __iter__(self) -> "EventStream":
        return self

    def __next__(self):
        if self._ended:
            raise StopIteration
        event = self._events.get()
        if isinstance(event, (Done, Failed)):
            self._ended = True
        return event

    def close(self) -> None:
        """Cancel the request unless it has ended."""
        if not self._ended:
            self._ended = True
            self._client.cancel(self.request_id)

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()


class WorkerClient:
    """supervisor: a `WorkerSet` (worker/workers.py): a `Supervisor`, a `Router` over several, or
    a Ray Serve application's `ServeWorkers`."""

    def __init__(self, supervisor: WorkerSet):
        self.supervisor = supervisor

    def submit(self, msg: Synthesize | PreparePrompt | Transcribe) -> EventStream:
        """Send a request (a missing `request_id` is filled in) and return its event stream."""
        if not msg.request_id:
            msg.request_id = uuid.uuid4().hex
        return EventStream(self, msg.request_id, self.supervisor.submit(msg))

    def cancel(self, request_id: str) -> None:
        self.supervisor.cancel(request_id)

    def health(self) -> dict:
        return self.supervisor.health()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until the worker is ready; False on timeout, boot failure or stop."""
        self.supervisor.wait_for(lambda: self.supervisor.state in (READY, BOOT_FAILED, STOPPED), timeout)
        return self.supervisor.state == READY

    def prepare_prompt(self, audio: np.ndarray, sample_rate: int, text: str = "") -> PromptFeatures | Failed:
        """Prepare a voice prompt; returns its features, or the `Failed` that answered it."""
        prepared = None
        for event in self.submit(PreparePrompt("", np.asarray(audio, dtype=np.float32), sample_rate, text)):
            if isinstance(event, PromptPrepared):
                prepared = event.prompt
            elif isinstance(event, Failed):
                return event
        return prepared

    def transcribe(self, audio: np.ndarray, sample_rate: int, language: str = "auto") -> Transcript | Failed:
        """Transcribe prompt audio; returns the `Transcript`, or the `Failed` that answered it."""
        transcript = None
        for event in self.submit(Transcribe("", np.asarray(audio, dtype=np.float32), sample_rate, language)):
            if isinstance(event, Transcript):
                transcript = event
            elif isinstance(event, Failed):
                return event
        return transcript
