"""Automatic transcripts in the web process against a real worker process with the demo model and
the demo recogniser (no browser): the page's transcript box handler, the Gradio API `/synthesize`
and `POST /v1/audio/voices` without a transcript, and all of them with a recogniser that cannot
run (synthesis goes on; the visitor types). Placing the transcript in the box (the page's
script) is tested in the browser: tests/browser/test_webui_browser.py."""

import gradio as gr
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from cosyvoice3.modes import Limits
from tests.browser.audio_samples import write_samples
from tests.envelopes import SPEC_DEFAULTS
from webui import messages as M
from webui.access import OPEN_API_OWNER
from webui.handlers import GENERATE_INPUTS, Handlers, Session
from webui.media import OutputFolder, read_prompt_audio
from webui.openai_api import ApiAccess, install_openai_api
from webui.stream import StreamHub
from webui.synthesis import Synthesis
from webui.voices import VoiceLibrary
from worker import protocol as P
from worker.client import WorkerClient
from worker.supervisor import Supervisor, SupervisorConfig

EN = gr.Request(headers={"accept-language": "en-US,en;q=0.9"})
ZH = gr.Request(headers={"accept-language": "zh-CN,zh;q=0.9"})
LIMITS = Limits(max_text_chars=200)
SKIP = gr.skip()


class Recording:
    """A worker client that keeps every message submitted through it in `sent`."""

    def __init__(self, client):
        self.client, self.sent = client, []

    def submit(self, msg):
        self.sent.append(msg)
        return self.client.submit(msg)

    def __getattr__(self, name):
        return getattr(self.client, name)


def start_client(demo_model_dir, asr_model_dir):
    worker = P.WorkerConfig(model_dir=str(demo_model_dir), device="cpu", backend="torch", limits=LIMITS,
                            asr_model_dir=str(asr_model_dir))
    supervisor = Supervisor(SupervisorConfig(worker=worker))
    supervisor.start()
    client = WorkerClient(supervisor)
    assert client.wait_ready(120), client.health()
    return supervisor, client


def make_handlers(client, tmp_path):
    synthesis = Synthesis(Recording(client), VoiceLibrary(tmp_path / "voices"), LIMITS)
    return Handlers(synthesis, StreamHub(), OutputFolder(tmp_path / "out"))


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    return write_samples(tmp_path_factory.mktemp("audio"))


@pytest.fixture(scope="module")
def client(demo_model_dir, demo_asr_dir):
    supervisor, client = start_client(demo_model_dir, demo_asr_dir)
    yield client
    supervisor.stop()


@pytest.fixture(scope="module")
def broken_client(demo_model_dir, tmp_path_factory):
    """A worker whose recogniser cannot be loaded (its directory does not exist)."""
    supervisor, client = start_client(demo_model_dir, tmp_path_factory.mktemp("asr") / "no-recogniser")
    yield client
    supervisor.stop()


@pytest.fixture
def handlers(client, tmp_path):
    return make_handlers(client, tmp_path)


@pytest.fixture(scope="module")
def recognise(demo_asr_dir):
    """What the demo recogniser hears in audio, computed in this process."""
    from asr.prompt import transcribe_prompt
    from asr.recognizer import Recognizer

    recognizer = Recognizer.from_pretrained(demo_asr_dir)
    return lambda audio, rate: transcribe_prompt(recognizer, audio, rate, LIMITS)


@pytest.fixture(scope="module")
def expected(recognise, samples):
    heard = recognise(*read_prompt_audio(samples["speech"], LIMITS.max_prompt_seconds))
    assert heard.text  # the demo recogniser's random text for this sample is not empty
    return heard


def prepared(handlers, path, keep_first=False):
    prepare = handlers.keep_first if keep_first else handlers.prompt_changed
    session, notice, _, _ = prepare(str(path), EN)
    assert session.prompt is not None, notice
    return session


def fill(handlers, path, session, request=EN):
    """Drive the transcript handler like Gradio does: ((heard, note) of its last update, all its
    updates: (heard, progress, note))."""
    updates = list(handlers.fill_transcript(str(path) if path else None, session, request))
    assert all(update[0] == SKIP and update[2] == SKIP for update in updates[:-1])  # before: progress only
    assert updates[-1][1] == SKIP
    return (updates[-1][0], updates[-1][2]), updates


def sent(handlers, kind):
    return [m for m in handlers.synthesis.client.sent if isinstance(m, kind)]


def test_a_prepared_prompt_gets_its_transcript_and_language(handlers, samples, expected):
    session = prepared(handlers, samples["speech"])
    (heard, note), updates = fill(handlers, samples["speech"], session)
    # the first use loads the recogniser in the worker, and the note says so meanwhile
    assert updates[0][1].startswith("⏳ Loading the speech recogniser") or updates[0][1].startswith("⏳ Downloading")
    assert heard == expected.text
    name = M.language_name(expected.language)
    assert note == "✎ " + (M.notice("transcript_filled", M.EN, language=name) if name
                           else M.notice("transcript_filled_unknown", M.EN)) + " " + M.notice("transcript_demo", M.EN)
    (again, _), updates = fill(handlers, samples["speech"], session, ZH)
    assert again == expected.text and len(updates) == 1  # loaded: no progress this time
    assert updates[0][2].startswith("✎ 已自动识别")


def test_the_transcript_is_of_the_audio_the_voice_was_made_from(handlers, samples, recognise):
    session = prepared(handlers, samples["long"], keep_first=True)  # 35 s: only its first 30 s were kept
    (heard, note), _ = fill(handlers, samples["long"], session)
    audio, rate = read_prompt_audio(samples["long"], LIMITS.max_prompt_seconds, truncate=True)
    assert len(audio) == 30 * rate and heard == recognise(audio, rate).text and note.startswith("✎")
    assert len(sent(handlers, P.Transcribe)[-1].audio) == 30 * rate


def test_a_prompt_that_could_not_be_prepared_is_not_transcribed(handlers, samples):
    for kind, problem in (("silent", "silent"), ("short", "too short")):
        session, notice, _, _ = handlers.prompt_changed(str(samples[kind]), EN)
        assert session.prompt is None and problem in notice  # today's sentence, not an empty transcript
        assert fill(handlers, samples[kind], session)[0] == ("", "")
    assert fill(handlers, None, Session())[0] == ("", "")  # cleared
    assert sent(handlers, P.Transcribe) == []


def test_synthesize_api_transcribes_a_zero_shot_prompt_without_text(handlers, samples, expected):
    path = handlers.api_synthesize("Hi.", P.ZERO_SHOT, str(samples["speech"]), "", "", 3, 1.0, EN)
    assert path.endswith(".wav")
    synthesis = sent(handlers, P.Synthesize)[-1]
    assert synthesis.spec.mode == P.ZERO_SHOT and synthesis.spec.prompt_text == expected.text
    assert synthesis.prompt.text == ""  # the transcript travels once, in the spec
    handlers.api_synthesize("Hi.", P.ZERO_SHOT, str(samples["speech"]), "typed", "", 3, 1.0, EN)
    assert sent(handlers, P.Synthesize)[-1].spec.prompt_text == "typed" and len(sent(handlers, P.Transcribe)) == 1
    handlers.api_synthesize("Hi.", P.CROSS_LINGUAL, str(samples["speech"]), "", "", 3, 1.0, EN)
    assert sent(handlers, P.Synthesize)[-1].spec.mode == P.CROSS_LINGUAL and len(sent(handlers, P.Transcribe)) == 1
    with pytest.raises(gr.Error, match="silent"):  # checked before any transcription, with its sentence
        handlers.api_synthesize("Hi.", P.ZERO_SHOT, str(samples["silent"]), "", "", 3, 1.0, EN)
    assert len(sent(handlers, P.Transcribe)) == 1


def api(handlers) -> TestClient:
    app = FastAPI()
    install_openai_api(app, handlers.synthesis, ApiAccess([], "127.0.0.1"))
    return TestClient(app)


def create_voice(http: TestClient, path, name, **fields):
    with open(path, "rb") as f:
        return http.post("/v1/audio/voices", files={"file": ("me.wav", f, "audio/wav")}, data={"name": name, **fields})


def test_a_voice_created_without_transcript_gets_and_keeps_the_recognised_one(handlers, samples, expected):
    with api(handlers) as http:
        reply = create_voice(http, samples["speech"], "Carol")
        assert reply.status_code == 200, reply.text
        carol = reply.json()
        assert carol["transcript"] == expected.text
        info, prompt = handlers.voices.load(OPEN_API_OWNER, carol["id"])  # stored in the library
        assert info.text == prompt.text == expected.text
        assert [v["transcript"] for v in http.get("/v1/audio/voices").json()["data"]] == [expected.text]
        given = create_voice(http, samples["speech"], "Dave", transcript="  my own   words ").json()
        assert given["transcript"] == "my own words" and len(sent(handlers, P.Transcribe)) == 1
        refused = create_voice(http, samples["silent"], "Silent")
        assert refused.status_code == 400 and "silent" in refused.json()["error"]["message"]
        assert len(sent(handlers, P.Transcribe)) == 1


def test_without_a_recogniser_the_visitor_types_and_synthesis_works(broken_client, samples, tmp_path):
    handlers = make_handlers(broken_client, tmp_path)
    session = prepared(handlers, samples["speech"])
    (heard, note), _ = fill(handlers, samples["speech"], session, ZH)
    assert heard == "" and note == "⚠ " + M.notice("transcript_failed", M.ZH)
    form = dict(SPEC_DEFAULTS, text="Hi.", mode=P.ZERO_SHOT, prompt_audio=str(samples["speech"]), prompt_text="typed words", voice=None,
                preset=None, custom_instruction="", seed=1, speed=1.0, stream=False, takes=1, session=session, run_id="")
    yields = list(handlers.generate(EN, *(form[name] for name in GENERATE_INPUTS)))
    assert yields[-1][0] is not None and sent(handlers, P.Synthesize)[-1].spec.mode == P.ZERO_SHOT
    # the Gradio API and the voice endpoint clone cross-lingually instead
    handlers.api_synthesize("Hi.", P.ZERO_SHOT, str(samples["speech"]), "", "", 3, 1.0, EN)
    assert sent(handlers, P.Synthesize)[-1].spec.mode == P.CROSS_LINGUAL
    with api(handlers) as http:
        reply = create_voice(http, samples["speech"], "Erin")
        assert reply.status_code == 200 and reply.json()["transcript"] == ""
        speech = http.post("/v1/audio/speech", json={"voice": "Erin", "input": "Hi.", "response_format": "pcm"})
        assert speech.status_code == 200 and len(np.frombuffer(speech.content, "<i2")) > 0
    assert handlers.voices.list(OPEN_API_OWNER)[0].text == ""
    assert broken_client.health()["worker"]["restarts"] == 0
