"""Streaming playback transport: audio chunks from a generation handler to the browser player.

Gradio's own streaming audio output re-encodes chunks to AAC/HLS and measured about 0.7 s between
the first chunk and the first sound in Chromium (first chunk at +0.31 s after the click, `playing`
at +1.0 s), more than the 0.5 s this app allows. So the page plays the stream itself (player.js,
Web Audio) and pulls the audio with a long poll: the player component's server function
`read(stream_id, viewer, start)` answers as soon as chunks past `start` exist (or the stream ends),
with int16 PCM in base64. It runs on the event loop (Gradio's /component_server route, behind the
same login as the page) and waits on an asyncio.Event that the pushing handler thread sets.

The browser makes up the stream id (128 random bits in hex) when Generate is pressed and passes
it to the handler as an input, so the first poll may arrive before or after the handler opens the
stream. A stream belongs to the viewer whose generation opened it (`open(stream_id, viewer)`, the
viewer being the browser's owner id, see access.py): only that viewer's polls read it. A poll for
an id that is unknown, not open yet or someone else's waits for an `open` and answers empty when
its time is up; polls never create, claim or evict a stream. Bounds: at most `max_streams` streams
and `per_viewer` per viewer; a finished stream is dropped once read to the end, or `unread_s`
after it ended; when the hub is full, finished streams go first, and a live one is never evicted:
the new stream is refused instead (that generation's audio then plays when it is done).
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time

import numpy as np

STREAM_ID = re.compile(r"[0-9a-f]{32}")  # what player.js makes: 16 random bytes in hex


class _Stream:
    def __init__(self, viewer: str, now: float):
        self.viewer = viewer
        self.lock = threading.Lock()
        self.parts: list[bytes] = []  # int16 little-endian PCM
        self.sample_rate = 0
        self.closed = False
        self.created = now
        self.ended = float("inf")  # when it was closed
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def wake(self) -> None:
        for loop, event in self.waiters:
            loop.call_soon_threadsafe(event.set)


class StreamWriter:
    """The generation handler's end of one stream (from StreamHub.open)."""

    def __init__(self, hub: "StreamHub", stream: _Stream):
        self._hub, self._stream = hub, stream

    def push(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Append float32 samples in [-1, 1] (N,)."""
        if len(pcm) == 0:
            return
        data = np.rint(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        stream = self._stream
        with stream.lock:
            if stream.closed:
                return
            stream.sample_rate = stream.sample_rate or int(sample_rate)
            stream.parts.append(data)
            stream.wake()

    def close(self) -> None:
        """No more audio; the reader gets what is left, then the end."""
        stream = self._stream
        with stream.lock:
            if not stream.closed:
                stream.closed, stream.ended = True, self._hub.clock()
            stream.wake()

    def __enter__(self) -> "StreamWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class StreamHub:
    """Open streams by id. Thread-safe on the pushing side, asyncio on the reading side."""

    def __init__(self, max_streams: int = 256, per_viewer: int = 4, unread_s: float = 120.0,
                 poll_s: float = 10.0, max_waiting: int = 1024, clock=time.monotonic):
        self.max_streams, self.per_viewer, self.unread_s = max_streams, per_viewer, unread_s
        self.poll_s, self.max_waiting, self.clock = poll_s, max_waiting, clock
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._opened: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []  # polls waiting for an open

    @staticmethod
    def valid_id(stream_id) -> bool:
        return isinstance(stream_id, str) and STREAM_ID.fullmatch(stream_id) is not None

    def open(self, stream_id: str, viewer: str) -> StreamWriter | None:
        """A new stream for `viewer`'s generation; None for a malformed or taken id, no viewer,
        or a full hub (live streams are never evicted)."""
        if not self.valid_id(stream_id) or not viewer:
            return None
        with self._lock:
            now = self.clock()
            self._drop_finished(now)
            if stream_id in self._streams:
                return None
            if not self._room(lambda s: s.viewer == viewer, self.per_viewer) or not self._room(None, self.max_streams):
                return None
            stream = self._streams[stream_id] = _Stream(viewer, now)
            waiting, self._opened = self._opened, []
        for loop, event in waiting:
            loop.call_soon_threadsafe(event.set)
        return StreamWriter(self, stream)

    def _drop_finished(self, now: float) -> None:
        for key in [k for k, s in self._streams.items() if now - s.ended > self.unread_s]:
            del self._streams[key]

    def _room(self, which, limit: int) -> bool:
        """Whether another stream fits under `limit` among the streams `which` selects (None:
        all), dropping the oldest finished ones of them to make room."""
        chosen = [k for k, s in self._streams.items() if which is None or which(s)]
        finished = sorted((k for k in chosen if self._streams[k].closed), key=lambda k: self._streams[k].ended)
        while len(chosen) >= limit and finished:
            key = finished.pop(0)
            chosen.remove(key)
            del self._streams[key]
        return len(chosen) < limit

    def _find(self, stream_id: str, viewer: str) -> _Stream | None:
        with self._lock:
            stream = self._streams.get(stream_id)
        return stream if stream is not None and stream.viewer == viewer else None

    async def read(self, stream_id: str, viewer: str, start: int = 0) -> dict:
        """Chunks from index `start` on, waiting up to poll_s for the first of them.

        Returns {"chunks": [base64 int16 PCM, ...], "next": index to ask for next,
        "sample_rate": Hz (0 before the first chunk), "done": no more will come}.
        """
        nothing = {"chunks": [], "next": start, "sample_rate": 0, "done": False}
        if not self.valid_id(stream_id):
            return {**nothing, "done": True}
        deadline = time.monotonic() + self.poll_s
        stream = self._find(stream_id, viewer)
        while stream is None:  # not open yet (or not this viewer's): wait for an open
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await self._wait_for_open(remaining):
                return nothing
            stream = self._find(stream_id, viewer)
        new, closed, rate = await self._wait_for_chunks(stream, start, deadline)
        if closed:  # nothing is appended after close, so `new` holds the rest
            with self._lock:
                if self._streams.get(stream_id) is stream:
                    del self._streams[stream_id]
        return {"chunks": [base64.b64encode(part).decode("ascii") for part in new], "next": start + len(new),
                "sample_rate": rate, "done": closed}

    async def _wait_for_open(self, timeout: float) -> bool:
        """Until some stream opens or `timeout` passes (False: timed out, or too many polls
        are waiting already)."""
        event = asyncio.Event()
        with self._lock:
            if len(self._opened) >= self.max_waiting:
                return False
            self._opened.append((asyncio.get_running_loop(), event))
        try:
            await asyncio.wait_for(event.wait(), timeout=timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._lock:
                self._opened = [w for w in self._opened if w[1] is not event]

    async def _wait_for_chunks(self, stream: _Stream, start: int, deadline: float) -> tuple[list[bytes], bool, int]:
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with stream.lock:
            stream.waiters.append(waiter)
        try:
            while True:
                event.clear()
                with stream.lock:
                    new, closed, rate = stream.parts[start:], stream.closed, stream.sample_rate
                remaining = deadline - time.monotonic()
                if new or closed or remaining <= 0:
                    return new, closed, rate
                try:
                    await asyncio.wait_for(event.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            with stream.lock:
                stream.waiters.remove(waiter)

    def __len__(self) -> int:
        return len(self._streams)
