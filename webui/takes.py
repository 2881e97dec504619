"""Takes: the same request in several seeds at once, for the caller to pick the one that sounds right.

    seeds = take_seeds(seed, n)                       # seed, seed+1, ... wrapped in MIN_SEED..MAX_SEED
    with start_takes(synthesis, spec, prompt, n) as takes:
        for event in takes.first:                     # the first take's events, as they come
            ...
        results = takes.wait(lang)                    # [(seed, pcm)], in seed order; SynthesisError

All N requests are submitted before any is followed, so the worker takes them in one round and
decodes them in one batch (its rows advance together); their events wait in their queues while
another take is read. Closing the takes cancels every request still running. This module owns the
rule of the seeds of takes (`take_seeds`) and their number (`MIN_TAKES`..`MAX_TAKES`); the page,
the Gradio API, `/v1/audio/captioned_speech` and any other entry ask it.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.modes import MAX_SEED, MIN_SEED, check_seed
from cosyvoice3.spec import SpeechSpec
from worker import protocol as P

from . import messages as M
from .synthesis import Synthesis, SynthesisError, SynthesisRun

MIN_TAKES, MAX_TAKES = 1, 4
SEED_SPAN = MAX_SEED - MIN_SEED + 1


def take_seeds(seed: int, n: int) -> list[int]:
    """The seeds of `n` takes of a request with `seed`: the seed itself, then seed+1, ..., each
    wrapped into MIN_SEED..MAX_SEED (the last seed is followed by the first). `seed` must be in
    range (check_seed's BadSeedError otherwise); `n` is check_takes'."""
    seed = check_seed(seed)
    return [MIN_SEED + (seed - MIN_SEED + k) % SEED_SPAN for k in range(check_takes(n))]


def check_takes(n) -> int:
    """The number of takes as an int in MIN_TAKES..MAX_TAKES (a whole float such as 2.0 too), else
    ValueError: a string or a bool (JSON's true) is no number of takes."""
    try:
        if isinstance(n, (str, bool)):
            raise ValueError(n)
        value = int(n)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"takes must be a whole number from {MIN_TAKES} to {MAX_TAKES}, not {n!r}") from None
    if value != n or not MIN_TAKES <= value <= MAX_TAKES:
        raise ValueError(f"takes must be a whole number from {MIN_TAKES} to {MAX_TAKES}, not {n!r}")
    return value


def checked_takes(n, lang: str = M.EN) -> int:
    """check_takes for an entry of the web process: SynthesisError (bad_input) with the sentence."""
    try:
        return check_takes(n)
    except ValueError:
        raise SynthesisError(P.BAD_INPUT, M.notice("takes_range", lang, low=MIN_TAKES, high=MAX_TAKES),
                             param="takes") from None


class Takes:
    """N runs of one checked spec, one per seed of `take_seeds`, all submitted at once."""

    def __init__(self, runs: list[SynthesisRun]):
        self.runs = runs

    @property
    def seeds(self) -> list[int]:
        return [run.msg.spec.seed for run in self.runs]

    @property
    def first(self) -> SynthesisRun:
        return self.runs[0]

    def wait(self, lang: str = M.EN) -> list[tuple[int, np.ndarray]]:
        """Follow every take to its end: [(seed, audio)] in seed order, or the first take's
        SynthesisError (the others are cancelled by `close`)."""
        return [(run.msg.spec.seed, run.wait(lang)) for run in self.runs]

    def cancel(self) -> None:
        """Stop every take's request now (the Stop button)."""
        for run in self.runs:
            run.cancel()

    def close(self) -> None:
        for run in self.runs:
            run.close()

    def __enter__(self) -> "Takes":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_takes(synthesis: Synthesis, spec: SpeechSpec, prompt: PreparedPrompt, n: int,
                lang: str = M.EN) -> Takes:
    """Submit `n` takes of the checked `spec` (seeds: take_seeds(spec.seed, n)) back to back, so
    the worker batches them. SynthesisError (bad_input) for a number of takes out of range."""
    seeds = take_seeds(spec.seed, checked_takes(n, lang))
    runs: list[SynthesisRun] = []
    try:
        for seed in seeds:
            runs.append(synthesis.start(replace(spec, seed=seed), prompt))
    except BaseException:
        Takes(runs).close()
        raise
    return Takes(runs)
