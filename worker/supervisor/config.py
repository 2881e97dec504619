"""`SupervisorConfig`: how one supervised worker is booted, watched and bounded."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.protocol import Limits, WorkerConfig


@dataclass
class SupervisorConfig:
    """worker: how to boot the worker. Times in seconds. `max_attempts`: starts of one request in
    a worker, first included. `max_queue`: unfinished requests admitted at once. `rss_limit` /
    `gpu_limit` (bytes) and `recycle_after` (requests) restart an idle worker; None = off.
    `boot_timeout_s`: a boot that takes longer is killed (None = wait; engine builds take minutes).
    `max_boot_crashes`: boots in a row that die without a word before the state is boot_failed.
    `idle_release_s`: a ready worker with no request for this long is stopped on purpose, freeing
    its device (state idle; not a restart), and started again by the next request; None = off.
    `tick_s`: how often the watchdog looks at the clocks when nothing else happens.
    `request_timeout_s`: a request's deadline unless it brings its own; a synthesis whose text is
    longer than `request_timeout_chars` gets it in proportion (`timeout_for`), so a chapter of
    50,000 characters is not cut off after ten minutes."""

    worker: WorkerConfig = field(default_factory=WorkerConfig)
    hang_timeout_s: float = 30.0
    stall_timeout_s: float = 60.0
    boot_timeout_s: float | None = None
    kill_grace_s: float = 3.0
    max_attempts: int = 3
    max_queue: int = 64
    request_timeout_s: float = 600.0
    request_timeout_chars: int = 5000
    rss_limit: int | None = None
    gpu_limit: int | None = None
    recycle_after: int | None = None
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    max_boot_crashes: int = 3
    idle_release_s: float | None = None
    tick_s: float = 0.05

    def timeout_for(self, msg) -> float:
        """The deadline of a request, in seconds from its admission: its own `timeout_s`, else
        request_timeout_s, scaled up for a text longer than request_timeout_chars."""
        if msg.timeout_s:
            return msg.timeout_s
        spec = getattr(msg, "spec", None)
        chars = len(spec.text) if spec is not None else 0
        return self.request_timeout_s * max(1.0, chars / self.request_timeout_chars)

    @property
    def limits(self) -> Limits:
        """The request limits: the worker's own object, so admission and the model agree."""
        return self.worker.limits
