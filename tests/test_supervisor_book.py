"""The request book on its own: admission bounds, the resume point, attempts, one answer each."""

import queue

import numpy as np

from tests.supervisor_fakes import drain
from tests.envelopes import synthesize_msg
from worker.protocol import (
    BAD_INPUT,
    Limits,
    OOM,
    OVERLOADED,
    TIMEOUT,
    TOO_LONG,
    Chunk,
    Done,
    Failed,
    PreparePrompt,
    Progress,
    Synthesize,
)
from worker.supervisor.book import RequestBook, resume_point
from worker.supervisor.causes import CAUSES, CRASHED

LIMITS = dict(limits=Limits(max_text_chars=20, max_prompt_seconds=2.0, min_prompt_seconds=0.5), max_queue=2)
VOICE = dict(prompt_audio=np.zeros(24000, np.float32), prompt_sample_rate=24000)


def synthesize(request_id="r1", text="Hello.", **fields) -> Synthesize:
    return synthesize_msg(request_id, text, **{**VOICE, **fields})


def test_resume_point_is_the_first_segment_not_fully_delivered():
    assert resume_point(0, []) == (0, 0)
    assert resume_point(0, [(0, False), (0, False)]) == (0, 2)
    assert resume_point(0, [(0, False), (0, True)]) == (1, 0)
    assert resume_point(0, [(0, True), (1, False)]) == (1, 1)
    assert resume_point(2, [(2, False)]) == (2, 1)  # an attempt that itself started at segment 2


def test_refusals_name_the_bound_that_was_crossed():
    book = RequestBook(max_attempts=3)
    cases = [(synthesize(text="x" * 21), TOO_LONG), (synthesize(text=" "), BAD_INPUT),
             (synthesize(mode="whisper"), BAD_INPUT), (synthesize_msg("r1", "Hi."), BAD_INPUT),
             (synthesize(prompt_audio=np.zeros(48001, np.float32)), TOO_LONG),
             (synthesize(prompt_audio=np.zeros(0, np.float32)), BAD_INPUT),
             (synthesize(prompt_audio=np.zeros(6000, np.float32)), BAD_INPUT),  # shorter than the minimum
             (PreparePrompt("p", np.zeros(48001, np.float32), 24000), TOO_LONG), (synthesize(request_id=""), BAD_INPUT)]
    for msg, code in cases:
        assert book.refusal(msg, **LIMITS)[0] == code, msg
    assert book.refusal(synthesize(text="x" * 20), **LIMITS) is None
    book.admit(synthesize("a"), queue.SimpleQueue(), deadline=10.0)
    assert book.refusal(synthesize("a"), **LIMITS)[0] == BAD_INPUT  # id in use
    book.admit(synthesize("b"), queue.SimpleQueue(), deadline=10.0)
    assert book.refusal(synthesize("c"), **LIMITS)[0] == OVERLOADED


def test_an_attempt_handed_to_a_worker_resumes_where_the_caller_stopped_hearing():
    book = RequestBook(max_attempts=3)
    booking = book.admit(synthesize(), queue.SimpleQueue(), deadline=10.0)
    first = book.hand_to(booking, "worker-1")
    assert (first.attempt, first.start_segment, first.skip_chunks, first.first_seq) == (0, 0, 0, 0)
    for segment, index, final in [(0, 0, False), (0, 1, True), (1, 0, False)]:
        book.deliver(booking, Chunk("r1", 0, np.zeros(4, np.float32), 24000, segment, index, final))
    booking.started = True
    book.take_back("worker-1", CAUSES[CRASHED])
    assert book.waiting() == [booking]
    second = book.hand_to(booking, "worker-2")
    assert (second.attempt, second.start_segment, second.skip_chunks, second.first_seq) == (1, 1, 1, 3)
    assert booking.msg.attempt == 0  # the admitted message itself is left as it came
    assert first.spec is second.spec is booking.msg.spec  # only the envelope changes; the spec travels as it is


def test_only_a_started_attempt_counts_and_the_last_one_fails_with_the_cause_code():
    book = RequestBook(max_attempts=2)
    events = queue.SimpleQueue()
    booking = book.admit(synthesize(), events, deadline=10.0)
    book.hand_to(booking, "w1")
    book.take_back("w1", CAUSES[CRASHED])  # sent, never started: no attempt used
    assert booking.attempt == 0
    for worker in ("w2", "w3"):
        book.hand_to(booking, worker)
        booking.started = True
        book.take_back(worker, CAUSES["oom"], "it was killed by SIGKILL (signal 9)")
    progress, *rest, final = drain(events)
    assert all(isinstance(e, Progress) and e.stage == "recovering" for e in [progress, *rest])
    assert final.code == OOM and final.message == ("the model worker ran out of GPU memory 2 times while working on "
                                                   "this request; it was killed by SIGKILL (signal 9)")
    assert len(book) == 0


def test_a_retryable_failure_is_retried_until_the_attempts_run_out():
    book = RequestBook(max_attempts=2)
    events = queue.SimpleQueue()
    booking = book.admit(synthesize(), events, deadline=10.0)
    book.hand_to(booking, "w1")
    assert book.retry(booking, Failed("r1", OOM, "out of memory", retryable=True))
    assert booking.holder is None and booking.attempt == 1
    book.hand_to(booking, "w1")
    assert not book.retry(booking, Failed("r1", OOM, "out of memory", retryable=True))
    assert [type(e).__name__ for e in drain(events)] == ["Progress", "Failed"]


def test_every_request_is_answered_once():
    book = RequestBook(max_attempts=3)
    events = queue.SimpleQueue()
    late = book.admit(synthesize("late"), events, deadline=5.0)
    book.admit(synthesize("on-time"), queue.SimpleQueue(), deadline=50.0)
    assert book.expired(4.0) == []
    assert book.expired(5.1) == [late]
    book.finish(late, Done("late"))  # an answer after the timeout is not passed on
    assert [e.code for e in drain(events)] == [TIMEOUT]
    assert [b.request_id for b in book] == ["on-time"]
