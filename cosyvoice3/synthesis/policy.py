"""What the engine does next: the scheduling policy, in one place.

One round (`run_once`) is: join, decode, audio.
1. Join: segments waiting for a row are prefilled, the request whose audio is due first first
   (`SynthesisJob.due`: a new request's on arrival, a running one's when the audio it sent has
   played out; the same due time, oldest first), while rows are free and the round's prompt tokens
   stay within `max_prefill_tokens` (at least one segment per round). So with every row taken by
   long texts, a new request takes the next free row unless a long one's audio runs dry first.
   The bound is what running requests wait for a joining one: a prefill stalls their next decode
   step by about the time of that many prompt tokens.
2. Decode: steps for every decoding segment, always (every request in the batch advances by the
   same tokens per round; a request never waits for another's tokens): `decode_steps` of them,
   sent to the device one after the other and read back once (the host waits for the device once
   per round, not per token), but one while a segment waits for a row (it joins next round), and
   never more than a first chunk still needs (that chunk is made in the round its tokens are
   there). Steps past a segment's end are dropped; later chunks may come that many steps later.
3. Audio: chunk works (flow + vocoder) in order of their deadline (`SynthesisJob.due`: the
   first audio of a request is due on arrival, later chunks when the audio already sent has
   played out), at most `max_audio_works` works and `max_audio_frames` flow frames per round,
   counted as the frames the flow solves (`BatchEngine.solve_frames`: a cached streaming chunk
   solves only its new frames, so later chunks of old requests cost what their new audio costs and
   a flow batch of them stays short; a first chunk is never queued behind more than one such
   round).
   Works due within `audio_slack_s` are taken; works due later wait while there is decoding to
   do (they batch better, and the decode steps of first chunks go on), and are taken when
   nothing else is running. A first chunk waits a little (at most `coalesce_max_s`) when other
   requests are at most `coalesce_tokens` tokens from their own first chunk: one batch of them
   costs about what one of them costs alone. So the first chunk of a new request comes before later chunks of
   older ones unless those are about to run dry, and no request starves: every deadline
   passes.
4. Audio goes on between decode steps: the flow solves of chosen works start (at most
   `max_flow_solves` in flight; chosen works wait for a free one), and every solve in flight
   advances by one ODE step per round while another request waits for tokens (its first chunk's
   or a row), so a flow batch never holds up the decode steps of a new request's first chunk by
   more than one step of it; with nobody waiting, the solves run to their end in the round (one
   stream gets its audio at once). A solve's works get their chunks (vocoder, batched) in the
   round it ends.
Admission of new requests into the engine (and therefore the number of rows) is the worker's:
a request that finds no free row waits; it never fails for lack of one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .engine import BatchEngine, Outcome
from .job import ChunkWork, Segment
from .limits import PolicyLimits


@dataclass
class Plan:
    join: list[Segment] = field(default_factory=list)
    decode: bool = False
    audio: list[ChunkWork] = field(default_factory=list)


class Policy:
    def __init__(self, limits: PolicyLimits | None = None):
        self.limits = limits or PolicyLimits()

    def plan_join(self, engine: BatchEngine) -> list[Segment]:
        chosen, tokens = [], 0
        waiting = sorted(engine.joinable(), key=lambda seg: seg.job.due())  # stable: oldest first on a tie
        for seg in waiting[:engine.tokens.free]:
            cost = 2 + len(seg.spec.prompt_ids) + len(seg.spec.text_ids) + len(seg.spec.speech_tokens)
            if chosen and tokens + cost > self.limits.max_prefill_tokens:
                break
            chosen.append(seg)
            tokens += cost
        return chosen

    def plan_decode(self, engine: BatchEngine) -> int:
        """Decode steps this round (see the module docstring, 2)."""
        steps = self.limits.decode_steps
        if steps <= 1 or engine.joinable():
            return 1
        return min([steps] + [n for n in engine.tokens_to_first_chunk() if n > 0])

    def plan_audio(self, engine: BatchEngine, now: float | None = None) -> list[ChunkWork]:
        now = time.monotonic() if now is None else now
        lim = self.limits
        if engine.solving >= lim.max_flow_solves:
            return []
        works = sorted(engine.ready_works(), key=lambda w: (w.job.due(), w.created))
        idle = engine.decoding == 0 and not engine.joinable()
        coming = any(0 < n <= lim.coalesce_tokens for n in engine.tokens_to_first_chunk())
        chosen, frames = [], 0
        for w in works:
            if not idle and w.job.due() > now + lim.audio_slack_s:
                break
            if w.first and coming and now - w.created < lim.coalesce_max_s:
                continue  # others are about to be ready: make them together
            cost = engine.solve_frames(w)
            if chosen and (len(chosen) >= lim.max_audio_works or frames + cost > lim.max_audio_frames):
                break
            chosen.append(w)
            frames += cost
        return chosen

    def run_once(self, engine: BatchEngine) -> Outcome:
        """One round: join, decode, audio (see the module docstring)."""
        out = Outcome()
        join = self.plan_join(engine)
        if join:
            out.extend(engine.join(join))
        if engine.decoding:
            out.extend(engine.decode(self.plan_decode(engine)))
        audio = self.plan_audio(engine)
        if audio:
            out.extend(engine.start_audio(audio))
        if engine.solving:
            out.extend(engine.step_audio(to_end=not self.others_wait(engine)))
        return out

    @staticmethod
    def others_wait(engine: BatchEngine) -> bool:
        """A request waits for decode steps: for a row, or for the tokens of its first chunk."""
        return bool(engine.joinable()) or any(n > 0 for n in engine.tokens_to_first_chunk())
