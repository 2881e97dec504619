"""A dialogue script (webui/script.py) synthesised as one stream (torch-free).

    spec, steps = prepare_script(synthesis, asked, owner, chosen, lang)  # SynthesisError before any work
    with ScriptRun(synthesis, steps, spec) as run:
        for event in run:                    # Progress, Chunk, ..., then one Done or Failed
            ...
    run.pcm(), run.sample_rate, run.cues(), run.outcome

`prepare_script` parses the text, finds every voice it names among the owner's saved voices
(loaded once each; unknown names refused at once with their lines), asks for the chosen voice
(`chosen()`, e.g. a prompt recording the worker prepares) only when some text comes before any
voice tag, plans the lines and checks each line's spec, so a script that cannot run is refused
before the worker sees any of it.

`ScriptRun` looks like a `SynthesisRun` to its callers (request_id, iteration, pcm, sample_rate,
first_chunk_s, outcome, cues, close, cancel): each line is its own worker request with its voice's
prompt and mode and the request's seed and speed; up to `window` lines are in flight at once, so the
worker batches them, while the events come strictly in script order: the chunks of one line after
another (renumbered as one request), each pause as one chunk of zeros at the sample rate (a pause
before the first line waits for that line's first chunk, which brings the rate), one overall
`Progress("synthesis")`, and at the end one `Done` (the first line's worker stats, speech tokens and
audio summed over the lines) or the `Failed` of the first line that fails, after which no line runs. Closing it
cancels every line in flight; `cancel` does the same from another thread (the Stop button).
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.modes import ZERO_SHOT
from cosyvoice3.spec import SpeechSpec
from worker import protocol as P

from . import messages as M
from . import script as S
from .captions import Cue, Silence, Spoken, cues
from .synthesis import RunAudio, Synthesis, SynthesisError, SynthesisRun

WINDOW = 3  # lines in flight at once: batched by the worker, without one script filling its batch


@dataclass(frozen=True)
class ScriptVoice:
    """A voice a script speaks in: its name (for captions), its transcript ('' : cross-lingual)
    and its prompt features."""

    name: str
    text: str
    prompt: PreparedPrompt


def script_refusal(error: S.ScriptError, lang: str) -> SynthesisError:
    """A refused script as the synthesis routine's error (bad input, about the text)."""
    return SynthesisError(error.code, M.script_sentence(error.reason, error.params, lang), param="input")


def voice_finder(synthesis: Synthesis, owner: str | None, lang: str):
    """A `find` for `script.resolve_voices`: a name or id -> the owner's saved voice as a
    ScriptVoice (each loaded once), or None."""
    if owner is None:
        return lambda name: None
    find, loaded = S.library_finder(synthesis.voices, owner), {}

    def load(name: str) -> ScriptVoice | None:
        info = find(name)
        if info is None:
            return None
        if info.voice_id not in loaded:
            info, prompt = synthesis.saved_voice(owner, info.voice_id, lang)
            loaded[info.voice_id] = ScriptVoice(info.name, info.text, prompt)
        return loaded[info.voice_id]

    return load


def prepare_script(synthesis: Synthesis, asked: SpeechSpec, owner: str | None,
                   default: Callable[[], ScriptVoice] | None, lang: str = M.EN) -> tuple[SpeechSpec, tuple]:
    """(the request's spec checked as a whole: text length, seed, speed; the planned steps, each
    a (script.Synthesis with its checked line spec) or a script.Pause), or SynthesisError.
    `default()` gives the chosen voice (None: there is none); it is called once, after the script's
    own voices were found, and only when some text comes before any voice tag."""
    whole = synthesis.check(dataclasses.replace(asked, mode=ZERO_SHOT, prompt_text="", instruction=""), lang)
    try:
        items = S.resolve_voices(S.parse(asked.text), voice_finder(synthesis, owner, lang),
                                 _CHOSEN if default is not None else None)
    except S.ScriptError as e:
        raise script_refusal(e, lang) from None
    if any(isinstance(item, S.Speech) and item.voice is _CHOSEN for item in items):
        chosen = default()
        items = tuple(dataclasses.replace(item, voice=chosen) if isinstance(item, S.Speech) and item.voice is _CHOSEN
                      else item for item in items)
    steps = []
    for step in S.plan(items):
        if isinstance(step, S.Pause):
            steps.append(step)
            continue
        line = dataclasses.replace(whole, text=step.text, mode=step.mode, prompt_text=step.voice.text,
                                   instruction=step.instruction)
        try:
            steps.append((step, synthesis.check(line, lang)))
        except SynthesisError as e:
            raise SynthesisError(e.code, M.script_line(step.line, e.sentence, lang), e.problem, "input") from None
    return whole, tuple(steps)


_CHOSEN = ScriptVoice("", "", None)  # stands for the chosen voice until it is needed


class ScriptRun(RunAudio):
    """The lines of a prepared script as one request's events (see the module docstring)."""

    def __init__(self, synthesis: Synthesis, steps: tuple, spec: SpeechSpec, window: int = WINDOW):
        self.synthesis, self.steps, self.spec, self.window = synthesis, steps, spec, max(1, window)
        self.request_id = uuid.uuid4().hex
        self.started = time.perf_counter()
        self.parts: list[np.ndarray] = []
        self.captions: list[Spoken | Silence] = []
        self.sample_rate = 0
        self.first_chunk_s: float | None = None
        self.outcome: P.Done | P.Failed | None = None
        self._runs: dict[int, SynthesisRun] = {}  # step index -> its run, started, not yet followed to its end
        self._cancelled = False
        self._seq = 0

    # ------------------------------------------------------------------ the lines

    def _start_ahead(self, index: int) -> None:
        """Start the lines from step `index` on until `window` are in flight."""
        for i in range(index, len(self.steps)):
            if len(self._runs) >= self.window or self._cancelled:
                return
            if not isinstance(self.steps[i], S.Pause) and i not in self._runs:
                step, spec = self.steps[i]
                self._runs[i] = self.synthesis.start(spec, step.voice.prompt)

    def __iter__(self):
        lines = sum(1 for step in self.steps if not isinstance(step, S.Pause))
        done, waiting, stats = 0, [], {}
        for index, step in enumerate(self.steps):
            if isinstance(step, S.Pause):
                waiting.append(step)
                if self.sample_rate:
                    yield from self._silences(waiting)
                continue
            self._start_ahead(index)
            run = self._runs.get(index)
            if run is None:  # cancelled before this line started
                yield self._stopped()
                return
            try:
                for event in run:
                    if isinstance(event, P.Chunk):
                        self.sample_rate = self.sample_rate or int(event.sample_rate)
                        yield from self._silences(waiting)
                        yield self._chunk(event.pcm)
                    elif isinstance(event, P.Progress):
                        if event.stage == "synthesis":  # of the whole script
                            event = dataclasses.replace(event, fraction=(done + float(event.fraction)) / lines)
                        yield dataclasses.replace(event, request_id=self.request_id)
                    elif isinstance(event, P.Failed):
                        self.outcome = dataclasses.replace(event, request_id=self.request_id)
                        yield self.outcome
                        return
                    elif isinstance(event, P.Done):
                        stats = self._add_stats(stats, event.stats)
            finally:
                self._runs.pop(index, None)
                run.close()
            if run.outcome is None:  # closed from another thread mid-line
                yield self._stopped()
                return
            self.captions += run.spoken(step[0].voice.name)
            done += 1
        yield from self._silences(waiting)
        self.outcome = P.Done(self.request_id, dict(stats, audio_s=self.audio_s))
        yield self.outcome

    def _stopped(self) -> P.Failed:
        self.outcome = P.Failed(self.request_id, P.CANCELLED, "the script was stopped")
        return self.outcome

    def _chunk(self, pcm: np.ndarray) -> P.Chunk:
        if self.first_chunk_s is None:
            self.first_chunk_s = time.perf_counter() - self.started
        pcm = np.asarray(pcm, dtype=np.float32)
        self.parts.append(pcm)
        chunk = P.Chunk(self.request_id, self._seq, pcm, self.sample_rate)
        self._seq += 1
        return chunk

    def _silences(self, waiting: list[S.Pause]):
        """The waiting pauses as chunks of zeros (the sample rate is known)."""
        for pause in waiting:
            samples = pause.samples(self.sample_rate)
            self.captions.append(Silence(samples))
            yield self._chunk(np.zeros(samples, np.float32))
        waiting.clear()

    @staticmethod
    def _add_stats(total: dict, line: dict) -> dict:
        if not total:
            return dict(line)
        return dict(total, speech_tokens=int(total.get("speech_tokens") or 0) + int(line.get("speech_tokens") or 0))

    # ------------------------------------------------------------------ what came out

    def cues(self, voice: str | None = None) -> list[Cue]:
        """The captions of the lines so far: one cue per text segment in its line's voice (the
        argument, a plain run's voice, is not used: each line names its own)."""
        return cues(self.captions, self.sample_rate) if self.sample_rate else []

    # ------------------------------------------------------------------ stopping

    def cancel(self) -> None:
        """Cancel every line in flight, and start no more (safe from any thread)."""
        self._cancelled = True
        for run in list(self._runs.values()):
            run.cancel()

    def close(self) -> None:
        self._cancelled = True
        for run in list(self._runs.values()):
            run.close()
        self._runs.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
