"""When the next worker starts: backoff after crashes in a row, and when to give up on booting.

Pure counters. A crash (any unplanned restart) lengthens the streak, a request served ends it.
The first restart of a streak is immediate, then the delay doubles from `backoff_s` up to
`backoff_max_s`; a planned restart (memory, recycling) never waits. A worker that dies while
booting without a word counts as a boot crash; `max_boot_crashes` in a row (a Ready resets the
count) mean the worker cannot start, so the supervisor stops trying (state boot_failed) instead of
looping.
"""

from __future__ import annotations


class RestartPacer:
    def __init__(self, backoff_s: float, backoff_max_s: float, max_boot_crashes: int):
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.max_boot_crashes = max_boot_crashes
        self.crash_streak = 0
        self.boot_crashes = 0

    def crashed(self) -> None:
        self.crash_streak += 1

    def served(self) -> None:
        self.crash_streak = 0

    def booted(self) -> None:
        self.boot_crashes = 0

    def boot_crashed(self) -> bool:
        """Count a boot crash; True when that was one too many (stop restarting)."""
        self.boot_crashes += 1
        return self.boot_crashes >= self.max_boot_crashes

    def delay(self, planned: bool) -> float:
        """Seconds to wait before the next worker starts."""
        streak = 0 if planned else self.crash_streak
        if streak <= 1:
            return 0.0
        return min(self.backoff_max_s, self.backoff_s * 2 ** (streak - 2))
