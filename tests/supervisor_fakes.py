"""A fake clock and fake worker processes for driving the Supervisor's loop steps (`spawn_worker`,
`handle`, `check`) without processes, threads or sleeps."""

from __future__ import annotations

import itertools
import queue

import numpy as np

from tests.envelopes import synthesize_msg
from worker.protocol import Heartbeat, Ready
from worker.supervisor import Supervisor, SupervisorConfig
from worker.supervisor.process import Exited

_pids = itertools.count(10_000)


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeProcess:
    """Records what the supervisor sends it and the signals it gets."""

    def __init__(self, config, post, name):
        self.pid = next(_pids)
        self.name = name
        self.sent: list = []
        self.signals: list[str] = []

    def send(self, msg) -> None:
        self.sent.append(msg)

    def terminate(self) -> None:
        self.signals.append("SIGTERM")

    def kill(self) -> None:
        self.signals.append("SIGKILL")


class Rig:
    """A Supervisor on a fake clock with fake worker processes; `self.processes[-1]` is the newest."""

    def __init__(self, **overrides):
        cfg = dict(hang_timeout_s=30.0, stall_timeout_s=60.0, kill_grace_s=3.0, backoff_s=1.0, backoff_max_s=30.0,
                   max_attempts=3, max_boot_crashes=3)
        cfg.update(overrides)
        self.clock = FakeClock()
        self.processes: list[FakeProcess] = []
        self.supervisor = Supervisor(SupervisorConfig(**cfg), clock=self.clock, launch=self._launch)
        self.supervisor.spawn_worker()

    def _launch(self, config, post, name):
        self.processes.append(FakeProcess(config, post, name))
        return self.processes[-1]

    @property
    def process(self) -> FakeProcess:
        return self.processes[-1]

    @property
    def health(self) -> dict:
        return self.supervisor.health()

    def ready(self) -> FakeProcess:
        self.supervisor.handle(self.process, Ready(self.process.pid, {"device": "cpu"}))
        return self.process

    def heartbeat(self, steps: int = 0, busy: tuple = (), rss: int = 0, gpu_memory: int = 0,
                  batch: dict | None = None) -> None:
        self.supervisor.handle(self.process, Heartbeat(busy=busy, steps=steps, rss=rss, gpu_memory=gpu_memory,
                                                       pid=self.process.pid, batch=batch or {}))

    def exit(self, exitcode: int, process: FakeProcess | None = None) -> None:
        self.supervisor.handle(process or self.process, Exited(exitcode))

    def tick(self, seconds: float = 0.0) -> None:
        """Let `seconds` pass, then run the periodic checks."""
        self.clock.advance(seconds)
        self.supervisor.check()

    def submit(self, request_id: str, **fields) -> queue.SimpleQueue:
        fields.setdefault("prompt_audio", np.zeros(24000, np.float32))
        fields.setdefault("prompt_sample_rate", 24000)
        return self.supervisor.submit(synthesize_msg(request_id, "Hello there.", **fields))


def drain(events: queue.SimpleQueue) -> list:
    """The events already on a request's queue (never blocks)."""
    out = []
    while True:
        try:
            out.append(events.get_nowait())
        except queue.Empty:
            return out
