"""What the supervisor knows of one worker process, and the checks it makes on it.

Pure: the time is passed in, so every check is tested with a fake clock. `Watched` gathers the
worker's own reports (heartbeats: step counter, busy request ids, RSS, GPU memory, decode batch;
Ready; requests served) and the supervisor's decisions about it (asked to stop, why, and when SIGKILL is due).

The checks, each a function of (watched, now, config):
- `fault`: HUNG when no heartbeat came for `hang_timeout_s`; STALLED when a busy worker's step
  counter has not moved for `stall_timeout_s` (heartbeats alone do not count as progress);
- `planned`: MEMORY when RSS or GPU memory is over its ceiling, RECYCLED after `recycle_after`
  requests (both wait until the worker is idle);
- `boot_overdue`: still booting after `boot_timeout_s`;
- `idle_due`: a ready worker with no request for `idle_release_s` (the supervisor notes each
  moment it has one: `note_active`);
- `kill_due`: asked to stop and still there after its grace period.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.protocol import Heartbeat
from worker.supervisor.causes import HUNG, MEMORY, RECYCLED, STALLED
from worker.supervisor.config import SupervisorConfig


@dataclass
class Watched:
    process: object  # the WorkerProcess
    started_at: float
    ready_at: float | None = None
    last_heartbeat: float = 0.0
    last_progress: float = 0.0  # when the step counter last moved (or work began)
    steps: int = 0
    busy: tuple = ()
    rss: int = 0
    gpu_memory: int = 0
    batch: dict = field(default_factory=dict)  # the heartbeat's decode batch: current, mean, max
    served: int = 0
    boot_error: str | None = None  # what the worker's BootFailed said
    stop_reason: str | None = None  # why it was asked to stop (a restart cause, "shutdown", "boot_failed")
    kill_at: float | None = None  # SIGKILL when still there at this time
    boot_killed: bool = False  # killed for booting too long (its exit counts as a boot crash)
    last_active: float = 0.0  # when it last had a request open, or was busy (or became ready)

    def __post_init__(self):
        self.last_heartbeat = self.last_progress = self.started_at

    @property
    def pid(self) -> int:
        return self.process.pid

    def on_heartbeat(self, hb: Heartbeat, now: float) -> None:
        if hb.steps != self.steps or (hb.busy and not self.busy):
            self.last_progress = now
        self.last_heartbeat, self.steps, self.busy = now, hb.steps, tuple(hb.busy)
        self.rss, self.gpu_memory, self.batch = hb.rss, hb.gpu_memory, dict(hb.batch)

    def on_ready(self, now: float) -> None:
        self.ready_at = self.last_heartbeat = self.last_progress = self.last_active = now

    def note_active(self, now: float) -> None:
        """A request of this worker is open (admitted and not answered) at `now`."""
        self.last_active = now

    def ask_to_stop(self, reason: str, now: float, grace_s: float) -> bool:
        """Note the first request to stop (SIGKILL due after `grace_s`); False if already asked."""
        if self.stop_reason is not None:
            return False
        self.stop_reason, self.kill_at = reason, now + grace_s
        return True


def fault(w: Watched, now: float, cfg: SupervisorConfig) -> str | None:
    """HUNG, STALLED or None, for a ready worker."""
    if now - w.last_heartbeat > cfg.hang_timeout_s:
        return HUNG
    if w.busy and now - w.last_progress > cfg.stall_timeout_s:
        return STALLED
    return None


def planned(w: Watched, cfg: SupervisorConfig) -> str | None:
    """MEMORY, RECYCLED or None: a healthy worker that should be replaced once idle."""
    if (cfg.rss_limit and w.rss > cfg.rss_limit) or (cfg.gpu_limit and w.gpu_memory > cfg.gpu_limit):
        return MEMORY
    if cfg.recycle_after and w.served >= cfg.recycle_after:
        return RECYCLED
    return None


def boot_overdue(w: Watched, now: float, cfg: SupervisorConfig) -> bool:
    return bool(cfg.boot_timeout_s) and w.ready_at is None and not w.boot_killed \
        and now - w.started_at > cfg.boot_timeout_s


def idle_due(w: Watched, now: float, cfg: SupervisorConfig) -> bool:
    """A ready worker to release: idle release is on, it works on nothing (its last heartbeat
    named no request) and had no open request for `idle_release_s`."""
    return cfg.idle_release_s is not None and w.ready_at is not None and not w.busy \
        and now - w.last_active >= cfg.idle_release_s


def kill_due(w: Watched, now: float) -> bool:
    return w.kill_at is not None and now >= w.kill_at
