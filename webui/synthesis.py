"""The one synthesis routine of the web process, shared by the page, the Gradio API
(`/synthesize`) and the OpenAI-compatible API: check a request once, turn a prompt file or a saved
voice into prompt features, put the checked spec (`cosyvoice3.spec.SpeechSpec`, which each entry
builds from its own input shape) into one `Synthesize` envelope and follow its events once.

    synthesis = Synthesis(client, voices, limits)
    spec = synthesis.check(SpeechSpec(text, mode=..., prompt_text=..., instruction=...), lang)
    prompt = synthesis.prompt_from_file(path, lang)      # or synthesis.saved_voice(owner, voice_id, lang)
    prompt = synthesis.voice_from_file(path, "", lang)   # with the recogniser's transcript as its text
    with synthesis.start(spec, prompt) as run:
        for event in run:                                 # Progress, Chunk, ..., then Done or Failed
            ...
    run.pcm(), run.sample_rate, run.first_chunk_s, run.outcome

What a caller can get wrong, and a request that fails, raise `SynthesisError`: a code (a protocol
error code, or `VOICE_NOT_FOUND`) and one sentence in the caller's language from messages.py.
The limits are the app's one `Limits` object; the sample rate is the one the chunks carry.

A prompt's transcript, when the caller gives none, comes from the worker's speech recogniser
(`transcribe`: its events, for the page's progress; `heard`: just the text). Transcription runs
only on audio the prompt checks accepted, so an empty or silent prompt keeps its sentence, and a
recogniser that cannot run means no transcript (cross-lingual cloning), never a failed request.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from pathlib import Path

import numpy as np

from cosyvoice3.errors import BadInputError, TooLongError
from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.modes import Limits
from cosyvoice3.spec import SpeechSpec, check_spec
from worker import protocol as P

from . import messages as M
from .captions import Cue, Spoken, cues
from .media import read_prompt_audio
from .voices import VoiceInfo, VoiceLibrary

log = logging.getLogger("webui")

VOICE_NOT_FOUND = "voice_not_found"  # not a worker error: the web process's own


class SynthesisError(Exception):
    """Why a request did not start or did not finish. `code`: a protocol error code (bad_input,
    too_long, overloaded, ...) or VOICE_NOT_FOUND; `sentence`: what to tell the caller; `problem`:
    what is wrong with the prompt audio (a messages.PROMPT_PROBLEMS key) when that is the cause;
    `param`: the request field at fault, when one is."""

    def __init__(self, code: str, sentence: str, problem: str = "", param: str = ""):
        super().__init__(sentence)
        self.code, self.sentence, self.problem, self.param = code, sentence, problem, param

    @classmethod
    def of(cls, failed: P.Failed, lang: str) -> "SynthesisError":
        return cls(failed.code, M.error_sentence(failed.code, lang, failed.message))


class _Followed:
    """A submitted request's event stream (`_events`); closing it before the end cancels the
    request."""

    def close(self) -> None:
        self._events.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RunAudio:
    """What a run's audio so far is: `parts` (float32 chunks) at `sample_rate` (0 before the
    first chunk); iterating the run follows it (its events end with one Done or Failed)."""

    parts: list[np.ndarray]
    sample_rate: int

    @property
    def samples(self) -> int:
        return sum(map(len, self.parts))

    @property
    def audio_s(self) -> float:
        return self.samples / self.sample_rate if self.sample_rate else 0.0

    def pcm(self) -> np.ndarray:
        """All audio so far, float32 (N,) at `sample_rate`."""
        return np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)

    def wait(self, lang: str = M.EN) -> np.ndarray:
        """Follow the run to its end; the whole audio, or SynthesisError."""
        for event in self:
            if isinstance(event, P.Failed):
                raise SynthesisError.of(event, lang)
        return self.pcm()


class SynthesisRun(_Followed, RunAudio):
    """One submitted request followed to its end. Iterating it gives the worker's events (a
    `Done` without any audio is turned into a `Failed`); it keeps the audio of every chunk, the
    text and samples of each text segment (its captions), the first chunk's latency and the final
    event. Closing it before the end cancels the request; `cancel` does so from another thread."""

    def __init__(self, client, msg: P.Synthesize):
        self.msg = msg
        self.started = time.perf_counter()
        self.parts: list[np.ndarray] = []
        self.segments: dict[int, list] = {}  # text segment -> [its text, its samples so far], in order
        self.sample_rate = 0  # from the first chunk
        self.first_chunk_s: float | None = None
        self.outcome: P.Done | P.Failed | None = None
        self._client = client
        self._events = client.submit(msg)

    @property
    def request_id(self) -> str:
        return self.msg.request_id

    @property
    def spec(self) -> SpeechSpec:
        return self.msg.spec

    def cancel(self) -> None:
        """Cancel the request in the worker (safe from any thread; its events end with a Failed)."""
        self._client.cancel(self.request_id)

    def spoken(self, voice: str | None) -> list[Spoken]:
        """The audio so far as caption parts: each text segment's text and samples, in `voice`."""
        return [Spoken(text, voice, samples) for text, samples in self.segments.values()]

    def cues(self, voice: str | None) -> list[Cue]:
        """The captions of the audio so far (one cue per text segment), spoken in `voice`."""
        return cues(self.spoken(voice), self.sample_rate) if self.sample_rate else []

    def __iter__(self):
        for event in self._events:
            if isinstance(event, P.Chunk):
                if self.first_chunk_s is None:
                    self.first_chunk_s = time.perf_counter() - self.started
                self.sample_rate = int(event.sample_rate)
                self.parts.append(np.asarray(event.pcm, dtype=np.float32))
                segment = self.segments.setdefault(event.segment, ["", 0])
                segment[0] = event.text or segment[0]
                segment[1] += len(event.pcm)
            elif isinstance(event, P.Done) and not self.parts:
                event = P.Failed(event.request_id, P.INTERNAL, "the model gave no audio")
            if isinstance(event, (P.Done, P.Failed)):
                self.outcome = event
            yield event



class TranscriptRun(_Followed):
    """One `Transcribe` request followed to its end. Iterating it gives the worker's events
    (Progress while the recogniser is downloaded or loaded on its first use, the `Transcript`,
    then Done or Failed); afterwards `transcript` is what was heard, or None when the recogniser
    could not run (`failure` says why; it is logged). Closing it before the end cancels it."""

    def __init__(self, client, audio: np.ndarray, sample_rate: int):
        self.transcript: P.Transcript | None = None
        self.failure: P.Failed | None = None
        self._events = client.submit(P.Transcribe("", np.asarray(audio, dtype=np.float32), int(sample_rate)))

    def __iter__(self):
        for event in self._events:
            if isinstance(event, P.Transcript):
                self.transcript = event
            elif isinstance(event, P.Failed):
                self.failure = event
                log.warning("no automatic transcript (%s): %s", event.code, M.first_line(event.message))
            yield event

    def text(self) -> str:
        """Follow the request to its end: the transcript's text, '' when there is none."""
        for _ in self:
            pass
        return self.transcript.text if self.transcript is not None else ""


class Synthesis:
    """The checks, prompt preparation and message of a request, by the app's one `Limits`."""

    def __init__(self, client, voices: VoiceLibrary, limits: Limits):
        self.client, self.voices, self.limits = client, voices, limits

    # ------------------------------------------------------------------ the request

    def check(self, spec: SpeechSpec, lang: str = M.EN) -> SpeechSpec:
        """`spec` checked and resolved by its one validator (`cosyvoice3.spec.check_spec`), or
        SynthesisError with the sentence of the rule that refused it."""
        try:
            return check_spec(spec, self.limits)
        except BadInputError as e:
            raise SynthesisError(e.code, M.refusal_sentence(e.reason, e.params, lang, str(e)),
                                 param=M.REFUSED_FIELDS.get(e.reason, "")) from None

    def message(self, spec: SpeechSpec, prompt: PreparedPrompt) -> P.Synthesize:
        """The worker request of a checked `spec` spoken with `prompt` (its transcript travels once,
        as spec.prompt_text)."""
        return P.Synthesize(uuid.uuid4().hex, spec, prompt=dataclasses.replace(prompt, text=""))

    def start(self, spec: SpeechSpec, prompt: PreparedPrompt) -> SynthesisRun:
        """Submit the request (a full queue answers at once, as the run's only event)."""
        return SynthesisRun(self.client, self.message(spec, prompt))

    # ------------------------------------------------------------------ the voice

    def prompt_from_file(self, path: str | Path, lang: str = M.EN, truncate: bool = False) -> PreparedPrompt:
        """Prompt features of an audio file (decoded here, prepared by the worker), or
        SynthesisError. truncate: keep the first max_prompt_seconds of a longer recording."""
        return self.prepare(*self.prompt_audio(path, lang, truncate), lang)

    def voice_from_file(self, path: str | Path, transcript: str = "", lang: str = M.EN) -> PreparedPrompt:
        """Prompt features of an audio file with its transcript: `transcript` when given, else
        what the recogniser hears (see `heard`). SynthesisError as for prompt_from_file."""
        audio, sample_rate = self.prompt_audio(path, lang)
        prompt = self.prepare(audio, sample_rate, lang)
        return dataclasses.replace(prompt, text=transcript.strip() or self.heard(audio, sample_rate))

    def prompt_audio(self, path: str | Path, lang: str = M.EN, truncate: bool = False) -> tuple[np.ndarray, int]:
        """A prompt file decoded (upload size and decoding checked; truncate: its first
        max_prompt_seconds), or SynthesisError."""
        try:
            self.limits.check_upload_bytes(Path(path).stat().st_size)
        except TooLongError as e:
            raise SynthesisError(P.TOO_LONG, M.notice("file_too_large", lang, detail=e), M.OTHER) from None
        except (BadInputError, OSError):
            raise self._prompt_error(M.UNREADABLE, P.BAD_INPUT, lang) from None
        try:  # never decodes more than the prompt limit, whatever the file holds
            audio, sample_rate = read_prompt_audio(path, self.limits.max_prompt_seconds, truncate,
                                                   self.limits.max_upload_bytes)
        except BadInputError as e:  # too long, unreadable, or e.g. a sample rate above the decoder's maximum
            raise self._prompt_error(M.prompt_problem(e.reason), e.code, lang, str(e)) from None
        return audio, sample_rate

    def prepare(self, audio: np.ndarray, sample_rate: int, lang: str = M.EN) -> PreparedPrompt:
        """Prompt features of decoded prompt audio, made by the worker (its length, silence and
        level checks), or SynthesisError."""
        result = self.client.prepare_prompt(audio, sample_rate)
        if isinstance(result, P.Failed):
            if result.code in (P.BAD_INPUT, P.TOO_LONG):
                raise self._prompt_error(M.prompt_problem(result.reason), result.code, lang, result.message)
            raise SynthesisError.of(result, lang)
        if result is None:
            raise SynthesisError(P.INTERNAL, M.error_sentence(P.INTERNAL, lang))
        return result

    # ------------------------------------------------------------------ the transcript

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> "TranscriptRun":
        """Ask the worker's speech recogniser for the transcript of prompt audio."""
        return TranscriptRun(self.client, audio, sample_rate)

    def heard(self, audio: np.ndarray, sample_rate: int) -> str:
        """What the recogniser hears in prompt audio, or '' when it hears no speech or cannot run
        (switched off, not downloadable, failed): the voice then clones cross-lingually, and
        synthesis does not depend on the recogniser. Call it after `prepare` accepted the audio,
        so an empty or silent prompt has already been refused with its sentence."""
        with self.transcribe(audio, sample_rate) as run:
            return run.text()

    def _prompt_error(self, problem: str, code: str, lang: str, detail: str = "") -> SynthesisError:
        return SynthesisError(code, M.prompt_sentence(problem, lang, self.limits.max_prompt_seconds, detail), problem)

    def saved_voice(self, owner: str | None, voice_id: str, lang: str = M.EN) -> tuple[VoiceInfo, PreparedPrompt]:
        """One of `owner`'s saved voices by its id, or SynthesisError(VOICE_NOT_FOUND) (also for
        another owner's voice, and without an owner)."""
        try:
            if owner is None:
                raise KeyError(voice_id)
            return self.voices.load(owner, voice_id)
        except KeyError:
            raise SynthesisError(VOICE_NOT_FOUND, M.notice("voice_missing", lang)) from None
