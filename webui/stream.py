"""Streaming playback transport: audio chunks from a generation handler to the browser player.

Gradio's own streaming audio output re-encodes chunks to AAC/HLS and measured about 0.7 s between
the first chunk and the first sound in Chromium (first chunk at +0.31 s after the click, `playing`
at +1.0 s), more than the 0.5 s this app allows. So the page plays the stream itself (player.js,
Web Audio) and pulls the audio with a long poll: the player component's server function
`read(stream_id, start)` answers as soon as chunks past `start` exist (or the stream ends), with
int16 PCM in base64. It runs on the event loop (Gradio's /component_server route, behind the same
login as the page) and waits on an asyncio.Event that the pushing handler thread sets.

The browser makes up the stream id when Generate is pressed and passes it to the handler as an
input, so the first poll may arrive before or after the handler opens the stream. Streams live at
most `ttl_s` and are dropped once read to the end.
"""

from __future__ import annotations

import asyncio
import base64
import re
import threading
import time

import numpy as np

_STREAM_ID = re.compile(r"[A-Za-z0-9-]{8,64}")


class _Stream:
    def __init__(self):
        self.lock = threading.Lock()
        self.parts: list[bytes] = []  # int16 little-endian PCM
        self.sample_rate = 0
        self.closed = False
        self.created = time.monotonic()
        self.waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def wake(self) -> None:
        for loop, event in self.waiters:
            loop.call_soon_threadsafe(event.set)


class StreamHub:
    """Open streams by id. Thread-safe on the pushing side, asyncio on the reading side."""

    def __init__(self, ttl_s: float = 600.0, max_streams: int = 256, poll_s: float = 10.0):
        self.ttl_s, self.max_streams, self.poll_s = ttl_s, max_streams, poll_s
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()

    @staticmethod
    def valid_id(stream_id: str) -> bool:
        return isinstance(stream_id, str) and _STREAM_ID.fullmatch(stream_id) is not None

    def _get(self, stream_id: str) -> _Stream:
        with self._lock:
            now = time.monotonic()
            for key in [k for k, s in self._streams.items() if now - s.created > self.ttl_s]:
                del self._streams[key]
            stream = self._streams.get(stream_id)
            if stream is None:
                if len(self._streams) >= self.max_streams:
                    del self._streams[min(self._streams, key=lambda k: self._streams[k].created)]
                stream = self._streams[stream_id] = _Stream()
            return stream

    def push(self, stream_id: str, pcm: np.ndarray, sample_rate: int) -> None:
        """Append float32 samples in [-1, 1] (N,) to the stream (ignored for an invalid id)."""
        if not self.valid_id(stream_id) or len(pcm) == 0:
            return
        data = np.rint(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        stream = self._get(stream_id)
        with stream.lock:
            if stream.closed:
                return
            stream.sample_rate = stream.sample_rate or int(sample_rate)
            stream.parts.append(data)
            stream.wake()

    def close(self, stream_id: str) -> None:
        """No more audio for this stream; a reader gets what is left, then the end."""
        if not self.valid_id(stream_id):
            return
        stream = self._get(stream_id)
        with stream.lock:
            stream.closed = True
            stream.wake()

    async def read(self, stream_id: str, start: int = 0) -> dict:
        """Chunks from index `start` on, waiting up to poll_s for the first of them.

        Returns {"chunks": [base64 int16 PCM, ...], "next": index to ask for next,
        "sample_rate": Hz (0 before the first chunk), "done": no more will come}.
        """
        if not self.valid_id(stream_id):
            return {"chunks": [], "next": start, "sample_rate": 0, "done": True}
        stream = self._get(stream_id)
        event = asyncio.Event()
        waiter = (asyncio.get_running_loop(), event)
        with stream.lock:
            stream.waiters.append(waiter)
        try:
            deadline = time.monotonic() + self.poll_s
            while True:
                event.clear()
                with stream.lock:
                    new, closed, rate = stream.parts[start:], stream.closed, stream.sample_rate
                remaining = deadline - time.monotonic()
                if new or closed or remaining <= 0:
                    break
                try:
                    await asyncio.wait_for(event.wait(), timeout=remaining)
                except asyncio.TimeoutError:
                    pass
        finally:
            with stream.lock:
                stream.waiters.remove(waiter)
        done = closed  # nothing is appended after close, so `new` holds the rest
        if done:
            with self._lock:
                if self._streams.get(stream_id) is stream:
                    del self._streams[stream_id]
        return {"chunks": [base64.b64encode(part).decode("ascii") for part in new], "next": start + len(new),
                "sample_rate": rate, "done": done}

    def __len__(self) -> int:
        return len(self._streams)
