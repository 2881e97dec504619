"""The stream hub between generation threads and the browser player's long poll."""

import base64
import threading
import time

import numpy as np

from tests.async_util import run_coroutine
from webui.stream import StreamHub

SID = "3f6c1c2e-5d0a-4a57-9a43-8d6c3b1e0f00"


def pcm_of(reply) -> np.ndarray:
    return np.concatenate([np.frombuffer(base64.b64decode(c), dtype="<i2") for c in reply["chunks"]])


def test_chunks_come_in_order_and_the_end_is_reported():
    hub = StreamHub()
    a = np.linspace(-1, 1, 480, dtype=np.float32)
    b = np.full(240, 0.5, dtype=np.float32)
    hub.push(SID, a, 24000)
    hub.push(SID, b, 24000)
    first = run_coroutine(hub.read(SID, 0))
    assert first["sample_rate"] == 24000 and first["next"] == 2 and not first["done"]
    np.testing.assert_array_equal(pcm_of(first), np.round(np.concatenate([a, b]) * 32767).astype(np.int16))
    hub.close(SID)
    last = run_coroutine(hub.read(SID, first["next"]))
    assert last == {"chunks": [], "next": 2, "sample_rate": 24000, "done": True}
    assert len(hub) == 0  # read to the end: dropped


def test_a_waiting_poll_wakes_as_soon_as_a_thread_pushes():
    hub = StreamHub(poll_s=5.0)

    def producer():
        time.sleep(0.2)
        hub.push(SID, np.zeros(100, np.float32), 24000)

    async def poll():
        started = time.perf_counter()
        reply = await hub.read(SID, 0)
        return reply, time.perf_counter() - started

    threading.Thread(target=producer).start()
    reply, waited = run_coroutine(poll())
    assert reply["next"] == 1
    assert 0.15 < waited < 0.35  # woken by the push, not by the 5 s poll timeout


def test_a_poll_before_the_stream_exists_times_out_empty_and_close_ends_it():
    hub = StreamHub(poll_s=0.1)
    reply = run_coroutine(hub.read(SID, 0))
    assert reply == {"chunks": [], "next": 0, "sample_rate": 0, "done": False}
    hub.close(SID)
    hub.push(SID, np.ones(10, np.float32), 24000)  # after close: ignored
    assert run_coroutine(hub.read(SID, 0)) == {"chunks": [], "next": 0, "sample_rate": 0, "done": True}


def test_bad_ids_are_refused_and_old_streams_expire():
    hub = StreamHub(ttl_s=0.05, max_streams=3)
    hub.push("../x", np.ones(10, np.float32), 24000)
    assert len(hub) == 0
    assert run_coroutine(hub.read("no", 0))["done"] is True
    for i in range(5):
        hub.push(f"{SID[:-1]}{i}", np.ones(10, np.float32), 24000)
    assert len(hub) == 3  # bounded
    time.sleep(0.1)
    hub.push(SID, np.ones(10, np.float32), 24000)
    assert len(hub) == 1  # the others expired
