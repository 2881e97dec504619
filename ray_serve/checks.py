"""When a replica tells Ray it is unhealthy: the rules of `WorkerReplica.check_health`.

The replica's supervisor recovers its worker by itself (a crash, hang, stall, out-of-memory or a
memory ceiling restarts the worker process and resubmits its requests), so a replica stays
healthy while that recovery is under way. It is unhealthy, and Ray replaces the whole replica,
only when the supervisor cannot or does not recover:

- its worker could not boot (`boot_failed`: no restart loop, every request answered with the
  error);
- its own loop stopped going round (`Supervisor.loop_age` over `loop_timeout_s`, or the loop
  ended): nothing watches the worker any more, so a hang or stall would never be acted on;
- it has had no ready worker for `recovery_timeout_s` since its last restart: the worker hung or
  stalled, was restarted, and the replacement never became ready. A worker released while idle
  (`--idle-release-minutes`), or waking up from that, is not recovering: the replica is healthy.

Pure: the supervisor's loop age and its health report (a callable, asked only once the loop is
known to go round: a loop stuck holding the supervisor's lock would block it) are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from worker.supervisor import BOOT_FAILED, IDLE, READY, STOPPED, WAKING


@dataclass(frozen=True)
class HealthRules:
    """loop_timeout_s: the longest the supervisor's loop may go without a round (it goes round
    every tick, 0.05 s). recovery_timeout_s: the longest a replica may be without a ready worker
    after a restart (a restarted worker loads from the engine cache in well under a minute)."""

    loop_timeout_s: float = 30.0
    recovery_timeout_s: float = 300.0


def replica_problem(health: Callable[[], dict], loop_age_s: float | None, rules: HealthRules) -> str | None:
    """Why Ray should replace this replica, in words; None while it is healthy or recovering."""
    if loop_age_s is None:
        return "the supervisor's loop is not running"
    if loop_age_s > rules.loop_timeout_s:
        return f"the supervisor's loop has not gone round for {loop_age_s:.1f} s"
    worker = health().get("worker") or {}
    state = worker.get("state")
    if state == BOOT_FAILED:
        return f"the worker could not boot: {worker.get('boot_error')}"
    if state == STOPPED:
        return "the supervisor has stopped"
    since_restart = worker.get("last_restart_age_s")
    if state not in (READY, IDLE, WAKING) and since_restart is not None and since_restart > rules.recovery_timeout_s:
        return (f"no ready worker for {since_restart:.0f} s since it was restarted "
                f"({worker.get('last_restart_cause')}; now {state})")
    return None
