"""The page: `build_ui(synthesis, **options)` lays out the Blocks and wires its events to `Handlers`.

    blocks = build_ui(Synthesis(client, VoiceLibrary(voices_dir), limits))
    gr.mount_gradio_app(app, blocks, path="/", max_file_size=limits.max_upload_bytes)

The Blocks carries everything it needs (labels in two languages, its CSS, the streaming player
with its server function, the page helpers of page.js), so a plain `gr.mount_gradio_app` serves it.
Layout: the status panel on top (then "Open on your phone" when the app is reachable from the
network); the voice (prompt audio, transcript, saved voices) on the left; mode, instruction, text,
the script panel (tags, saved voices to insert, the preview of the lines), advanced settings,
Generate and the output (audio and captions to download) on the right. On a phone (style.css, below 700 px) one
column in the order of use: the voice, the text, Generate and the output first, then the mode and
settings, the saved voices, the status panel last. Small client-side jobs (character counter, dice, preset -> instruct mode, the note about
cross-lingual cloning, streaming playback) run as JavaScript without a server round trip.
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from cosyvoice3.modes import MAX_SEED, MAX_SPEED, MIN_SEED, MIN_SPEED
from worker import protocol as P

from . import messages as M
from .handlers import GENERATE_INPUTS, GENERATE_OUTPUTS, Handlers, Session, default_output_dir
from .i18n import page_i18n, t
from .lan import PhoneLink, panel_html
from .media import OutputFolder
from .player import streaming_player
from .presets import preset_choices
from .stream import StreamHub
from .synthesis import Synthesis
from .takes import MAX_TAKES, MIN_TAKES
from .transcripts import place_js

HERE = Path(__file__).parent
CSS = (HERE / "style.css").read_text(encoding="utf-8")
PAGE_JS = (HERE / "page.js").read_text(encoding="utf-8")
MIC_NOTE_HTML = ('<div id="cosyfast-mic-note" class="cf-mic-note" hidden>The microphone works only over HTTPS or '
                 'on localhost: start the app with --lan (or --ssl-certfile/--ssl-keyfile) to record from another computer '
                 'or a phone. '
                 '麦克风只能在 HTTPS 或本机地址下使用。</div>')


def build_ui(synthesis: Synthesis, *, output_dir: str | Path | None = None, concurrency: int = 8,
             max_queue: int = 64, status_every_s: float = 2.0, phone: PhoneLink | None = None) -> gr.Blocks:
    """The Gradio page, talking to the worker only through `synthesis` (its client, its voice
    library and the request limits, which the page states and checks: the same object the worker
    is booted with; its max_upload_bytes is these Blocks' upload limit, a mount's max_file_size
    overrides it).

    output_dir: finished audio for download (default: a temp folder, files kept an hour).
    concurrency / max_queue: Gradio's queue (generations followed at once, waiting at most).
    status_every_s: status refresh period.
    phone: the network URLs (webui/lan): shown with their QR code in an "Open on your phone" panel.
    """
    limits = synthesis.limits
    hub = StreamHub()
    handlers = Handlers(synthesis, hub, OutputFolder(output_dir or default_output_dir()))
    max_text_chars = limits.max_text_chars

    with gr.Blocks(title="CosyVoice3 · cosyfast", analytics_enabled=False, delete_cache=(3600, 7200)) as blocks:
        session = gr.State(Session())
        gr.Markdown(t("header"), elem_classes="cf-header")
        status = gr.HTML(label=t("status"), head=f"<style>{CSS}</style>", elem_id="cosyfast-status")
        if phone is not None and phone.urls:
            with gr.Accordion(t("phone"), open=False, elem_id="cosyfast-phone"):
                gr.HTML(panel_html(phone))

        with gr.Row(equal_height=False, elem_id="cosyfast-main"):
            with gr.Column(scale=1, min_width=300):
                prompt_audio = gr.Audio(sources=["microphone", "upload"], type="filepath",
                                        label=t("prompt_audio"), elem_id="cosyfast-prompt-audio")
                gr.HTML(MIC_NOTE_HTML, js_on_load=PAGE_JS, elem_id="cosyfast-mic-block")
                prompt_notice = gr.Markdown(t("prompt_audio_info"), elem_classes="cf-notice",
                                            elem_id="cosyfast-prompt-notice")
                keep_first = gr.Button(t("keep_first"), visible=False, size="sm", elem_id="cosyfast-keep-first")
                prompt_text = gr.Textbox(label=t("prompt_text"), placeholder=t("prompt_text_placeholder"),
                                         info=t("prompt_text_info"), lines=2, elem_id="cosyfast-prompt-text")
                transcript_note = gr.Markdown("", elem_classes="cf-notice", elem_id="cosyfast-transcript-note")
                heard = gr.Textbox(visible=False)  # what the recogniser heard in the prompt audio
                heard_note = gr.Textbox(visible=False)  # the note for it, shown once it is placed
                auto_transcript = gr.Textbox(visible=False)  # the automatic transcript last put into the box
                with gr.Accordion(t("voice_library"), open=False, elem_id="cosyfast-voice-library"):
                    voice = gr.Dropdown(choices=[], value=None, label=t("saved_voice"), info=t("saved_voice_info"))
                    voice_name = gr.Textbox(label=t("voice_name"), placeholder=t("voice_name_placeholder"))
                    with gr.Row():
                        save_voice = gr.Button(t("save_voice"), size="sm", min_width=100)
                        delete_voice = gr.Button(t("delete_voice"), size="sm", min_width=80)

            with gr.Column(scale=1, min_width=300):
                mode = gr.Radio(choices=[(t("mode_zero_shot"), P.ZERO_SHOT), (t("mode_cross_lingual"), P.CROSS_LINGUAL),
                                         (t("mode_instruct"), P.INSTRUCT)],
                                value=P.ZERO_SHOT, label=t("mode"), elem_id="cosyfast-mode")
                mode_note = gr.Markdown(t("cross_lingual_note"), elem_classes="cf-notice",
                                        elem_id="cosyfast-mode-note")
                gr.Markdown(t("mode_help"), elem_classes="cf-notice", elem_id="cosyfast-mode-help")
                with gr.Row(elem_id="cosyfast-instruction"):
                    preset = gr.Dropdown(choices=preset_choices(), value=None, label=t("instruction"),
                                         info=t("instruction_info"), min_width=200)
                    custom = gr.Textbox(label=t("custom_instruction"), info=t("custom_instruction_info"),
                                        placeholder=t("custom_instruction_placeholder"), min_width=200)
                text = gr.Textbox(label=t("text"), placeholder=t("text_placeholder"), lines=5,
                                  max_length=max_text_chars, elem_id="cosyfast-text")
                counter = gr.Markdown(f"0 / {max_text_chars}", elem_classes="cf-counter",
                                      elem_id="cosyfast-counter")
                script = _script_panel()
                with gr.Accordion(t("advanced"), open=False, elem_id="cosyfast-advanced"):
                    with gr.Row():
                        # the range is checked by Synthesis.check, with the sentence every entry gives
                        seed = gr.Number(value=0, precision=0, label=t("seed"), min_width=120,
                                         elem_id="cosyfast-seed")
                        dice = gr.Button(t("dice"), min_width=120)
                    takes = gr.Slider(MIN_TAKES, MAX_TAKES, value=MIN_TAKES, step=1, label=t("takes"),
                                      info=t("takes_info"), elem_id="cosyfast-takes-count")
                    speed = gr.Slider(MIN_SPEED, MAX_SPEED, value=1.0, step=0.05, label=t("speed"))
                    stream = gr.Checkbox(value=True, label=t("stream"))
                    text_frontend = gr.Checkbox(value=True, label=t("text_frontend"), info=t("text_frontend_info"))
                with gr.Row(elem_id="cosyfast-actions"):
                    generate = gr.Button(t("generate"), variant="primary", scale=3, min_width=120,
                                         elem_id="cosyfast-generate")
                    stop = gr.Button(t("stop"), variant="stop", scale=1, min_width=80, elem_id="cosyfast-stop")
                streaming_player(hub, elem_id="cosyfast-player")
                stats = gr.HTML(elem_classes="cf-stats", elem_id="cosyfast-stats")
                output_audio = gr.Audio(label=t("output_audio"), type="filepath", interactive=False,
                                        buttons=["download"], elem_id="cosyfast-output-audio")
                downloads = gr.File(label=t("downloads"), file_count="multiple", interactive=False,
                                    visible=False, elem_id="cosyfast-downloads")
                with gr.Column(elem_id="cosyfast-takes-area"):  # beside the output on a phone too
                    take_views = _takes_row(seed)
                run_id = gr.Textbox(visible=False)  # set by the page's JS for each press of Generate

        with gr.Column(visible=False):  # the /synthesize API's own inputs, not shown
            api_inputs = [gr.Textbox(label="text"), gr.Textbox(label="mode", value=P.ZERO_SHOT),
                          gr.Audio(type="filepath", label="prompt_audio"), gr.Textbox(label="prompt_text", value=""),
                          gr.Textbox(label="instruction", value=""), gr.Number(precision=0, label="seed", value=0),
                          gr.Number(label="speed", value=1.0), gr.Checkbox(label="text_frontend", value=True)]
            api_output = gr.Audio(type="filepath", format="wav", label="audio")
            api_button = gr.Button()
            api_captioned = gr.Button()  # /synthesize_captioned: the same inputs -> the wav, its SRT and WebVTT
            api_captioned_outputs = [gr.Audio(type="filepath", format="wav", label="audio"),
                                     gr.File(label="srt"), gr.File(label="vtt")]
            _takes_api(handlers, api_inputs)

        private = {"api_visibility": "private"}
        prompt_outputs = [session, prompt_notice, keep_first, voice]
        prompted = prompt_audio.input(handlers.prompt_changed, prompt_audio, prompt_outputs,
                                      show_progress_on=[prompt_notice], trigger_mode="always_last", **private)
        kept = keep_first.click(handlers.keep_first, prompt_audio, prompt_outputs,
                                show_progress_on=[prompt_notice], **private)
        for prepared in (prompted, kept):  # then the transcript box fills by itself, unless the visitor typed
            prepared.then(handlers.fill_transcript, [prompt_audio, session], [heard, transcript_note, heard_note],
                          show_progress_on=[transcript_note], **private).then(
                None, [heard, heard_note, prompt_text, auto_transcript],
                [prompt_text, auto_transcript, transcript_note], js=place_js())
        voice.input(handlers.pick_voice, voice, [prompt_audio, prompt_text, prompt_notice, session, auto_transcript],
                    **private)
        save_voice.click(handlers.save_voice, [voice_name, prompt_text, voice, session], [voice, voice_name],
                         **private)
        delete_voice.click(handlers.delete_voice, voice, voice, **private)

        dice.click(None, None, seed, js=f"() => {MIN_SEED} + Math.floor(Math.random() * {MAX_SEED - MIN_SEED + 1})")
        preset.input(None, [preset, mode], mode, js=f"(p, m) => p ? '{P.INSTRUCT}' : m")
        custom.input(None, [custom, mode], mode, js=f"(c, m) => (c || '').trim() ? '{P.INSTRUCT}' : m")
        gr.on([prompt_text.change, mode.change], None, [prompt_text, mode], mode_note, js=_cross_lingual_note_js())
        text.change(None, text, counter, js=f"(s) => `${{[...(s || '')].length}} / {max_text_chars}`")
        _wire_script_panel(handlers, script, text, prompt_text)

        form = {"text": text, "mode": mode, "prompt_audio": prompt_audio, "prompt_text": prompt_text, "voice": voice,
                "preset": preset, "custom_instruction": custom, "seed": seed, "speed": speed, "stream": stream,
                "text_frontend": text_frontend, "takes": takes, "session": session, "run_id": run_id}
        generate_inputs = [form[name] for name in GENERATE_INPUTS]
        generate_outputs = {"audio": output_audio, "downloads": downloads, "stats": stats, "mode": mode,
                            "session": session, "notice": prompt_notice, "keep_first": keep_first, "status": status,
                            "takes": take_views}
        running = generate.click(
            handlers.generate, generate_inputs, [generate_outputs[name] for name in GENERATE_OUTPUTS],
            js=f"(...args) => window.cosyfastPlayer.begin(args, {GENERATE_INPUTS.index('stream')})",
            show_progress="hidden", **private)
        running.then(None, js="() => window.cosyfastPlayer.eventEnded()")
        stop.click(handlers.stop, run_id, stats, js="() => [window.cosyfastPlayer.stop()]", cancels=[running],
                   queue=False, **private)
        api_button.click(handlers.api_synthesize, api_inputs, api_output, api_name="synthesize")
        api_captioned.click(handlers.api_captioned, api_inputs, api_captioned_outputs, api_name="synthesize_captioned")

        blocks.load(handlers.status, None, status, show_progress="hidden", queue=False, **private)
        blocks.load(handlers.refresh_voices, None, voice, show_progress="hidden", queue=False, **private)
        blocks.load(handlers.script_voices, None, script["voice"], show_progress="hidden", queue=False, **private)
        gr.Timer(status_every_s).tick(handlers.status, None, status, show_progress="hidden", queue=False,
                                      **private)

    blocks.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    blocks.i18n_instance = page_i18n(limits)  # kept by gr.mount_gradio_app unless it is given another
    blocks.max_file_size = limits.max_upload_bytes
    return blocks


SCRIPT_PREVIEW_HEADERS = ["#", "Voice 音色", "Mode 模式", "Text 文本"]


def _script_panel() -> dict:
    """The script help under the text box: the tags explained, the saved voices to insert at the
    cursor, the preview of the lines with their voices and the note of a refusal."""
    with gr.Accordion(t("script"), open=False, elem_id="cosyfast-script"):
        gr.Markdown(t("script_help"), elem_classes="cf-notice")
        voice = gr.Dropdown(choices=[], value=None, label=t("script_insert_voice"), elem_id="cosyfast-script-voice")
    note = gr.Markdown("", elem_classes="cf-notice", elem_id="cosyfast-script-note")
    preview = gr.Dataframe(headers=SCRIPT_PREVIEW_HEADERS, value=[], label=t("script_preview"), interactive=False,
                           visible=False, wrap=True, elem_id="cosyfast-script-preview")
    return {"voice": voice, "note": note, "preview": preview}


# JS: `[voice:NAME] ` put into the text box at its cursor (at the end when it has none)
INSERT_VOICE_JS = """(name, text) => {
  if (!name) return [text, null];
  const box = document.querySelector('#cosyfast-text textarea');
  text = text || '';
  const at = box && box.value === text ? box.selectionStart : text.length;
  return [text.slice(0, at) + `[voice:${name}] ` + text.slice(at), null];
}"""


def _wire_script_panel(handlers: Handlers, script: dict, text, prompt_text) -> None:
    private = {"api_visibility": "private"}
    script["voice"].input(None, [script["voice"], text], [text, script["voice"]], js=INSERT_VOICE_JS)
    gr.on([text.change, prompt_text.change], handlers.script_preview, [text, prompt_text],
          [script["preview"], script["note"]], trigger_mode="always_last", show_progress="hidden", queue=False,
          **private)
    # the saved voices' names, fresh each time the menu is opened (a voice may just have been saved)
    script["voice"].focus(handlers.script_voices, None, script["voice"], show_progress="hidden", queue=False,
                          **private)


def _takes_row(seed: gr.Number) -> gr.State:
    """The takes of the last Generate side by side (handlers.take_views: seed, wav, label), each
    with its player (download included) and a button that puts its seed into the seed field; the
    State it renders from is the generate event's `takes` output."""
    views = gr.State([])

    @gr.render(inputs=views)
    def show(shown: list[dict]):
        if not shown:
            return
        with gr.Row(elem_id="cosyfast-takes"):
            for n, view in enumerate(shown, 1):
                with gr.Column(min_width=160, elem_classes="cf-take"):
                    gr.Audio(view["path"], label=view["label"], type="filepath", interactive=False,
                             buttons=["download"], elem_id=f"cosyfast-take-{n}")
                    use = gr.Button(view["use"], size="sm", elem_id=f"cosyfast-use-seed-{n}")
                    use.click(None, None, seed, js=f"() => {int(view['seed'])}")
    return views


def _takes_api(handlers: Handlers, api_inputs: list) -> None:
    """The Gradio API's `/synthesize_takes` (not shown): /synthesize's inputs, the number of takes
    before text_frontend -> the takes' wavs and their seeds."""
    count = gr.Number(precision=0, label="takes", value=MIN_TAKES)
    files, seeds = gr.File(file_count="multiple", label="takes"), gr.JSON(label="seeds")
    inputs = api_inputs[:-1] + [count, api_inputs[-1]]
    gr.Button().click(handlers.api_synthesize_takes, inputs, [files, seeds], api_name="synthesize_takes")


def _cross_lingual_note_js() -> str:
    """JS: the note under Mode, shown while zero-shot is picked and the prompt text is empty."""
    return (f"(text, mode) => (mode === '{P.ZERO_SHOT}' && !(text || '').trim()) ? "
            f"{M.notice_js('cross_lingual_auto', 'ℹ')} : ''")
