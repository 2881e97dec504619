"""The request book: every request the supervisor has admitted and not yet answered.

Plain bookkeeping - no processes, threads or clocks (times are passed in) - so it is tested on
its own. It owns:
- admission: the bounds a request must meet before any worker sees it (`refusal`: a synthesis
  request's spec by its one validator, `cosyvoice3.spec.check_spec`; the prompt by `Limits`);
- attempts: how often a request was started in a worker, and when it may not start again
  (`max_attempts` starts in all, the first included);
- the resume point: where a request a dead worker had started picks up (`resume_point`): the
  first segment not fully delivered, skipping the chunks of it already delivered (the seed is
  the same, so the audio is too);
- answers: every admitted request ends with exactly one `Done` or `Failed` on its event queue.

A booking's `holder` is the worker process that has its current attempt (None: waiting for one);
messages about a request from any other process are stale and ignored.
"""

from __future__ import annotations

import dataclasses
import queue
from dataclasses import dataclass, field

from cosyvoice3.errors import BadInputError, PromptTooShortError
from cosyvoice3.spec import check_spec
from worker.protocol import (
    BAD_INPUT,
    OVERLOADED,
    TIMEOUT,
    Chunk,
    Failed,
    Limits,
    PreparePrompt,
    Progress,
    Synthesize,
    Transcribe,
)
from worker.supervisor.causes import Cause


@dataclass
class Booking:
    msg: Synthesize | PreparePrompt | Transcribe
    events: queue.SimpleQueue
    deadline: float
    attempt: int = 0  # starts in a worker that died before this one (0 = the first attempt)
    holder: object | None = None  # the worker process that has the current attempt
    started: bool = False  # the holder began working on it (an attempt that counts)
    delivered: list = field(default_factory=list)  # (segment, segment_final) of every chunk passed on

    @property
    def request_id(self) -> str:
        return self.msg.request_id


def _limit_refusal(check, value) -> tuple | None:
    """Failed's fields after the request id (code, message, retryable, reason, params) when
    `check(value)` (a `Limits` check, or the spec's validator `check_spec`) refuses the value."""
    try:
        check(value)
    except BadInputError as exc:
        return _refused(exc)
    return None


def _refused(exc: BadInputError) -> tuple:
    failed = Failed.of("", exc)
    return failed.code, failed.message, failed.retryable, failed.reason, failed.params


def resume_point(start_segment: int, delivered: list) -> tuple[int, int]:
    """(segment to start at, chunks of it to skip) after the chunks `delivered` reached the
    caller, for a request that began at `start_segment`."""
    start, skip = start_segment, 0
    for segment, final in delivered:
        start, skip = (segment + 1, 0) if final else (start, skip + 1)
    return start, skip


class RequestBook:
    def __init__(self, max_attempts: int):
        self.max_attempts = max_attempts
        self._bookings: dict[str, Booking] = {}

    def __len__(self) -> int:
        return len(self._bookings)

    def __iter__(self):
        return iter(list(self._bookings.values()))

    def get(self, request_id: str) -> Booking | None:
        return self._bookings.get(request_id)

    # ------------------------------------------------------------------ admission

    def refusal(self, msg, *, limits: Limits, max_queue: int, elsewhere=()) -> tuple | None:
        """Failed's fields after the request id ((code, message), or with the reason of a limit's
        refusal: (code, message, retryable, reason, params)) when `msg` must be answered at once. The text and
        prompt bounds are the `Limits` the worker is booted with. `elsewhere`: the ids of requests
        open in the other workers of a router, which count against the same `max_queue` and ids."""
        if not msg.request_id:
            return BAD_INPUT, "the request has no id"
        if msg.request_id in self._bookings or msg.request_id in elsewhere:
            return BAD_INPUT, f"request id {msg.request_id!r} is already in use"
        if isinstance(msg, Synthesize):
            refusal = _limit_refusal(lambda spec: check_spec(spec, limits), msg.spec)
            if refusal is not None:
                return refusal
            if msg.prompt is None and msg.prompt_audio is None:
                return BAD_INPUT, "no voice prompt: give prompt audio or a saved voice"
            audio, rate = msg.prompt_audio, msg.prompt_sample_rate
        else:
            audio, rate = msg.audio, msg.sample_rate
        if audio is not None:
            if rate <= 0 or len(audio) == 0:
                return _refused(PromptTooShortError("the prompt audio is empty", seconds=0.0))
            refusal = _limit_refusal(limits.check_prompt_seconds, len(audio) / rate)
            if refusal is not None:
                return refusal
        if len(self._bookings) + len(elsewhere) >= max_queue:
            return OVERLOADED, f"{max_queue} requests are already waiting; try again shortly"
        return None

    def admit(self, msg, events: queue.SimpleQueue, deadline: float) -> Booking:
        booking = Booking(msg, events, deadline)
        self._bookings[msg.request_id] = booking
        return booking

    # ------------------------------------------------------------------ moving between books

    def release_waiting(self) -> list[Booking]:
        """Take the bookings no worker has out of this book, unanswered, to be adopted by another
        book (a router moves them to a ready worker). Their attempts, deadline and delivered chunks
        go with them, so the other book resumes them where this one would have."""
        moved = self.waiting()
        for booking in moved:
            del self._bookings[booking.request_id]
        return moved

    def adopt(self, booking: Booking) -> None:
        """Take over a booking another book released."""
        booking.holder, booking.started = None, False
        self._bookings[booking.request_id] = booking

    # ------------------------------------------------------------------ attempts

    def waiting(self) -> list[Booking]:
        """Bookings no worker has, in arrival order."""
        return [b for b in self._bookings.values() if b.holder is None]

    def held_by(self, holder) -> list[Booking]:
        return [b for b in self._bookings.values() if b.holder is holder]

    def hand_to(self, booking: Booking, holder):
        """Give the current attempt to `holder`; returns the message to send it (attempt count and
        resume point filled in)."""
        booking.holder, booking.started = holder, False
        msg = booking.msg
        if isinstance(msg, Synthesize):
            start, skip = resume_point(msg.start_segment, booking.delivered)
            return dataclasses.replace(msg, attempt=booking.attempt, start_segment=start, skip_chunks=skip,
                                       first_seq=len(booking.delivered))
        return dataclasses.replace(msg, attempt=booking.attempt)

    def retry(self, booking: Booking, failed: Failed) -> bool:
        """The holder answered `failed`. True when the request gets another attempt (it is then
        waiting again); False when `failed` is its answer (it is then finished)."""
        if failed.retryable and booking.attempt + 1 < self.max_attempts:
            booking.attempt += 1
            booking.holder, booking.started = None, False
            booking.events.put(Progress(booking.request_id, "retrying", 0.0, failed.message))
            return True
        self.finish(booking, failed)
        return False

    def take_back(self, holder, cause: Cause, detail: str = "") -> None:
        """`holder` is being restarted for `cause`: its bookings wait for the next worker; one it had
        started uses up an attempt, and fails with the cause's code after the last one. `detail`
        ("it was killed by SIGKILL (signal 9)", ...) ends the failure message."""
        suffix = f"; {detail}" if detail else ""
        for booking in self.held_by(holder):
            booking.holder = None
            if booking.started:
                booking.started = False
                booking.attempt += 1
                if booking.attempt >= self.max_attempts:
                    times = f"{booking.attempt} time{'s' if booking.attempt != 1 else ''}"
                    self.finish(booking, Failed(booking.request_id, cause.code,
                                                f"the model worker {cause.words} {times} while working on this "
                                                f"request{suffix}"))
                    continue
            booking.events.put(Progress(booking.request_id, "recovering", 0.0,
                                        f"the model worker {cause.words}; restarting it"))

    # ------------------------------------------------------------------ answers

    def deliver(self, booking: Booking, event) -> None:
        """Pass a non-final event on; a chunk moves the resume point."""
        if isinstance(event, Chunk):
            booking.delivered.append((event.segment, event.segment_final))
        booking.events.put(event)

    def finish(self, booking: Booking, event) -> None:
        """Answer the request with its final `Done`/`Failed` and forget it."""
        if self._bookings.pop(booking.request_id, None) is booking:
            booking.events.put(event)

    def expired(self, now: float) -> list[Booking]:
        """Bookings past their deadline, each answered with `timeout` (the caller cancels the work)."""
        late = [b for b in self._bookings.values() if now > b.deadline]
        for booking in late:
            self.finish(booking, Failed(booking.request_id, TIMEOUT, "the request took longer than its deadline"))
        return late

    def extend_deadlines(self, seconds: float) -> None:
        """Move every deadline `seconds` later (the time the requests waited for a worker that was
        released while idle to wake up: not theirs to pay)."""
        for booking in self._bookings.values():
            booking.deadline += seconds

    def fail_all(self, code: str, message: str) -> None:
        for booking in self:
            self.finish(booking, Failed(booking.request_id, code, message))
