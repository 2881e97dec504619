"""The stream hub between generation threads and the browser player's long poll: order and end,
wake-up on push, streams belong to their viewer, and polls never create or evict a stream."""

import asyncio
import base64
import secrets
import threading

import numpy as np

from tests.async_util import run_coroutine
from webui.stream import StreamHub

SID = "3f6c1c2e5d0a4a579a438d6c3b1e0f00"
ME, OTHER = "a" * 32, "b" * 32


def pcm_of(reply) -> np.ndarray:
    return np.concatenate([np.frombuffer(base64.b64decode(c), dtype="<i2") for c in reply["chunks"]])


def test_chunks_come_in_order_and_the_end_is_reported():
    hub = StreamHub()
    a = np.linspace(-1, 1, 480, dtype=np.float32)
    b = np.full(240, 0.5, dtype=np.float32)
    writer = hub.open(SID, ME)
    writer.push(a, 24000)
    writer.push(b, 24000)
    first = run_coroutine(hub.read(SID, ME, 0))
    assert first["sample_rate"] == 24000 and first["next"] == 2 and not first["done"]
    np.testing.assert_array_equal(pcm_of(first), np.round(np.concatenate([a, b]) * 32767).astype(np.int16))
    writer.close()
    last = run_coroutine(hub.read(SID, ME, first["next"]))
    assert last == {"chunks": [], "next": 2, "sample_rate": 24000, "done": True}
    assert len(hub) == 0  # read to the end: dropped


def test_a_waiting_poll_wakes_as_soon_as_a_thread_pushes():
    hub = StreamHub(poll_s=5.0)
    writer = hub.open(SID, ME)
    polling = threading.Event()

    def producer():
        polling.wait(5)
        writer.push(np.zeros(100, np.float32), 24000)

    async def poll():
        task = asyncio.ensure_future(hub.read(SID, ME, 0))
        await asyncio.sleep(0)  # the poll is waiting now
        polling.set()
        return await asyncio.wait_for(task, 2.0)  # well before the 5 s poll timeout

    threading.Thread(target=producer).start()
    assert run_coroutine(poll())["next"] == 1


def test_a_poll_that_comes_before_the_open_gets_the_stream():
    hub = StreamHub(poll_s=5.0)

    async def poll_then_open():
        task = asyncio.ensure_future(hub.read(SID, ME, 0))
        await asyncio.sleep(0)
        assert len(hub) == 0  # the waiting poll made nothing
        writer = hub.open(SID, ME)
        writer.push(np.ones(10, np.float32), 24000)
        return await asyncio.wait_for(task, 2.0)

    assert run_coroutine(poll_then_open())["next"] == 1


def test_a_stream_is_read_only_by_its_viewer():
    hub = StreamHub(poll_s=0.05)
    with hub.open(SID, ME) as writer:
        writer.push(np.ones(10, np.float32), 24000)
    assert run_coroutine(hub.read(SID, OTHER, 0)) == {"chunks": [], "next": 0, "sample_rate": 0, "done": False}
    assert hub.open(SID, OTHER) is None  # nor taken over
    assert run_coroutine(hub.read(SID, ME, 0))["next"] == 1  # still whole for its viewer


def test_polls_of_made_up_ids_never_create_or_evict_streams():
    hub = StreamHub(max_streams=4, poll_s=0.01)
    live = hub.open(SID, ME)

    async def flood():
        return await asyncio.gather(*(hub.read(secrets.token_hex(16), OTHER, 0) for _ in range(300)))

    assert all(not reply["chunks"] for reply in run_coroutine(flood()))
    assert len(hub) == 1
    live.push(np.ones(10, np.float32), 24000)
    assert run_coroutine(hub.read(SID, ME, 0))["next"] == 1


def test_a_full_hub_drops_finished_streams_and_refuses_rather_than_evict_a_live_one():
    clock = [0.0]
    hub = StreamHub(max_streams=3, per_viewer=2, unread_s=60.0, clock=lambda: clock[0])
    ids = [secrets.token_hex(16) for _ in range(6)]
    mine = [hub.open(ids[0], ME), hub.open(ids[1], ME)]
    assert hub.open(ids[2], ME) is None  # two per viewer
    mine[0].close()
    assert hub.open(ids[2], ME) is not None  # the finished one made room
    assert hub.open(ids[3], OTHER) is not None and len(hub) == 3
    assert hub.open(ids[4], "c" * 32) is None  # full of live streams: refused, none evicted
    clock[0] += 61.0
    for writer in mine:
        writer.close()
    assert hub.open(ids[4], "c" * 32) is not None  # finished ones go first


def test_malformed_ids_are_refused():
    hub = StreamHub()
    for bad in ("../x", "short", SID.upper(), SID + "0", None):
        assert hub.open(bad, ME) is None
    assert hub.open(SID, "") is None
    assert run_coroutine(hub.read("no", ME, 0))["done"] is True
    assert len(hub) == 0
