"""What the page's events do: gather the form, hand it to the synthesis routine (synthesis.py),
turn its events into outputs.

`Handlers` holds the shared pieces (the synthesis routine with its worker client, voice library
and limits; the stream hub; the output folder); everything per visitor travels in `Session` (a
gr.State). Failures become one sentence from messages.py, shown with gr.Warning (the visitor can
fix it) or gr.Error (the engine failed), and written to the page; nothing here raises a traceback
to the browser. The Gradio API `/synthesize` goes through the same routine. The transcript box
fills itself through transcripts.py. A text with script tags runs as a dialogue script
(script_run.py); every finished audio gets its captions (SRT, WebVTT) beside it.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.spec import SpeechSpec
from worker import protocol as P

from . import messages as M
from . import script as S
from . import transcripts
from .access import owner_of, viewer_of
from .media import OutputFolder, file_digest
from .report import message_html, progress_html, stats_html
from .status import backend_summary, render_status
from .stream import StreamHub, StreamWriter
from .captions import to_srt, to_vtt
from .script import is_script
from .script_run import ScriptRun, ScriptVoice, prepare_script
from .synthesis import Synthesis, SynthesisError, SynthesisRun
from .takes import Takes, checked_takes, start_takes

log = logging.getLogger("webui")

RECORDING = "recording"  # the captions' voice name of a prompt recording that is not a saved voice
YIELD_EVERY_S = 0.25  # how often a generation refreshes its progress text
USER_ERRORS = (P.BAD_INPUT, P.TOO_LONG, P.OVERLOADED, P.CANCELLED)  # gr.Warning; the rest gr.Error
# What the generate handler updates, in the order of its outputs (webui/app.py wires them so).
GENERATE_OUTPUTS = ("audio", "downloads", "stats", "mode", "session", "notice", "keep_first", "status", "takes")


@dataclass
class Session:
    """One visitor's prepared prompt and the audio file it was made from (truncated: only its
    first max_prompt_seconds)."""

    prompt: PreparedPrompt | None = None
    audio_digest: str = ""
    truncated: bool = False


# The spec's fields (cosyvoice3.spec.SpeechSpec) the page sets with a component of their own, by
# their names; the instruction comes from the preset menu and the free-text box (GenerateForm.spec).
PAGE_SPEC_FIELDS = ("text", "mode", "prompt_text", "seed", "speed", "stream", "text_frontend")
# The page's own inputs of the generate event (the voice, the instruction's two boxes, the number of
# takes, the visitor's session, the id the page's script gives this press: the stream's id when
# streaming; last, as player.js sets the last input).
PAGE_FIELDS = ("prompt_audio", "voice", "preset", "custom_instruction", "takes", "session", "run_id")
GENERATE_INPUTS = PAGE_SPEC_FIELDS + PAGE_FIELDS  # the generate event's inputs (webui/app.py wires them so)


@dataclass
class GenerateForm:
    """What the page sends when Generate is pressed: the request as asked (`spec`) and the
    page's own inputs."""

    spec: SpeechSpec
    prompt_audio: str | None
    voice: str | None
    takes: int  # webui/takes.py: the same spec in this many seeds at once
    session: Session
    run_id: str

    @classmethod
    def of(cls, values) -> "GenerateForm":
        """From the generate event's input values, in the order of GENERATE_INPUTS; the free-text
        instruction wins over the preset."""
        named = dict(zip(GENERATE_INPUTS, values, strict=True))
        page = {name: named.pop(name) for name in PAGE_FIELDS}
        instruction = (page.pop("custom_instruction") or "").strip() or (page.pop("preset") or "")
        return cls(SpeechSpec(**named, instruction=instruction), **page)


def generate_update(**changes) -> tuple:
    """One update of the generate handler's outputs; the ones not named stay as they are."""
    unknown = set(changes) - set(GENERATE_OUTPUTS)
    if unknown:
        raise KeyError(f"not an output of generate: {sorted(unknown)}")
    return tuple(changes.get(name, gr.skip()) for name in GENERATE_OUTPUTS)


def running_notice(run: SynthesisRun, fraction: float, segments: int, lang: str) -> str:
    """The line under the progress bar: audio so far; for a text of several segments also the
    segment reached of how many and the time left, estimated from the pace so far."""
    if segments < 2 or fraction <= 0:
        return M.notice("generating", lang, audio=run.audio_s)
    left = round((time.perf_counter() - run.started) * (1 - fraction) / fraction)
    return M.notice("long_progress", lang, done=min(segments, int(fraction * segments) + 1), total=segments,
                    audio=run.audio_s, left=f"{left // 60}:{left % 60:02d}")


class Handlers:
    def __init__(self, synthesis: Synthesis, hub: StreamHub, files: OutputFolder):
        self.synthesis, self.hub, self.files = synthesis, hub, files
        self.client, self.voices, self.limits = synthesis.client, synthesis.voices, synthesis.limits
        # (viewer, run id of a Generate press) -> its run (the takes of a text, or a script's run)
        self._running: dict[tuple[str, str], Takes | ScriptRun] = {}

    # ------------------------------------------------------------------ prompt voice

    def prompt_changed(self, audio_path, request: gr.Request):
        """Prompt audio recorded, uploaded or cleared -> (session, notice, keep-first button, voice)."""
        return self._prompt_update(audio_path, M.language(request), truncate=False)

    def keep_first(self, audio_path, request: gr.Request):
        """The 'keep the first max_prompt_seconds' offer after a too-long prompt."""
        return self._prompt_update(audio_path, M.language(request), truncate=True)

    def _prompt_update(self, audio_path, lang: str, truncate: bool):
        if not audio_path:
            return Session(), M.notice("prompt_hint", lang), gr.update(visible=False), gr.skip()
        try:
            prompt = self.synthesis.prompt_from_file(audio_path, lang, truncate)
        except SynthesisError as e:
            gr.Warning(e.sentence)
            return Session(), f"⚠ {e.sentence}", gr.update(visible=e.problem == M.TOO_LONG), gr.skip()
        session = Session(prompt, file_digest(audio_path), truncate)
        ready = M.notice("prompt_ready", lang, used=prompt.duration_s)
        if truncate:
            ready = M.notice("prompt_cut", lang, limit=self.limits.max_prompt_seconds) + " " + ready
        return session, f"✓ {ready}", gr.update(visible=False), None

    def fill_transcript(self, audio_path, session: Session, request: gr.Request):
        """After the prompt changed: updates of (what the recogniser heard, the note under the
        transcript box while it loads, the note for what was heard); the page's script then
        places them (transcripts.place_js)."""
        yield from transcripts.fill(self.synthesis, audio_path, session.prompt is not None, session.truncated,
                                    M.language(request))

    def current_prompt(self, form: GenerateForm, lang: str, owner: str | None) -> tuple[PreparedPrompt, Session]:
        """The prompt to synthesise with: the prompt audio (prepared once per file) or one of the
        owner's saved voices, with the visitor's session; SynthesisError when there is none."""
        session = form.session
        if form.prompt_audio:
            digest = file_digest(form.prompt_audio)
            if session.prompt is not None and session.audio_digest == digest:
                return session.prompt, session
            prompt = self.synthesis.prompt_from_file(form.prompt_audio, lang)
            return prompt, Session(prompt, digest)
        if form.voice:
            return self.synthesis.saved_voice(owner, form.voice, lang)[1], session
        raise SynthesisError(P.BAD_INPUT, M.notice("need_prompt", lang))

    # ------------------------------------------------------------------ voice library

    def voice_choices(self, owner: str | None) -> list[tuple[str, str]]:
        """The owner's saved voices (none without an owner)."""
        voices = self.voices.list(owner) if owner else []
        return [(f"{v.name} ({v.duration_s:.1f} s)", v.voice_id) for v in voices]

    def refresh_voices(self, request: gr.Request):
        return gr.update(choices=self.voice_choices(owner_of(request)))

    def pick_voice(self, voice_id, request: gr.Request):
        """A saved voice was picked -> (prompt audio cleared, its transcript, notice, session, the
        automatic transcript: its transcript, which a new recording may replace)."""
        lang = M.language(request)
        if not voice_id:
            return gr.skip(), gr.skip(), "", gr.skip(), gr.skip()
        try:
            info, prompt = self.synthesis.saved_voice(owner_of(request), voice_id, lang)
        except SynthesisError as e:
            gr.Warning(e.sentence)
            return gr.skip(), gr.skip(), "", gr.skip(), gr.skip()
        notice = "✓ " + M.notice("voice_loaded", lang, name=info.name, used=prompt.duration_s)
        return None, info.text, notice, Session(), info.text

    def save_voice(self, name, prompt_text, voice_id, session: Session, request: gr.Request):
        """Save the current prompt (or re-save the picked voice) -> (voice dropdown, name box)."""
        lang, owner = M.language(request), owner_of(request)
        if owner is None:
            gr.Warning(M.notice("no_owner", lang))
            return gr.skip(), gr.skip()
        prompt = session.prompt
        if prompt is None and voice_id:
            try:
                prompt = self.voices.load(owner, voice_id)[1]
            except KeyError:
                prompt = None
        if prompt is None:
            gr.Warning(M.notice("nothing_to_save", lang))
            return gr.skip(), gr.skip()
        if not (name or "").strip():
            gr.Warning(M.notice("need_voice_name", lang))
            return gr.skip(), gr.skip()
        info = self.voices.save(owner, name, dataclasses.replace(prompt, text=(prompt_text or "").strip()))
        gr.Info(M.notice("voice_saved", lang, name=info.name))
        return gr.update(choices=self.voice_choices(owner), value=info.voice_id), ""

    def delete_voice(self, voice_id, request: gr.Request):
        lang, owner = M.language(request), owner_of(request)
        if not voice_id or owner is None:
            gr.Warning(M.notice("pick_voice_to_delete", lang))
            return gr.skip()
        names = {voice: label for label, voice in self.voice_choices(owner)}
        if self.voices.delete(owner, voice_id):
            gr.Info(M.notice("voice_deleted", lang, name=names.get(voice_id, voice_id)))
        return gr.update(choices=self.voice_choices(owner), value=None)

    # ------------------------------------------------------------------ generation

    def generate(self, request: gr.Request, *values):
        """Generator of updates of GENERATE_OUTPUTS (see `generate_update`); `values` are the
        generate event's inputs, in the order of GENERATE_INPUTS."""
        form = GenerateForm.of(values)
        viewer = viewer_of(request)
        stream = self.hub.open(form.run_id, viewer) if form.spec.stream and viewer else None  # None: no live playback
        try:
            yield from self._generate(form, M.language(request), owner_of(request), viewer, stream)
        finally:
            if stream is not None:
                stream.close()

    def stop(self, run_id, request: gr.Request) -> str:
        """The Stop button: cancel the worker request of that Generate press at once (Gradio
        cancels the generate event itself); returns what the stats area says now."""
        run = self._running.get((viewer_of(request) or "", run_id or ""))  # only the viewer's own run
        if run is not None:
            run.cancel()
        return message_html(M.notice("stopped", M.language(request)), "■")

    def _generate(self, form: GenerateForm, lang: str, owner: str | None, viewer: str | None,
                  stream: StreamWriter | None):
        try:
            n_takes = checked_takes(form.takes, lang)
            if is_script(form.spec.text):  # one take: each line has its own voice and mode
                (run, session), mode = self._script_run(form, lang, owner), gr.skip()
            else:
                spec = self.synthesis.check(form.spec, lang)
                prompt, session = self.current_prompt(form, lang, owner)
                if spec.mode != form.spec.mode:
                    gr.Info(M.notice("cross_lingual_auto", lang))
                run, mode = None, spec.mode
        except SynthesisError as e:
            gr.Warning(e.sentence)
            if not e.problem:  # the text, the mode, the instruction or a missing voice
                yield generate_update(stats=message_html(e.sentence, "⚠"))
                return
            yield generate_update(stats=message_html(e.sentence, "⚠"), session=Session(), notice=f"⚠ {e.sentence}",
                                  keep_first=gr.update(visible=e.problem == M.TOO_LONG))
            return
        yield generate_update(audio=None, downloads=gr.update(value=None, visible=False),
                              stats=progress_html(M.notice("queued", lang), None), mode=mode, session=session,
                              keep_first=gr.update(visible=False), takes=[])
        if run is None:
            run = start_takes(self.synthesis, spec, prompt, n_takes, lang)  # one take: the plain request
        key = (viewer or "", form.run_id or "")
        self._running[key] = run
        try:
            yield from self._follow(run, stream, lang, self._voice_name(form, owner))
        finally:
            self._running.pop(key, None)
            run.close()

    # ------------------------------------------------------------------ scripts and captions

    def _script_run(self, form: GenerateForm, lang: str, owner: str | None) -> tuple[ScriptRun, Session]:
        """A script's run (not started: its lines start when it is followed), checked whole before
        any work; the chosen voice, when there is one, speaks text before any voice tag."""
        sessions = [form.session]

        def chosen() -> ScriptVoice:  # prepared only when a line needs it, after the script's voices were found
            prompt, session = self.current_prompt(form, lang, owner)
            sessions.append(session)
            return ScriptVoice(self._voice_name(form, owner), form.spec.prompt_text or "", prompt)

        spec, steps = prepare_script(self.synthesis, form.spec, owner,
                                     chosen if form.prompt_audio or form.voice else None, lang)
        return ScriptRun(self.synthesis, steps, spec), sessions[-1]

    def _voice_name(self, form: GenerateForm, owner: str | None) -> str:
        """The chosen voice's name for captions: the saved voice's, else "recording"."""
        if owner and form.voice and not form.prompt_audio:
            return next((v.name for v in self.voices.list(owner) if v.voice_id == form.voice), RECORDING)
        return RECORDING

    def script_voices(self, request: gr.Request):
        """The names of the visitor's saved voices, for the script's voice menu."""
        owner = owner_of(request)
        return gr.update(choices=[v.name for v in self.voices.list(owner)] if owner else [])

    def script_preview(self, text, prompt_text, request: gr.Request):
        """The text changed -> (the script preview's rows: line, voice, mode, text; the note under
        it: why the script would be refused, with its lines). Reads the voice list, loads no voice."""
        lang, owner = M.language(request), owner_of(request)
        if not is_script(text or ""):
            return gr.update(value=[], visible=False), ""
        find = S.library_finder(self.voices, owner) if owner else (lambda name: None)
        chosen = ScriptVoice(M.notice("script_chosen_voice", lang), (prompt_text or "").strip(), None)
        try:
            items = S.resolve_voices(S.parse(text), find, chosen)
        except S.ScriptError as e:
            return gr.update(value=[], visible=False), f"⚠ {M.script_sentence(e.reason, e.params, lang)}"
        rows = [[step.line, M.notice("script_pause", lang), "", f"{step.seconds:g} s"] if isinstance(step, S.Pause)
                else [step.line, step.voice.name, step.mode, step.text] for step in S.plan(items)]
        return gr.update(value=rows, visible=True), ""

    def caption_files(self, run: SynthesisRun | ScriptRun, audio: Path, voice: str | None) -> list[Path]:
        """SRT and WebVTT files of a finished run, beside its audio file."""
        found = run.cues(voice)
        return [self.files.write_text(audio.with_suffix(".srt").name, to_srt(found)),
                self.files.write_text(audio.with_suffix(".vtt").name, to_vtt(found))]

    def _follow(self, job: Takes | ScriptRun, stream: StreamWriter | None, lang: str, voice: str):
        """The page's view of a generation: the audio of its first take (or of the script) to the
        stream hub as it comes, its progress (a long text: segments, audio so far, time left), the end."""
        run = job.first if isinstance(job, Takes) else job
        fraction, segments, last_yield = 0.0, 0, 0.0
        read = None  # the fraction of a long text read, shown until its audio starts
        running_text = M.notice("queued", lang)
        for event in run:
            if isinstance(event, P.Chunk):
                if stream is not None:
                    stream.push(event.pcm, event.sample_rate)
                read, running_text = None, running_notice(run, fraction, segments, lang)
            elif isinstance(event, P.Progress) and event.stage == "recovering":
                gr.Warning(M.notice("recovering", lang))
                yield generate_update(stats=message_html(M.notice("recovering", lang), "↻"),
                                      status=self.status_html(lang))
                continue
            elif isinstance(event, P.Progress):
                if event.stage == "synthesis":
                    fraction, segments = max(fraction, float(event.fraction)), event.segments
                    read, running_text = None, running_notice(run, fraction, segments, lang)
                elif event.stage == "reading":  # a long text, read a block at a time before its audio starts
                    read, running_text = float(event.fraction), M.notice("reading", lang)
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
                yield self._finished(job, lang, voice)
                return
            if time.perf_counter() - last_yield > YIELD_EVERY_S:
                last_yield = time.perf_counter()
                yield generate_update(stats=progress_html(running_text, fraction if read is None else read))

    def _finished(self, job: Takes | ScriptRun, lang: str, voice: str) -> tuple:
        """The last update: the full audio of the first take or the script (played now unless it
        was streamed), downloads with its captions, stats; with several takes, every take's audio
        and seed (`take_views`)."""
        run = job.first if isinstance(job, Takes) else job
        try:
            views = self.take_views(job, lang) if isinstance(job, Takes) and len(job.runs) > 1 else []
        except SynthesisError as e:
            gr.Warning(e.sentence)
            return generate_update(stats=message_html(e.sentence, "⚠"))
        pcm = run.pcm()
        audio = self.files.write(pcm, run.sample_rate)
        files = [str(path) for path in audio + self.caption_files(run, audio[0], voice)]
        worker = run.outcome.stats.get("worker") or {}  # the one that served it, of however many
        backend = backend_summary(worker.get("backends") or {}) or "?"
        device = " ".join(str(worker[k]) for k in ("device", "dtype") if worker.get(k))
        worker_first = run.outcome.stats.get("first_chunk_s")
        stats = stats_html(len(pcm) / run.sample_rate, time.perf_counter() - run.started, run.first_chunk_s,
                           float(worker_first) if worker_first is not None else None,
                           f"{backend} ({device})" if device else backend, lang)
        return generate_update(audio=gr.update(value=files[0], autoplay=not run.spec.stream),
                               downloads=gr.update(value=files, visible=True), stats=stats, takes=views)

    def take_views(self, takes: Takes, lang: str) -> list[dict]:
        """Every take followed to its end, as the page's takes row shows it: its seed, its wav, its
        label and the words of its "use this seed" button; SynthesisError when one failed."""
        views = []
        for n, (seed, pcm) in enumerate(takes.wait(lang), 1):
            path = self.files.write(pcm, takes.first.sample_rate, stem=f"take{n}-seed{seed}", formats=["wav"])[0]
            views.append({"seed": seed, "path": str(path), "label": M.notice("take_label", lang, n=n, seed=seed),
                          "use": M.notice("use_seed", lang, seed=seed)})
        return views

    # ------------------------------------------------------------------ API and status

    def api_synthesize(self, text, mode, prompt_audio, prompt_text, instruction, seed, speed,
                       request: gr.Request, text_frontend: bool = True) -> str:
        """gradio_client entry: (text, mode, prompt audio file, prompt text, instruction, seed, speed,
        text_frontend=True) -> path of a wav at the model's rate. Zero-shot without a prompt text transcribes the
        prompt (cross-lingual when the recogniser hears nothing). A dialogue script (webui/script.py)
        speaks its lines in the caller's saved voices; the prompt audio, when given, speaks text
        before any voice tag. Errors raise gr.Error with one sentence."""
        return str(self._api_audio(text, mode, prompt_audio, prompt_text, instruction, seed, speed, request,
                                   text_frontend)[0])

    def api_captioned(self, text, mode, prompt_audio, prompt_text, instruction, seed, speed,
                      request: gr.Request, text_frontend: bool = True) -> tuple[str, str, str]:
        """gradio_client entry, as /synthesize -> (the wav, its SRT, its WebVTT): one cue per text
        segment, in the voice that speaks it ("recording" for the prompt audio)."""
        return tuple(map(str, self._api_audio(text, mode, prompt_audio, prompt_text, instruction, seed, speed,
                                              request, text_frontend, captions=True)))

    def _api_audio(self, text, mode, prompt_audio, prompt_text, instruction, seed, speed, request: gr.Request,
                   text_frontend: bool, captions: bool = False) -> list[Path]:
        """The Gradio API's one run: its wav (and its captions' files); gr.Error with one sentence."""
        lang = M.language(request)
        try:
            asked = SpeechSpec(text or "", mode, prompt_text or "", instruction or "", seed, speed, stream=False,
                               text_frontend=text_frontend)
            if is_script(asked.text):
                run = self._api_script_run(asked, prompt_audio, owner_of(request), lang)
            else:
                run = self.synthesis.start(*self._api_request(asked, prompt_audio, lang))
            with run:
                pcm = run.wait(lang)
        except SynthesisError as e:
            raise gr.Error(e.sentence, print_exception=False) from None
        audio = self.files.write(pcm, run.sample_rate, stem="api", formats=["wav"])
        return audio + (self.caption_files(run, audio[0], RECORDING) if captions else [])

    def _api_script_run(self, asked: SpeechSpec, prompt_audio, owner: str | None, lang: str) -> ScriptRun:
        """A script through the Gradio API: the caller's saved voices; the prompt audio, when
        given, is the voice of text before any voice tag (transcribed unless its text is given)."""
        def chosen() -> ScriptVoice:
            prompt = self.synthesis.voice_from_file(prompt_audio, asked.prompt_text, lang)
            return ScriptVoice(RECORDING, prompt.text, prompt)

        spec, steps = prepare_script(self.synthesis, asked, owner, chosen if prompt_audio else None, lang)
        return ScriptRun(self.synthesis, steps, spec)

    def api_synthesize_takes(self, text, mode, prompt_audio, prompt_text, instruction, seed, speed, takes,
                             text_frontend, request: gr.Request) -> tuple[list[str], list[int]]:
        """gradio_client entry `/synthesize_takes`: /synthesize's inputs with the number of takes
        (1-4) before text_frontend -> (a wav per take, their seeds: take_seeds(seed, takes)),
        decoded in one batch."""
        lang = M.language(request)
        try:
            n = checked_takes(takes, lang)
            spec, prompt = self._api_request(SpeechSpec(text or "", mode, prompt_text or "", instruction or "", seed,
                                                        speed, stream=False, text_frontend=text_frontend),
                                             prompt_audio, lang)
            with start_takes(self.synthesis, spec, prompt, n, lang) as started:
                results, rate = started.wait(lang), started.first.sample_rate
        except SynthesisError as e:
            raise gr.Error(e.sentence, print_exception=False) from None
        files = [str(self.files.write(pcm, rate, stem=f"api-seed{seed}", formats=["wav"])[0]) for seed, pcm in results]
        return files, [seed for seed, _ in results]

    def _api_request(self, asked: SpeechSpec, prompt_audio, lang: str) -> tuple[SpeechSpec, PreparedPrompt]:
        """The Gradio API's request checked, with its prompt; zero-shot without a prompt text
        transcribes the prompt. SynthesisError."""
        spec = self.synthesis.check(asked, lang)
        if not prompt_audio:
            raise SynthesisError(P.BAD_INPUT, M.notice("need_prompt", lang))
        if asked.mode == P.ZERO_SHOT and not spec.prompt_text:
            prompt = self.synthesis.voice_from_file(prompt_audio, "", lang)
            return self.synthesis.check(dataclasses.replace(asked, prompt_text=prompt.text), lang), prompt
        return spec, self.synthesis.prompt_from_file(prompt_audio, lang)

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
