"""Login attempts per client address, with exponential back-off: `LoginThrottle`.

Every attempt counts as a failure when it is admitted and is cleared by `succeeded`, so attempts
sent in parallel are counted before any of them is answered. The first FREE_ATTEMPTS attempts of
an address pass at once; from then on each admitted attempt blocks the address for FIRST_DELAY_S,
doubling with every further attempt up to MAX_DELAY_S. An address that stays quiet for FORGET_S
after its block ends starts afresh; at most MAX_CLIENTS addresses are remembered (the quietest
are forgotten first), so the table stays small whatever arrives.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

FREE_ATTEMPTS = 5
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 300.0
FORGET_S = 900.0
MAX_CLIENTS = 10_000


@dataclass
class _Record:
    attempts: int = 0
    blocked_until: float = 0.0
    last: float = 0.0


class LoginThrottle:
    """Thread-safe; `clock` is a monotonic clock in seconds."""

    def __init__(self, free_attempts: int = FREE_ATTEMPTS, first_delay_s: float = FIRST_DELAY_S,
                 max_delay_s: float = MAX_DELAY_S, forget_s: float = FORGET_S, max_clients: int = MAX_CLIENTS,
                 clock=time.monotonic):
        self.free_attempts, self.first_delay_s, self.max_delay_s = free_attempts, first_delay_s, max_delay_s
        self.forget_s, self.max_clients, self._clock = forget_s, max_clients, clock
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._lock = threading.Lock()

    def admit(self, client: str) -> float:
        """0 when `client` may try now (the attempt is counted until `succeeded`), else the
        seconds it must wait (the attempt is refused and not counted)."""
        now = self._clock()
        with self._lock:
            record = self._records.get(client)
            if record is None or now - max(record.last, record.blocked_until) > self.forget_s:
                record = _Record()
            if now < record.blocked_until:
                return record.blocked_until - now
            record.attempts += 1
            record.last = now
            if record.attempts >= self.free_attempts:
                delay = self.first_delay_s * 2.0 ** (record.attempts - self.free_attempts)
                record.blocked_until = now + min(self.max_delay_s, delay)
            self._records[client] = record
            self._records.move_to_end(client)
            while len(self._records) > self.max_clients:
                self._records.popitem(last=False)
            return 0.0

    def succeeded(self, client: str) -> None:
        """The admitted attempt was right: the address starts afresh."""
        with self._lock:
            self._records.pop(client, None)

    def __len__(self) -> int:
        return len(self._records)
