"""What the page's events do: validate, build a protocol message, submit it, turn events into outputs.

`Handlers` holds the shared pieces (worker client, voice library, stream hub, output folder);
everything per visitor travels in `Session` (a gr.State). Failures become one sentence from
messages.py, shown with gr.Warning (the visitor can fix it) or gr.Error (the engine failed), and
written to the page; nothing here raises a traceback to the browser.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
import numpy as np

from cosyvoice3.errors import AudioDecodeError, BadInputError, EmptyTextError, TextTooLongError
from cosyvoice3.frontend.instructions import presets, resolve_instruction
from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.modes import Limits
from worker import protocol as P

from . import messages as M
from .media import OutputFolder, file_digest, read_prompt_audio
from .report import message_html, progress_html, stats_html
from .status import backend_summary, render_status
from .stream import StreamHub
from .voices import VoiceLibrary

log = logging.getLogger("webui")

YIELD_EVERY_S = 0.25  # how often a generation refreshes its progress text
USER_ERRORS = (P.BAD_INPUT, P.TOO_LONG, P.OVERLOADED, P.CANCELLED)  # gr.Warning; the rest gr.Error
# What the generate handler updates, in the order of its outputs (webui/app.py wires them so).
GENERATE_OUTPUTS = ("audio", "downloads", "stats", "mode", "session", "notice", "keep_first", "status")


@dataclass
class Session:
    """One visitor's prepared prompt and the audio file it was made from."""

    prompt: PreparedPrompt | None = None
    audio_digest: str = ""


@dataclass
class PromptResult:
    """A prepared prompt, or the sentence saying why there is none (`problem`: messages key)."""

    prompt: PreparedPrompt | None
    sentence: str = ""
    problem: str = ""


def generate_update(**changes) -> tuple:
    """One update of the generate handler's outputs; the ones not named stay as they are."""
    unknown = set(changes) - set(GENERATE_OUTPUTS)
    if unknown:
        raise KeyError(f"not an output of generate: {sorted(unknown)}")
    return tuple(changes.get(name, gr.skip()) for name in GENERATE_OUTPUTS)


def preset_choices() -> list[tuple[str, str]]:
    """Dropdown choices: ('广东话 · Cantonese', 'cantonese'), in the official order."""
    return [(f"{p.label_zh} · {p.label_en}", p.id) for p in presets()]


def instruction_text(value: str) -> str:
    """A preset id, a dropdown label, a preset's zh/en label or instruction, or free text -> the
    full instruction string ('' when empty)."""
    value = (value or "").strip()
    if not value:
        return ""
    for label, preset_id in preset_choices():
        if value == label:
            value = preset_id
    return resolve_instruction(value)


class Handlers:
    def __init__(self, client, voices: VoiceLibrary, hub: StreamHub, files: OutputFolder, limits: Limits):
        self.client, self.voices, self.hub, self.files, self.limits = client, voices, hub, files, limits
        self._running: dict[str, str] = {}  # the browser's run id of a Generate press -> request id

    # ------------------------------------------------------------------ prompt voice

    def prepare(self, audio_path: str, lang: str, truncate: bool = False) -> PromptResult:
        """Decode the prompt file here (no torch: cosyvoice3.frontend.audio) and let the worker prepare it."""
        try:
            audio, sample_rate = read_prompt_audio(audio_path)
        except AudioDecodeError:
            return PromptResult(None, M.prompt_sentence(M.UNREADABLE, lang), M.UNREADABLE)
        if truncate:
            audio = audio[: int(self.limits.max_prompt_seconds * sample_rate)]
        result = self.client.prepare_prompt(audio, sample_rate)
        if isinstance(result, P.Failed):
            if result.code in (P.BAD_INPUT, P.TOO_LONG):
                problem = M.prompt_problem(result.code, result.message)
                return PromptResult(None, M.prompt_sentence(problem, lang, self.limits.max_prompt_seconds, result.message), problem)
            return PromptResult(None, M.error_sentence(result.code, lang), result.code)
        if result is None:
            return PromptResult(None, M.error_sentence(P.INTERNAL, lang), P.INTERNAL)
        return PromptResult(result)

    def prompt_changed(self, audio_path, request: gr.Request):
        """Prompt audio recorded, uploaded or cleared -> (session, notice, keep-first button, voice)."""
        return self._prompt_update(audio_path, M.language(request), truncate=False)

    def keep_first(self, audio_path, request: gr.Request):
        """The 'keep the first 30 s' offer after a too-long prompt."""
        return self._prompt_update(audio_path, M.language(request), truncate=True)

    def _prompt_update(self, audio_path, lang: str, truncate: bool):
        if not audio_path:
            return Session(), M.notice("prompt_hint", lang), gr.update(visible=False), gr.skip()
        result = self.prepare(audio_path, lang, truncate)
        if result.prompt is None:
            gr.Warning(result.sentence)
            return Session(), f"⚠ {result.sentence}", gr.update(visible=result.problem == M.TOO_LONG), gr.skip()
        session = Session(result.prompt, file_digest(audio_path))
        ready = M.notice("prompt_ready", lang, used=result.prompt.duration_s)
        if truncate:
            ready = M.notice("prompt_cut", lang, limit=self.limits.max_prompt_seconds) + " " + ready
        return session, f"✓ {ready}", gr.update(visible=False), None

    def current_prompt(self, audio_path, voice_id, session: Session, lang: str) -> tuple[PromptResult, Session]:
        """The prompt to synthesise with: the prompt audio (prepared once per file) or a saved voice."""
        if audio_path:
            digest = file_digest(audio_path)
            if session.prompt is not None and session.audio_digest == digest:
                return PromptResult(session.prompt), session
            result = self.prepare(audio_path, lang)
            return result, (Session(result.prompt, digest) if result.prompt is not None else Session())
        if voice_id:
            try:
                _, prompt = self.voices.load(voice_id)
            except KeyError:
                return PromptResult(None, M.notice("voice_missing", lang), M.OTHER), session
            return PromptResult(prompt), session
        return PromptResult(None, M.notice("need_prompt", lang), M.OTHER), session

    # ------------------------------------------------------------------ voice library

    def voice_choices(self) -> list[tuple[str, str]]:
        return [(f"{v.name} ({v.duration_s:.1f} s)", v.voice_id) for v in self.voices.list()]

    def refresh_voices(self):
        return gr.update(choices=self.voice_choices())

    def pick_voice(self, voice_id, request: gr.Request):
        """A saved voice was picked -> (prompt audio cleared, its transcript, notice, session)."""
        lang = M.language(request)
        if not voice_id:
            return gr.skip(), gr.skip(), "", gr.skip()
        try:
            info, prompt = self.voices.load(voice_id)
        except KeyError:
            gr.Warning(M.notice("voice_missing", lang))
            return gr.skip(), gr.skip(), "", gr.skip()
        notice = "✓ " + M.notice("voice_loaded", lang, name=info.name, used=prompt.duration_s)
        return None, info.text, notice, Session()

    def save_voice(self, name, prompt_text, voice_id, session: Session, request: gr.Request):
        """Save the current prompt (or re-save the picked voice) -> (voice dropdown, name box)."""
        lang = M.language(request)
        prompt = session.prompt
        if prompt is None and voice_id:
            try:
                prompt = self.voices.load(voice_id)[1]
            except KeyError:
                prompt = None
        if prompt is None:
            gr.Warning(M.notice("nothing_to_save", lang))
            return gr.skip(), gr.skip()
        if not (name or "").strip():
            gr.Warning(M.notice("need_voice_name", lang))
            return gr.skip(), gr.skip()
        info = self.voices.save(name, dataclasses.replace(prompt, text=(prompt_text or "").strip()))
        gr.Info(M.notice("voice_saved", lang, name=info.name))
        return gr.update(choices=self.voice_choices(), value=info.voice_id), ""

    def delete_voice(self, voice_id, request: gr.Request):
        lang = M.language(request)
        if not voice_id:
            gr.Warning(M.notice("pick_voice_to_delete", lang))
            return gr.skip()
        names = {voice: label for label, voice in self.voice_choices()}
        if self.voices.delete(voice_id):
            gr.Info(M.notice("voice_deleted", lang, name=names.get(voice_id, voice_id)))
        return gr.update(choices=self.voice_choices(), value=None)

    # ------------------------------------------------------------------ generation

    def generate(self, text, mode, audio_path, prompt_text, voice_id, preset_id, custom_instruction, seed, speed,
                 stream, session: Session, run_id, request: gr.Request):
        """Generator of updates of GENERATE_OUTPUTS (see `generate_update`).

        run_id: the id the page gave this press of Generate; the stream's id when streaming.
        """
        try:
            yield from self._generate(text, mode, audio_path, prompt_text, voice_id, preset_id, custom_instruction,
                                      seed, speed, bool(stream), session, run_id or "", M.language(request))
        finally:
            if stream:
                self.hub.close(run_id or "")

    def stop(self, run_id, request: gr.Request) -> str:
        """The Stop button: cancel the worker request of that Generate press at once (Gradio
        cancels the generate event itself); returns what the stats area says now."""
        request_id = self._running.get(run_id or "")
        if request_id:
            self.client.cancel(request_id)
        return message_html(M.notice("stopped", M.language(request)), "■")

    def _generate(self, text, mode, audio_path, prompt_text, voice_id, preset_id, custom_instruction, seed,
                  speed, stream, session, run_id, lang):
        text = (text or "").strip()
        problem = self._text_problem(text, lang)
        if problem:
            gr.Warning(problem)
            yield generate_update(stats=message_html(problem, "⚠"))
            return
        found, session = self.current_prompt(audio_path, voice_id, session, lang)
        if found.prompt is None:
            gr.Warning(found.sentence)
            yield generate_update(stats=message_html(found.sentence, "⚠"), session=session,
                                  notice=f"⚠ {found.sentence}",
                                  keep_first=gr.update(visible=found.problem == M.TOO_LONG))
            return
        prompt_text = (prompt_text or "").strip()
        mode = mode if mode in P.MODES else P.ZERO_SHOT
        if mode == P.ZERO_SHOT and not prompt_text:
            mode = P.CROSS_LINGUAL
            gr.Info(M.notice("cross_lingual_auto", lang))
        instruction = ""
        if mode == P.INSTRUCT:
            instruction, problem = self._instruction(custom_instruction, preset_id, lang)
            if problem:
                gr.Warning(problem)
                yield generate_update(stats=message_html(problem, "⚠"), session=session)
                return
        msg = P.Synthesize(request_id=uuid.uuid4().hex, text=text, mode=mode,
                           prompt=dataclasses.replace(found.prompt, text=prompt_text), prompt_text=prompt_text,
                           instruction=instruction, seed=int(seed or 0), speed=float(speed or 1.0), stream=stream)
        yield from self._run(msg, run_id, lang, session)

    def _instruction(self, custom: str, preset_id: str, lang: str) -> tuple[str, str]:
        """(the full instruction string, '') from the free text or else the preset, or ('', the
        sentence saying what is missing or wrong)."""
        try:
            instruction = instruction_text(custom) or instruction_text(preset_id)
        except BadInputError as e:
            return "", f"{M.notice('need_instruction', lang)} ({e})"
        return (instruction, "") if instruction else ("", M.notice("need_instruction", lang))

    def _text_problem(self, text: str, lang: str) -> str:
        try:
            self.limits.check_text(text)
        except EmptyTextError:
            return M.notice("need_text", lang)
        except TextTooLongError:
            return M.notice("text_too_long", lang, n=len(text), limit=self.limits.max_text_chars)
        return ""

    def _run(self, msg: P.Synthesize, run_id: str, lang: str, session: Session):
        """Submit and follow one synthesis; audio goes to the stream hub as it comes."""
        start = time.perf_counter()
        first_chunk_s, parts, sample_rate, fraction, last_yield = None, [], 24000, 0.0, 0.0
        running_text = M.notice("queued", lang)
        yield generate_update(audio=None, downloads=gr.update(value=None, visible=False),
                      stats=progress_html(running_text, None), mode=msg.mode, session=session,
                      keep_first=gr.update(visible=False))
        events = self.client.submit(msg)
        self._running[run_id] = msg.request_id
        try:
            for event in events:
                if isinstance(event, P.Chunk):
                    first_chunk_s = time.perf_counter() - start if first_chunk_s is None else first_chunk_s
                    sample_rate = event.sample_rate
                    parts.append(np.asarray(event.pcm, dtype=np.float32))
                    if msg.stream:
                        self.hub.push(run_id, event.pcm, event.sample_rate)
                    running_text = M.notice("generating", lang, audio=sum(map(len, parts)) / sample_rate)
                elif isinstance(event, P.Progress) and event.stage == "recovering":
                    gr.Warning(M.notice("recovering", lang))
                    yield generate_update(stats=message_html(M.notice("recovering", lang), "↻"),
                                          status=self.status_html(lang))
                    continue
                elif isinstance(event, P.Progress):
                    if event.stage == "synthesis":
                        fraction = max(fraction, float(event.fraction))
                    elif event.stage not in ("started", "retrying"):  # the worker is loading or building engines
                        fraction, running_text = float(event.fraction), f"{event.stage}: {event.message}"
                elif isinstance(event, P.Failed):
                    sentence = M.error_sentence(event.code, lang, event.message)
                    yield generate_update(stats=message_html(sentence, "⚠"))
                    if event.code in USER_ERRORS:
                        gr.Warning(sentence)
                        return
                    raise gr.Error(sentence, print_exception=False)
                elif isinstance(event, P.Done):
                    yield self._finished(parts, sample_rate, time.perf_counter() - start, first_chunk_s, event.stats,
                                         msg.stream, lang)
                    return
                if time.perf_counter() - last_yield > YIELD_EVERY_S:
                    last_yield = time.perf_counter()
                    yield generate_update(stats=progress_html(running_text, fraction))
        finally:
            self._running.pop(run_id, None)
            events.close()

    def _finished(self, parts: list[np.ndarray], sample_rate: int, wall_s: float, first_chunk_s: float | None,
                  worker_stats: dict, streamed: bool, lang: str) -> tuple:
        """The last update: the full audio (played now unless it was streamed), downloads, stats."""
        pcm = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if not len(pcm):
            return generate_update(stats=message_html(M.error_sentence(P.INTERNAL, lang), "⚠"))
        files = [str(path) for path in self.files.write(pcm, sample_rate)]
        worker = self._health().get("worker") or {}
        backend = backend_summary(worker.get("backends") or {}) or "?"
        device = " ".join(str(worker[k]) for k in ("device", "dtype") if worker.get(k))
        worker_first = worker_stats.get("first_chunk_s")
        stats = stats_html(len(pcm) / sample_rate, wall_s, first_chunk_s,
                           float(worker_first) if worker_first is not None else None,
                           f"{backend} ({device})" if device else backend, lang)
        return generate_update(audio=gr.update(value=files[0], autoplay=not streamed),
                       downloads=gr.update(value=files, visible=True), stats=stats)

    # ------------------------------------------------------------------ API and status

    def api_synthesize(self, text, mode, prompt_audio, prompt_text, instruction, seed, speed,
                       request: gr.Request) -> str:
        """gradio_client entry: (text, mode, prompt audio file, prompt text, instruction, seed, speed)
        -> path of a 24 kHz wav. Errors raise gr.Error with one sentence."""
        lang = M.language(request)
        text = (text or "").strip()
        problem = self._text_problem(text, lang)
        if problem:
            raise gr.Error(problem, print_exception=False)
        if mode not in P.MODES:
            raise gr.Error(f"mode must be one of {', '.join(P.MODES)}", print_exception=False)
        if mode == P.INSTRUCT:
            instruction, problem = self._instruction(instruction, "", lang)
            if problem:
                raise gr.Error(problem, print_exception=False)
        else:
            instruction = ""
        if not prompt_audio:
            raise gr.Error(M.notice("need_prompt", lang), print_exception=False)
        found = self.prepare(prompt_audio, lang)
        if found.prompt is None:
            raise gr.Error(found.sentence, print_exception=False)
        prompt_text = (prompt_text or "").strip()
        msg = P.Synthesize(request_id=uuid.uuid4().hex, text=text, mode=mode,
                           prompt=dataclasses.replace(found.prompt, text=prompt_text), prompt_text=prompt_text,
                           instruction=instruction, seed=int(seed or 0), speed=float(speed or 1.0), stream=False)
        parts, sample_rate = [], 24000
        with self.client.submit(msg) as events:
            for event in events:
                if isinstance(event, P.Chunk):
                    parts.append(np.asarray(event.pcm, dtype=np.float32))
                    sample_rate = event.sample_rate
                elif isinstance(event, P.Failed):
                    raise gr.Error(M.error_sentence(event.code, lang, event.message), print_exception=False)
        pcm = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if not len(pcm):
            raise gr.Error(M.error_sentence(P.INTERNAL, lang), print_exception=False)
        return str(self.files.write(pcm, sample_rate, stem="api", formats=["wav"])[0])

    def status(self, request: gr.Request) -> str:
        return self.status_html(M.language(request))

    def status_html(self, lang: str) -> str:
        return render_status(self._health(), lang)

    def _health(self) -> dict:
        try:
            return self.client.health()
        except Exception:  # the status panel must never take the page down
            log.exception("the worker client did not answer health(); the status panel says so")
            return {}


def default_output_dir() -> Path:
    return Path(tempfile.gettempdir()) / "cosyfast-outputs"
