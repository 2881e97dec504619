"""The page's handlers against the real worker process running the demo model (no browser)."""

import base64
import html
import re
import threading
import time

import gradio as gr
import numpy as np
import pytest
import soundfile as sf

from tests.async_util import run_coroutine
from tests.test_captions import read_srt, read_vtt
from tests.envelopes import SPEC_DEFAULTS
from cosyvoice3.modes import Limits
from tests.browser.audio_samples import write_samples
from webui import messages as M
from webui.handlers import GENERATE_INPUTS, GENERATE_OUTPUTS, Handlers, Session
from webui.media import OutputFolder
from cosyvoice3.frontend.instructions import resolve_instruction
from webui.presets import preset_choices
from webui.access import OWNER_COOKIE
from webui.stream import StreamHub
from webui.synthesis import Synthesis, SynthesisError
from webui.voices import VoiceLibrary
from worker import protocol as P
from worker.client import WorkerClient
from worker.supervisor import Supervisor, SupervisorConfig

BROWSER = "5e0c3b1e0f00a57b9a438d6c3b1e0f00"  # the page's owner cookie (access.py)
OWNER = f"browser:{BROWSER}"
EN = gr.Request(headers={"accept-language": "en-US,en;q=0.9"}, cookies={OWNER_COOKIE: BROWSER})
ZH = gr.Request(headers={"accept-language": "zh-CN,zh;q=0.9"}, cookies={OWNER_COOKIE: BROWSER})
OTHER_BROWSER = gr.Request(headers={"accept-language": "en-US"}, cookies={OWNER_COOKIE: "f" * 32})
RUN_ID = "0b5e3c0e11114a579a438d6c3b1e0f00"
LIMITS = Limits(max_text_chars=200)
SHORT = "Hi."  # the demo model never stops by itself: it speaks 20 tokens per text token


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("audio"))


@pytest.fixture(scope="module")
def client(demo_model_dir):
    config = SupervisorConfig(worker=P.WorkerConfig(model_dir=str(demo_model_dir), device="cpu", backend="torch",
                                                    limits=LIMITS))
    supervisor = Supervisor(config)
    supervisor.start()
    client = WorkerClient(supervisor)
    assert client.wait_ready(120), client.health()
    yield client
    supervisor.stop()


@pytest.fixture
def handlers(client, tmp_path):
    return Handlers(Synthesis(client, VoiceLibrary(tmp_path / "voices"), LIMITS), StreamHub(),
                    OutputFolder(tmp_path / "out"))


def run_generate(handlers, session=None, run_id=RUN_ID, request=EN, **fields):
    """Drive the generate handler like Gradio does; returns the list of yielded output tuples."""
    args = dict(SPEC_DEFAULTS, text=SHORT, mode=P.ZERO_SHOT, prompt_audio=None, prompt_text="", voice=None,
                preset=None, custom_instruction="", seed=7, speed=1.0, stream=True, takes=1)
    values = {**args, **fields, "session": session or Session(), "run_id": run_id}
    return list(handlers.generate(request, *(values[name] for name in GENERATE_INPUTS)))


def output(update: tuple, name: str):
    """One named output of one update of the generate handler."""
    return update[GENERATE_OUTPUTS.index(name)]


def text_of(fragment: str) -> str:
    """The visible text of an HTML fragment, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def final_stats(yields) -> str:
    return text_of(output(yields[-1], "stats"))


def test_prompt_problems_each_get_their_sentence(handlers, samples):
    """By the reason the refusal carries from the worker (or the app's decoder), in both languages."""
    problems = [("silent", M.SILENT), ("short", M.TOO_SHORT), ("long", M.TOO_LONG), ("corrupt", M.UNREADABLE)]
    for kind, problem in problems:
        with pytest.raises(SynthesisError) as refused:
            handlers.synthesis.prompt_from_file(str(samples[kind]), M.EN)
        assert refused.value.problem == problem, (kind, refused.value)
        assert refused.value.sentence == M.prompt_sentence(problem, M.EN, 30.0)
    notices = {kind: handlers.prompt_changed(str(samples[kind]), ZH)[1] for kind, _ in problems}  # the page
    assert notices == {kind: f"⚠ {M.prompt_sentence(problem, M.ZH, 30.0)}" for kind, problem in problems}
    assert len(set(notices.values())) == len(problems)
    session, notice, keep_button, _ = handlers.prompt_changed(str(samples["long"]), ZH)
    assert session.prompt is None and "30 秒" in notice and keep_button["visible"] is True


def test_good_prompts_from_wav_44k_stereo_and_webm(handlers, samples):
    for kind in ("speech", "speech44k", "webm"):
        prompt = handlers.synthesis.prompt_from_file(str(samples[kind]), M.EN)
        assert 2.0 < prompt.duration_s <= 4.5
        assert len(prompt.mel) == 2 * len(prompt.speech_tokens)


def test_keep_first_30_seconds_of_a_long_prompt(handlers, samples):
    session, notice, keep_button, _ = handlers.keep_first(str(samples["long"]), EN)
    assert session.prompt is not None and session.prompt.duration_s <= 30.0
    assert "first 30 seconds" in notice and keep_button["visible"] is False


def test_generate_streams_to_the_hub_and_writes_the_files(handlers, samples):
    session, *_ = handlers.prompt_changed(str(samples["speech"]), EN)
    yields = run_generate(handlers, session, prompt_audio=str(samples["speech"]), prompt_text="hello there")
    audio, downloads, stats = (output(yields[-1], name) for name in ("audio", "downloads", "stats"))
    assert "RTF" in text_of(stats) and "First chunk" in text_of(stats), stats
    assert re.search(r"Backend llm torch · .*\(cpu fp32\)", text_of(stats)), stats  # the worker that served it
    files = downloads["value"]
    assert [f.rsplit(".", 1)[1] for f in files] == ["wav", "mp3", "ogg", "srt", "vtt"]
    wav, rate = sf.read(files[0], dtype="int16")
    assert rate == 24000 and len(wav) > 2400 and audio["value"] == files[0] and audio["autoplay"] is False
    cues = read_srt(open(files[3], encoding="utf-8").read())  # the uploaded prompt is "recording"
    assert cues[0][0] == 0 and all(body.startswith("recording: ") for *_, body in cues)
    assert abs(cues[-1][1] - len(wav) * 1000 / rate) <= 1 and len(read_vtt(open(files[4]).read())) == len(cues)
    assert run_coroutine(handlers.hub.read(RUN_ID, "f" * 32, 0))["chunks"] == []  # not another browser's
    reply = run_coroutine(handlers.hub.read(RUN_ID, BROWSER, 0))  # what the player got: the same audio
    assert reply["done"] and reply["sample_rate"] == 24000
    pcm = np.concatenate([np.frombuffer(base64.b64decode(c), "<i2") for c in reply["chunks"]])
    assert np.abs(pcm.astype(np.int32) - wav.astype(np.int32)).max() <= 1


def test_empty_prompt_text_switches_to_cross_lingual_and_instruct_needs_an_instruction(handlers, samples):
    yields = run_generate(handlers, prompt_audio=str(samples["speech"]), stream=False, run_id="")
    assert output(yields[0], "mode") == P.CROSS_LINGUAL and "RTF" in final_stats(yields)
    assert output(yields[-1], "audio")["autoplay"] is True  # not streamed: the finished file plays itself
    yields = run_generate(handlers, prompt_audio=str(samples["speech"]), mode=P.INSTRUCT)
    assert final_stats(yields).startswith("⚠ " + M.notice("need_instruction", M.EN))
    yields = run_generate(handlers, prompt_audio=str(samples["speech"]), mode=P.INSTRUCT, preset="sichuan",
                          stream=False, run_id="")
    assert "RTF" in final_stats(yields)


def test_requests_that_cannot_start_say_why(handlers, samples):
    assert final_stats(run_generate(handlers, text="   ")) == "⚠ " + M.notice("need_text", M.EN)
    assert final_stats(run_generate(handlers, text="x" * 201)).startswith("⚠ The text has 201 characters")
    assert final_stats(run_generate(handlers)) == "⚠ " + M.notice("need_prompt", M.EN)
    assert final_stats(run_generate(handlers, prompt_audio=str(samples["silent"]), request=ZH)) == \
        "⚠ " + M.prompt_sentence(M.SILENT, M.ZH)


def test_a_seed_the_model_would_fold_is_refused_with_its_range(handlers, samples):
    """The page's Generate and the Gradio API: 2**32 + 1 is refused (the sampler would use it as
    1), in the visitor's language; the range's last seed is spoken."""
    speech = str(samples["speech"])
    assert final_stats(run_generate(handlers, prompt_audio=speech, seed=2**32 + 1)) == \
        "⚠ The seed 4294967297 is not a whole number from 0 to 4294967295."
    assert final_stats(run_generate(handlers, prompt_audio=speech, seed=-1, request=ZH)) == \
        "⚠ " + M.notice("bad_seed", M.ZH, seed=-1, low=0, high=2**32 - 1)
    with pytest.raises(gr.Error, match="The seed 4294967297 is not a whole number from 0 to 4294967295"):
        handlers.api_synthesize(SHORT, P.CROSS_LINGUAL, speech, "", "", 2**32 + 1, 1.0, EN)
    assert "RTF" in final_stats(run_generate(handlers, prompt_audio=speech, seed=2**32 - 1, stream=False,
                                             run_id=""))


def test_voice_library_save_pick_generate_delete(handlers, samples):
    session, *_ = handlers.prompt_changed(str(samples["speech"]), EN)
    dropdown, name_box = handlers.save_voice("Alice", "hello there", None, session, EN)
    voice_id = dropdown["value"]
    assert [label for label, _ in dropdown["choices"]] == ["Alice (4.0 s)"] and name_box == ""
    audio, prompt_text, notice, new_session, automatic = handlers.pick_voice(voice_id, EN)
    assert audio is None and prompt_text == automatic == "hello there" and "Alice" in notice
    assert handlers.refresh_voices(OTHER_BROWSER)["choices"] == []  # another browser does not see it
    assert handlers.pick_voice(voice_id, OTHER_BROWSER)[2] == ""  # nor use it
    handlers.delete_voice(voice_id, OTHER_BROWSER)  # nor delete it
    assert [v.voice_id for v in handlers.voices.list(OWNER)] == [voice_id]
    yields = run_generate(handlers, new_session, voice=voice_id, prompt_text=prompt_text, stream=False,
                          run_id="")
    assert "RTF" in final_stats(yields)
    dropdown = handlers.delete_voice(voice_id, EN)
    assert dropdown["choices"] == [] and handlers.voices.list(OWNER) == []


def test_api_synthesize_returns_a_24k_wav(handlers, samples):
    path = handlers.api_synthesize(SHORT, P.INSTRUCT, str(samples["speech"]), "",
                                   "广东话 · Cantonese", 3, 1.0, EN)
    wav, rate = sf.read(path)
    assert rate == 24000 and len(wav) > 0
    with pytest.raises(gr.Error):
        handlers.api_synthesize("Hello.", "sing", str(samples["speech"]), "", "", 0, 1.0, EN)
    with pytest.raises(gr.Error, match="silent"):
        handlers.api_synthesize("Hello.", P.ZERO_SHOT, str(samples["silent"]), "", "", 0, 1.0, EN)


def test_the_page_speaks_text_as_written_with_the_text_frontend_off(handlers, samples):
    """The Advanced checkbox reaches the model's text front end: "2%" as written is other tokens
    than "2%" read out ("two percent."), so other audio under the same seed; the Gradio API takes
    the same field as its last input and gives the page's audio for the same request."""
    def audio(yields):
        return sf.read(output(yields[-1], "downloads")["value"][0], dtype="int16")[0]

    speech = str(samples["speech"])
    read_out = audio(run_generate(handlers, text="2%", prompt_audio=speech, stream=False, run_id=""))
    as_written = audio(run_generate(handlers, text="2%", prompt_audio=speech, stream=False, run_id="",
                                    text_frontend=False))
    assert len(as_written) and (len(as_written) != len(read_out) or not np.array_equal(as_written, read_out))
    path = handlers.api_synthesize("2%", P.CROSS_LINGUAL, speech, "", "", 7, 1.0, EN, text_frontend=False)
    np.testing.assert_array_equal(sf.read(path, dtype="int16")[0], as_written)


def test_instruction_values_resolve_like_the_presets():
    labels = dict(preset_choices())
    assert len(labels) == 26
    cantonese = "You are a helpful assistant. 请用广东话表达。<|endofprompt|>"
    for value in ("cantonese", "广东话 · Cantonese", "Cantonese", "广东话", cantonese, "请用广东话表达。"):
        assert resolve_instruction(value) == cantonese
    assert resolve_instruction("请用温柔的语气说。") == "You are a helpful assistant. 请用温柔的语气说。<|endofprompt|>"


def test_status_panel_shows_the_real_worker(handlers):
    html = handlers.status(EN)
    assert 'aria-label="Status"' in html and "Ready" in html and "Demo model" in html
    assert "llm torch" in html and "restarts 0" in html
    assert "就绪" in handlers.status(ZH)


def test_stop_cancels_the_worker_request_at_once(handlers, samples):
    said = []

    def press_stop_once_submitted():
        while (BROWSER, RUN_ID) not in handlers._running:
            time.sleep(0.005)
        handlers.stop(RUN_ID, OTHER_BROWSER)  # another browser's Stop with this run's id: nothing
        said.append(handlers.stop(RUN_ID, EN))

    presser = threading.Thread(target=press_stop_once_submitted)
    presser.start()
    yields = run_generate(handlers, text="One, two, three, four, five, six, seven, eight, nine, ten. " * 3,
                          mode=P.CROSS_LINGUAL, prompt_audio=str(samples["speech"]))
    presser.join(5)
    assert [text_of(fragment) for fragment in said] == ["■ " + M.notice("stopped", M.EN)]
    assert final_stats(yields) == "⚠ " + M.error_sentence(P.CANCELLED, M.EN)
    assert handlers.client.health()["inflight"] == 0 and not handlers._running


def test_a_request_made_while_the_model_loads_shows_the_loading_progress(handlers, demo_model_dir, samples):
    """A saved voice needs no worker to pick, so Generate can be pressed before the worker is up."""
    prompt = handlers.synthesis.prompt_from_file(str(samples["speech"]), M.EN)
    voice = handlers.voices.save(OWNER, "early", prompt)
    supervisor = Supervisor(SupervisorConfig(worker=P.WorkerConfig(model_dir=str(demo_model_dir), device="cpu",
                                                                    backend="torch")))
    supervisor.start()
    try:
        booting = Handlers(Synthesis(WorkerClient(supervisor), handlers.voices, LIMITS), StreamHub(), handlers.files)
        assert supervisor.health()["worker"]["state"] in ("starting", "loading")
        yields = run_generate(booting, voice=voice.voice_id, stream=False, run_id="")
    finally:
        supervisor.stop()
    shown = [output(update, "stats") for update in yields]
    shown = [fragment for fragment in shown if isinstance(fragment, str)]  # the rest: left as they were
    loading = [fragment for fragment in shown if text_of(fragment).startswith(("starting:", "loading:"))]
    assert loading and all("<progress" in fragment for fragment in loading), shown
    assert "RTF" in text_of(shown[-1])
