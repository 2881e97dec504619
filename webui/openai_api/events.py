"""From the synthesis routine's blocking world to the API's asyncio one, and the request's bounds.

`RunEvents(run)`: a thread drains a `SynthesisRun`'s events into an asyncio queue (one thread a
request, ended by the run's last event), so no event-loop thread ever blocks on the worker;
`pcm()` gives the audio chunks and raises `APIError` for a `Failed`. `close()` cancels the run
(the worker drops the request at once). `until_disconnect(request, awaitable)` waits for
something unless the client goes away first. `read_body(request, limit)` reads at most `limit`
bytes of a request body (413 past them) before anything parses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator

import numpy as np
from fastapi import Request

from worker import protocol as P

from .. import messages as M
from ..synthesis import SynthesisError, SynthesisRun
from .errors import APIError

_END = object()


class ClientGone(Exception):
    """The client closed the connection before the answer was ready."""


class RunEvents:
    """The events of one run, on the event loop that created this object."""

    def __init__(self, run: SynthesisRun, lang: str = M.EN):
        self.run, self.lang = run, lang
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._pending = None  # a chunk taken by first_chunk, given back by pcm
        threading.Thread(target=self._drain, name=f"api-events-{run.request_id[:8]}", daemon=True).start()

    def _drain(self) -> None:
        try:
            for event in self.run:
                self._put(event)
        finally:
            self._put(_END)

    def _put(self, item) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server is stopping
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def next(self):
        """The next event; None after the last."""
        item = await self._queue.get()
        return None if item is _END else item

    async def first_chunk(self) -> P.Chunk:
        """Wait for the first audio; APIError if the run fails first."""
        while True:
            event = await self.next()
            if isinstance(event, P.Chunk):
                self._pending = event
                return event
            self._raise_if_failed(event)

    async def pcm(self) -> AsyncIterator[np.ndarray]:
        """The audio chunks (the one `first_chunk` took, first); APIError for a `Failed`."""
        if self._pending is not None:
            yield np.asarray(self._pending.pcm, dtype=np.float32)
            self._pending = None
        while True:
            event = await self.next()
            if isinstance(event, P.Chunk):
                yield np.asarray(event.pcm, dtype=np.float32)
            elif isinstance(event, P.Done):
                return
            self._raise_if_failed(event)

    def _raise_if_failed(self, event) -> None:
        if isinstance(event, P.Failed):
            raise APIError.of(SynthesisError.of(event, self.lang))
        if event is None:  # ended without Done or Failed: cannot happen, but never hang on it
            raise APIError(500, M.error_sentence(P.INTERNAL, self.lang), P.INTERNAL)

    def close(self) -> None:
        """Cancel the run unless it has ended."""
        self.run.close()


async def until_disconnect(request: Request, awaitable):
    """The result of `awaitable`, or ClientGone if the client disconnects first (the body must
    have been read already: what `receive` gives then is the disconnect)."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientGone()
    return task.result()


async def read_body(request: Request, limit: int, what: str = "The request body") -> bytes:
    """The whole body, or APIError 413 as soon as it passes `limit` bytes (a Content-Length
    over the limit is refused before anything is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise APIError(413, f"{what} has {declared} bytes; the limit is {limit}.", P.TOO_LONG)
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise APIError(413, f"{what} is larger than the limit of {limit} bytes.", P.TOO_LONG)
    return bytes(body)
