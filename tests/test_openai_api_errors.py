"""The API's keys and its errors under pressure, with the official `openai` client against the
real app: Bearer keys from --api-key and --api-key-file (401 without or with a wrong one), a
server beyond loopback without a key keeps the API closed, 429 with Retry-After when the queue is
full, 503 with Retry-After while the worker recovers from a kill, and 500 for a damaged voice
file: every error in OpenAI's shape, never a stack trace."""

import io
import os
import signal

import httpx
import openai
import pytest
import soundfile as sf

from tests.app_server import running_app, wait_until
from tests.browser.audio_samples import speechlike
from webui.access import api_owner_of_key
from webui.voices import owner_key

KEYS = ("sk-first", "sk-from-file")
LONG = " ".join(["The quick brown fox jumps over the lazy dog near the river bank today."] * 8)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    key_file = root / "keys.txt"
    key_file.write_text(f"# the API's keys\n\n{KEYS[1]}\n")
    with running_app(root, ["--api-key-file", str(key_file), "--max-queue", "1"], api_key=KEYS[0]) as server:
        yield server


def client_for(app, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=app.url + "v1", api_key=key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def voice(app, tmp_path_factory):
    path = tmp_path_factory.mktemp("recording") / "carol.wav"
    sf.write(path, speechlike(3.0, 16000), 16000)
    with open(path, "rb") as f:
        return client_for(app, KEYS[0]).audio.voices.create(audio_sample=f, consent="c", name="Carol")


def assert_openai_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    assert "Traceback" not in response.text and error["message"].strip()


def test_keys_from_the_flag_and_the_file_open_the_api_and_others_do_not(app, voice):
    for key in KEYS:
        assert [m.id for m in client_for(app, key).models.list().data] == ["cosyvoice3"]
    with pytest.raises(openai.AuthenticationError) as refused:
        client_for(app, "sk-wrong").models.list()
    assert refused.value.body["code"] == "invalid_api_key"
    assert_openai_error(httpx.get(app.url + "v1/models"), 401, "invalid_api_key")
    assert httpx.get(app.url + "health").status_code == 200  # keys do not close the rest of the server


def test_health_shows_its_whole_report_only_with_a_key(app):
    assert httpx.get(app.url + "health", timeout=10).json() == {"status": "ok"}
    assert httpx.get(app.url + "health", headers={"Authorization": "Bearer wrong"}, timeout=10).json() == {
        "status": "ok"}
    for key in KEYS:  # the flag's and the file's
        report = httpx.get(app.url + "health", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
        assert report["worker"]["state"] == "ready"


def test_a_full_queue_answers_429_with_retry_after(app, voice):
    client = client_for(app, KEYS[0])
    with client.audio.speech.with_streaming_response.create(model="cosyvoice3", voice="Carol", input=LONG,
                                                            response_format="pcm") as running:
        audio = running.iter_bytes()  # kept: dropping the iterator would close the connection
        next(audio)
        with pytest.raises(openai.RateLimitError) as refused:
            client.audio.speech.create(model="cosyvoice3", voice="Carol", input="Hi.", response_format="wav")
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.body["code"] == "overloaded"


def test_a_damaged_voice_file_is_removed_and_the_voice_reported_missing(app, voice):
    wait_until(lambda: app.health()["inflight"] == 0 and app.health()["queue_depth"] == 0, 30)
    client = client_for(app, KEYS[0])
    with open(app.voices_dir / "notes.wav", "wb") as f:
        sf.write(f, speechlike(3.0, 16000), 16000)
    with open(app.voices_dir / "notes.wav", "rb") as f:
        damaged = client.audio.voices.create(audio_sample=f, consent="c", name="Damaged")
    path = app.voices_dir / owner_key(api_owner_of_key(KEYS[0])) / f"{damaged.id}.npz"
    path.write_bytes(b"PK\x03\x04 not a zip file")
    reply = httpx.post(app.url + "v1/audio/speech", headers={"authorization": f"Bearer {KEYS[0]}"}, timeout=60,
                       json={"model": "cosyvoice3", "input": "Hi.", "voice": "Damaged"})
    assert_openai_error(reply, 404, "voice_not_found")
    assert not path.exists()


def test_a_key_sees_and_deletes_only_its_own_voices(app, voice):
    other = client_for(app, KEYS[1])
    assert voice.id not in [v["id"] for v in other.get("/audio/voices", cast_to=httpx.Response).json()["data"]]
    reply = httpx.delete(app.url + f"v1/audio/voices/{voice.id}", headers={"authorization": f"Bearer {KEYS[1]}"},
                         timeout=10)
    assert_openai_error(reply, 404, "voice_not_found")
    reply = httpx.post(app.url + "v1/audio/speech", headers={"authorization": f"Bearer {KEYS[1]}"}, timeout=60,
                       json={"model": "cosyvoice3", "input": "Hi.", "voice": voice.id})
    assert_openai_error(reply, 404, "voice_not_found")
    mine = client_for(app, KEYS[0]).get("/audio/voices", cast_to=httpx.Response).json()["data"]
    assert voice.id in [v["id"] for v in mine]


def test_while_the_worker_recovers_the_api_answers_503_with_retry_after(app, voice):
    wait_until(lambda: app.health()["inflight"] == 0 and app.health()["queue_depth"] == 0, 30)
    pid = app.health()["worker"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: app.health()["status"] != "ok", 10)
    with pytest.raises(openai.InternalServerError) as refused:
        client_for(app, KEYS[0]).audio.speech.create(model="cosyvoice3", voice="Carol", input="Hi.")
    assert refused.value.status_code == 503 and int(refused.value.response.headers["retry-after"]) >= 1
    assert refused.value.body["code"] == "unavailable"
    wait_until(lambda: app.health()["status"] == "ok", 120)
    audio = client_for(app, KEYS[0]).audio.speech.create(model="cosyvoice3", voice="Carol", input="Hi.",
                                                          response_format="wav").content
    assert sf.info(io.BytesIO(audio)).frames > 0


def test_beyond_loopback_without_a_key_the_api_stays_closed(tmp_path):
    with running_app(tmp_path, host="0.0.0.0") as server:
        reply = httpx.get(server.url + "v1/models")
        assert_openai_error(reply, 401, "api_key_required")
        assert "--api-key" in reply.json()["error"]["message"]
        assert httpx.get(server.url).status_code == 200  # the page itself is served
