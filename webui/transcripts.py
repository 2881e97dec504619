"""The page's transcript box filling by itself after a recording or an upload.

Once the prompt audio has been prepared as a voice, `fill` sends it to the worker's speech
recogniser (`Synthesis.transcribe`, the same audio the voice was made from: the first 30 s when
the visitor kept only those) and yields updates of (heard, progress, note): `progress` is the
line under the box while the recogniser is downloaded and loaded on its first use; `heard` (what
the recogniser heard) and `note` (the line for it: the detected language) go to hidden
components, placed together in the browser, so the line never speaks of a transcript the box does
not show. A prompt that could not be prepared (empty, silent, ...) is not sent: its notice
already says why, and `heard` is ''. A recogniser that cannot run leaves `heard` '' with a note
that says to type the transcript; synthesis does not depend on it.

Whether `heard` goes into the box is decided in the browser when it arrives (`place_js`), with
the box as it is at that moment: only an empty box, or one still holding the last automatic
transcript (a saved voice's transcript counts as one), takes it. Words the visitor typed stay,
even when typed while the recogniser was still downloading, and the note says so.
"""

from __future__ import annotations

import time

import gradio as gr

from worker import protocol as P

from . import messages as M
from .synthesis import Synthesis, SynthesisError

PROGRESS_EVERY_S = 0.25  # how often the note shows the recogniser's loading progress
# Progress stages of the recogniser's first use (worker/gpu/transcription.py) -> messages.py notices.
LOADING_STAGES = {"recognizer_download": "transcript_downloading", "recognizer": "transcript_loading"}


def place_js() -> str:
    """JS (heard, note, box, last automatic transcript) -> (box, last automatic transcript, note):
    the box takes what was heard unless it holds words the visitor typed; those stay, and the
    note says so when there was a transcript to put in their place."""
    return f"""(heard, note, box, auto) => {{
    const typed = (box || '').trim();
    if (typed && typed !== (auto || '').trim())
        return [box, auto, heard ? {M.notice_js("transcript_kept", "ℹ")} : ''];
    return [heard, heard, note];
}}"""


def fill(synthesis: Synthesis, audio_path: str | None, prepared: bool, truncate: bool, lang: str,
         progress_every_s: float = PROGRESS_EVERY_S):
    """Generator of (heard, progress, note) updates for the prompt at `audio_path`; `prepared`:
    whether it was accepted as a voice, `truncate`: whether only its first max_prompt_seconds were
    kept. The last update holds `heard` and `note`; the ones before it only `progress`."""
    if not (audio_path and prepared):
        yield "", gr.skip(), ""
        return
    try:
        audio, sample_rate = synthesis.prompt_audio(audio_path, lang, truncate)
    except SynthesisError:  # it was read a moment ago; a file gone meanwhile only means no transcript
        yield "", gr.skip(), ""
        return
    shown = 0.0
    with synthesis.transcribe(audio, sample_rate) as run:
        for event in run:
            if isinstance(event, P.Progress) and event.stage in LOADING_STAGES:
                if time.monotonic() - shown >= progress_every_s:
                    shown = time.monotonic()
                    note = M.notice(LOADING_STAGES[event.stage], lang, detail=M.first_line(event.message),
                                    percent=100 * event.fraction)
                    yield gr.skip(), "⏳ " + note, gr.skip()
    if run.transcript is None:
        yield "", gr.skip(), "⚠ " + M.notice("transcript_failed", lang)
    else:
        yield run.transcript.text, gr.skip(), describe(run.transcript, lang)


def describe(transcript: P.Transcript, lang: str) -> str:
    """The note under the transcript box for what the recogniser heard."""
    if not transcript.text:
        return "ℹ " + M.notice("transcript_none", lang)
    language = M.language_name(transcript.language, lang)
    note = (M.notice("transcript_filled", lang, language=language) if language
            else M.notice("transcript_filled_unknown", lang))
    if transcript.demo:
        note += " " + M.notice("transcript_demo", lang)
    return "✎ " + note
