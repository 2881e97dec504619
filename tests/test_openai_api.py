"""The OpenAI-compatible API as its users call it: the official `openai` client against the real
app (`python app.py --demo`, real worker) on loopback. Every response format decodes to the
length of the same request in wav; streaming (audio and SSE) delivers audio while the worker is
still at work; voices are created (transcribed by the recogniser when sent without a
transcript), listed and deleted; every error status has OpenAI's shape.
Keys, overload and a damaged voice file: test_openai_api_errors.py; eight clients and a worker
kill: test_openai_api_load.py."""

import base64
import io
import json
import shutil
import subprocess

import httpx
import numpy as np
import openai
import pytest
import soundfile as sf

from tests.app_server import running_app, wait_until
from tests.browser.audio_samples import speechlike
from webui import messages as M
from webui.access import OPEN_API_OWNER
from webui.voices import VoiceLibrary

SHORT = "Hi there."
SENTENCE = "The quick brown fox jumps over the lazy dog."  # a few streaming chunks on the demo model
LONG = " ".join(["The quick brown fox jumps over the lazy dog near the river bank today."] * 4)
SEED = 5


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("openai"), ["--max-text-chars", "600"]) as server:
        yield server


@pytest.fixture(scope="module")
def client(app):
    return openai.OpenAI(base_url=app.url + "v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("recording") / "alice.wav"
    sf.write(path, speechlike(4.0, 16000), 16000)
    return path


@pytest.fixture(scope="module")
def voice(client, recording):
    with open(recording, "rb") as f:
        return client.audio.voices.create(audio_sample=f, consent="cons_test", name="Alice",
                                          extra_body={"transcript": "hello there"})


def decode(data: bytes, fmt: str) -> np.ndarray:
    """float32 samples of an encoded answer (soundfile, or ffmpeg for what libsndfile cannot read)."""
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32767.0
    if fmt in ("wav", "flac", "mp3", "opus"):
        audio, rate = sf.read(io.BytesIO(data), dtype="float32")
        assert rate == 24000
        return audio
    out = subprocess.run([shutil.which("ffmpeg"), "-nostdin", "-loglevel", "error", "-i", "pipe:0", "-f", "s16le",
                          "-ac", "1", "-ar", "24000", "pipe:1"], input=data, capture_output=True, check=True).stdout
    return np.frombuffer(out, "<i2").astype(np.float32) / 32767.0


def speak(client, voice_name: str, fmt: str, text: str = SHORT, **fields) -> bytes:
    return client.audio.speech.create(model="cosyvoice3", voice=voice_name, input=text, response_format=fmt,
                                      extra_body={"seed": SEED, **fields}).content


def test_models_lists_the_loaded_model(client):
    assert [m.id for m in client.models.list().data] == ["cosyvoice3"]


def test_every_format_decodes_to_the_length_of_the_wav(client, voice):
    reference = decode(speak(client, voice.name, "wav"), "wav")
    assert len(reference) > 24000 // 2
    assert np.array_equal(decode(speak(client, voice.id, "pcm"), "pcm"),  # by id as well as by name
                          np.rint(reference * 32767.0) / 32767.0)
    for fmt in ("flac", "mp3", "opus", "aac"):
        audio = decode(speak(client, voice.name, fmt), fmt)
        assert abs(len(audio) - len(reference)) <= 0.1 * 24000, (fmt, len(audio), len(reference))  # codec padding


def test_instructions_and_modes(client, voice):
    cantonese = decode(speak(client, voice.name, "wav", instructions="Cantonese"), "wav")
    assert len(cantonese) > 0
    with pytest.raises(openai.BadRequestError, match="instruction"):
        speak(client, voice.name, "wav", mode="instruct")
    with pytest.raises(openai.BadRequestError, match="mode"):
        speak(client, voice.name, "wav", mode="sing")


def test_audio_streams_while_the_worker_is_still_at_work(app, client, voice):
    received, busy_while_streaming = bytearray(), []
    with client.audio.speech.with_streaming_response.create(
            model="cosyvoice3", voice=voice.name, input=LONG, response_format="pcm") as response:
        assert response.headers["content-type"] == "audio/pcm"
        for data in response.iter_bytes():
            busy_while_streaming.append(app.health()["worker"]["busy"])  # as the last heartbeat saw it
            received += data
    # bytes came while the worker still reported the request as its work (not all after it finished)
    assert [response.headers["x-request-id"]] in busy_while_streaming[:-1]
    assert len(received) > 5 * 24000 * 2  # seconds of audio, all of it


def test_sse_deltas_are_the_audio_and_done_has_usage(client, voice):
    pcm = speak(client, voice.name, "pcm", SENTENCE)
    events = []
    with client.audio.speech.with_streaming_response.create(
            model="cosyvoice3", voice=voice.name, input=SENTENCE, response_format="pcm", stream_format="sse",
            extra_body={"seed": SEED}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2 and events[-1]["type"] == "speech.audio.done"
    assert b"".join(base64.b64decode(e["audio"]) for e in deltas) == pcm
    assert events[-1]["usage"]["output_tokens"] > 0 and events[-1]["timing"]["worker_first_chunk_s"] > 0


def test_voices_are_created_listed_and_deleted(app, client, recording):
    with open(recording, "rb") as f:  # the issue's own field names: file, name, transcript
        reply = httpx.post(app.url + "v1/audio/voices", files={"file": ("bob.wav", f, "audio/wav")},
                           data={"name": "Bob"})
    assert reply.status_code == 200, reply.text
    bob = reply.json()
    assert set(bob) >= {"id", "name", "transcript", "created_at"}
    # sent without a transcript: the app's recogniser transcribed it, and the library keeps that
    heard = app.transcribe_here(*sf.read(recording, dtype="float32"))
    assert heard and bob["transcript"] == heard
    assert VoiceLibrary(app.voices_dir).load(OPEN_API_OWNER, bob["id"])[0].text == heard
    listed = client.get("/audio/voices", cast_to=httpx.Response).json()
    assert listed["object"] == "list" and {"name": "Bob", "transcript": heard}.items() <= next(
        v for v in listed["data"] if v["name"] == "Bob").items()
    assert len(decode(speak(client, "Bob", "wav"), "wav")) > 0  # zero-shot with the recognised transcript
    deleted = client.audio.voices.delete(bob["id"])
    assert deleted.deleted and deleted.id == bob["id"]
    with pytest.raises(openai.NotFoundError):
        client.audio.voices.delete(bob["id"])
    with pytest.raises(openai.NotFoundError, match="No saved voice"):
        speak(client, "Bob", "wav")


def test_a_bad_recording_gets_the_page_s_sentence_and_its_own_code(client, tmp_path):
    """A silent, a too short and an unreadable recording: each its own `code` (the reason the
    refusal carries) and the page's sentence."""
    sf.write(tmp_path / "silent.wav", np.zeros(16000 * 3, np.float32), 16000)
    sf.write(tmp_path / "short.wav", speechlike(0.4, 16000), 16000)
    (tmp_path / "unreadable.wav").write_bytes(b"RIFF, but not really a wave file" * 10)
    for name, problem in (("silent", M.SILENT), ("short", M.TOO_SHORT), ("unreadable", M.UNREADABLE)):
        with open(tmp_path / f"{name}.wav", "rb") as f, pytest.raises(openai.BadRequestError) as refused:
            client.audio.voices.create(audio_sample=f, consent="c", name=name)
        assert refused.value.body == {"message": M.prompt_sentence(problem, M.EN, 30.0), "param": "file",
                                      "code": problem, "type": "invalid_request_error"}, name


def test_errors_have_openai_s_shape_and_status(app, client, voice):
    cases = [(dict(input=""), 400, "bad_input"), (dict(input="x" * 601), 413, "too_long"),
             (dict(voice="nobody"), 404, "voice_not_found"), (dict(speed=3.0), 400, "bad_input"),
             (dict(response_format="ogg"), 400, "bad_input")]
    for change, status, code in cases:
        body = {"model": "cosyvoice3", "input": SHORT, "voice": voice.name, **change}
        reply = httpx.post(app.url + "v1/audio/speech", json=body, timeout=60)
        assert reply.status_code == status, (change, reply.text)
        error = reply.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
        assert "Traceback" not in reply.text
    reply = httpx.post(app.url + "v1/audio/speech", content=b"{not json", timeout=10,
                       headers={"content-type": "application/json"})
    assert reply.status_code == 400 and "error" in reply.json()


def test_a_client_that_disconnects_frees_the_worker(app, client, voice):
    served = app.health()["served"]
    with client.audio.speech.with_streaming_response.create(
            model="cosyvoice3", voice=voice.name, input=LONG * 2, response_format="mp3") as response:
        audio = response.iter_bytes()  # kept until the block ends, which closes the connection
        next(audio)
        assert app.health()["inflight"] == 1
    # the request would run for many seconds more; its cancellation frees the worker at once
    wait_until(lambda: app.health()["inflight"] == 0 and not app.health()["worker"]["busy"], 10)
    assert app.health()["served"] == served  # cancelled, not finished



def test_text_frontend_false_speaks_the_input_as_written(client, voice):
    """`text_frontend` goes from the body through the spec to the model's text front end: "2%" as
    written is other tokens than "2%" read out ("two percent."), so other audio under the same seed;
    the same request twice gives the same audio."""
    read_out = decode(speak(client, voice, "pcm", text="2%"), "pcm")
    as_written = decode(speak(client, voice, "pcm", text="2%", text_frontend=False), "pcm")
    assert len(as_written) and (len(as_written) != len(read_out) or not np.array_equal(as_written, read_out))
    np.testing.assert_array_equal(decode(speak(client, voice, "pcm", text="2%", text_frontend=False), "pcm"),
                                  as_written)
