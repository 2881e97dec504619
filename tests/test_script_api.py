"""Dialogue scripts and captions through the real app (`python app.py --demo`, real worker) as API
users call it: `/v1/audio/speech` with a script speaks each line in its saved voice with the pause
between them (the audio is the lines spoken alone, same seed, plus the pause's samples, to the
sample in length; the lines decode batched, so a value may differ in its last bit);
`/v1/audio/captioned_speech` gives the audio with cues in order naming the voices, the pause a gap
between cues, the last cue at the audio's end, its SRT and WebVTT read back by the strict readers of
test_captions.py; an unknown voice is a 400 naming its lines before anything reaches the worker;
the Gradio API speaks a script and its `captioned` endpoint gives the audio with SRT and VTT files.
`captioned_speech` with `takes` answers a list, one entry per seed (webui/takes.py's seeds), each with
its own audio and captions; a number of takes out of range, takes with a script or on the streaming
route are a 400 before any work; a client that leaves cancels every take."""

import base64
import io
import json
import socket

import httpx
import numpy as np
import pytest
import soundfile as sf
from gradio_client import Client, handle_file

from tests.app_server import running_app, wait_until
from tests.test_captions import read_srt, read_vtt
from tests.test_openai_api import client, recording  # noqa: F401 (the fixtures, on this module's app)
from webui import messages as M
from webui.access import OPEN_API_OWNER, OWNER_COOKIE
from webui.takes import MAX_TAKES, MIN_TAKES, take_seeds
from webui.voices import VoiceLibrary

RATE = 24000
MAX_TEXT_CHARS = 2000
SEED = 7
PAUSE_S = 0.8
ALICE_LINE = "Hello Bob."
BOB_LINE = "Hi Alice, how are you?"
SCRIPT = f"[voice:Alice] {ALICE_LINE}\n[pause:{PAUSE_S}s]\n[voice:Bob] {BOB_LINE}"
LONG_LINE = " ".join(["The quick brown fox jumps over the lazy dog near the river bank today."] * 8)
ANSWER_FIELDS = {"audio", "format", "sample_rate", "captions", "srt", "vtt"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("script_api"), ["--max-text-chars", str(MAX_TEXT_CHARS)]) as server:
        yield server


@pytest.fixture(scope="module")
def voices(client, recording):
    made = []
    for name in ("Alice", "Bob"):
        with open(recording, "rb") as f:
            made.append(client.audio.voices.create(audio_sample=f, consent="c", name=name,
                                                   extra_body={"transcript": "hello there"}))
    return made


def pcm(client, voice: str, text: str) -> np.ndarray:
    data = client.audio.speech.create(model="cosyvoice3", voice=voice, input=text, response_format="pcm",
                                      extra_body={"seed": SEED}).content
    return np.frombuffer(data, "<i2")


def captioned(app, voice: str, text: str, fmt: str = "pcm", **fields) -> dict:
    reply = httpx.post(app.url + "v1/audio/captioned_speech", timeout=120,
                       json={"model": "cosyvoice3", "voice": voice, "input": text, "response_format": fmt,
                             "seed": SEED, **fields})
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_a_script_is_its_lines_in_their_voices_with_the_pause_between(client, voices):
    alice, bob = pcm(client, "Alice", ALICE_LINE), pcm(client, "Bob", BOB_LINE)
    script = pcm(client, "Alice", SCRIPT)
    pause = round(PAUSE_S * RATE)
    assert len(script) == len(alice) + pause + len(bob)
    # the same tokens (same seed, voice and text): the same audio, up to the last bit of a batched decode
    np.testing.assert_allclose(script[:len(alice)], alice, atol=2)
    assert not script[len(alice):len(alice) + pause].any()
    np.testing.assert_allclose(script[len(alice) + pause:], bob, atol=2)


def test_captioned_speech_names_the_voices_in_order_with_the_pause_as_a_gap(app, voices):
    answer = captioned(app, "Alice", SCRIPT)
    audio = np.frombuffer(base64.b64decode(answer["audio"]), "<i2")
    assert answer["format"] == "pcm" and answer["sample_rate"] == RATE
    cues = answer["captions"]
    assert [c["voice"] for c in cues] == ["Alice", "Bob"]
    assert "Hello Bob" in cues[0]["text"] and "how are you" in cues[1]["text"]
    assert cues[0]["start"] == 0 and cues[0]["end"] <= cues[1]["start"]
    assert cues[1]["start"] - cues[0]["end"] == pytest.approx(PAUSE_S, abs=0.002)
    assert abs(cues[-1]["end"] - len(audio) / RATE) <= 0.05
    srt, vtt = read_srt(answer["srt"]), read_vtt(answer["vtt"])
    ms = [(round(c["start"] * 1000), round(c["end"] * 1000)) for c in cues]
    assert [(start, end) for start, end, _ in srt] == ms
    assert [text.split(": ", 1)[0] for _, _, text in srt] == ["Alice", "Bob"]
    assert [(start, end) for start, end, _, _ in vtt] == ms and [v for *_, v in vtt] == ["Alice", "Bob"]


def test_a_plain_text_has_one_cue_per_text_segment_in_the_chosen_voice(app, voices):
    """Text segments are sentences merged up to about 60-80 tokens (the model's split): this
    text of eight sentences is more than one segment."""
    sentence = "The quick brown fox jumps over the lazy dog near the river bank today."
    answer = captioned(app, "Bob", " ".join([sentence] * 8), fmt="wav")
    audio, rate = sf.read(io.BytesIO(base64.b64decode(answer["audio"])), dtype="float32")
    cues = answer["captions"]
    assert rate == RATE and len(cues) >= 2 and {c["voice"] for c in cues} == {"Bob"}
    assert " ".join(c["text"] for c in cues).count("quick brown fox") == 8
    assert cues[0]["start"] == 0 and all(a["end"] == b["start"] for a, b in zip(cues, cues[1:]))
    assert abs(cues[-1]["end"] - len(audio) / RATE) <= 0.05
    assert len(read_srt(answer["srt"])) == len(read_vtt(answer["vtt"])) == len(cues)


def test_captioned_takes_are_their_seeds_each_with_its_own_audio_and_captions(app, voices):
    answer = captioned(app, "Alice", "Hi there.", fmt="wav", takes=3)
    takes = answer["takes"]
    assert list(answer) == ["takes"] and [t["seed"] for t in takes] == take_seeds(SEED, 3) == [SEED, SEED + 1, SEED + 2]
    audios = []
    for take in takes:
        assert set(take) == ANSWER_FIELDS | {"seed"} and take["format"] == "wav" and take["sample_rate"] == RATE
        audio, rate = sf.read(io.BytesIO(base64.b64decode(take["audio"])), dtype="float32")
        cues = take["captions"]
        assert rate == RATE and len(audio) > 0 and cues and {c["voice"] for c in cues} == {"Alice"}
        assert cues[0]["start"] == 0 and all(c["start"] < c["end"] for c in cues)
        assert all(a["end"] <= b["start"] for a, b in zip(cues, cues[1:]))
        assert abs(cues[-1]["end"] - len(audio) / RATE) <= 0.05
        assert len(read_srt(take["srt"])) == len(read_vtt(take["vtt"])) == len(cues)
        audios.append(audio)
    for (n, a), b in zip(enumerate(audios, 1), audios[1:]):
        assert len(a) != len(b) or not np.allclose(a, b), f"takes {n} and {n + 1} sound the same"


def test_one_take_is_a_list_of_one_and_no_takes_the_one_answer(app, voices):
    one = captioned(app, "Alice", "Hi there.", takes=1)
    assert list(one) == ["takes"] and len(one["takes"]) == 1 and one["takes"][0]["seed"] == SEED
    assert set(one["takes"][0]) == ANSWER_FIELDS | {"seed"}
    for fields in ({}, {"takes": None}):
        assert set(captioned(app, "Alice", "Hi there.", **fields)) == ANSWER_FIELDS


def test_takes_out_of_range_with_a_script_or_streamed_are_refused_before_any_work(app, voices):
    served = app.health()["served"]

    def refused(path: str, takes, text: str = "Hi there.", lang: str = "en") -> dict:
        reply = httpx.post(app.url + f"v1/audio/{path}", timeout=30, headers={"Accept-Language": lang},
                           json={"model": "cosyvoice3", "voice": "Alice", "input": text, "takes": takes})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["param"] == "takes" and error["code"] == "bad_input"
        return error

    for takes in (MIN_TAKES - 1, MAX_TAKES + 1, 1.5, "2", True):
        message = refused("captioned_speech", takes)["message"]
        assert message == M.notice("takes_range", "en", low=MIN_TAKES, high=MAX_TAKES), takes
    assert refused("captioned_speech", 0, lang="zh")["message"] == M.notice("takes_range", "zh", low=MIN_TAKES,
                                                                           high=MAX_TAKES)
    assert refused("captioned_speech", 2, text=SCRIPT)["message"] == M.notice("takes_one_text")
    assert refused("speech", 2)["message"] == M.notice("takes_not_streamed")
    health = app.health()
    assert health["served"] == served and health["inflight"] == 0


def test_a_client_that_leaves_before_the_takes_are_whole_cancels_every_take(app, voices):
    """captioned_speech answers once every take is whole: a client that closes its connection while
    they decode (all three at work in the worker at once) cancels them all, and none is served."""
    served = app.health()["served"]
    body = json.dumps({"model": "cosyvoice3", "voice": "Alice", "input": LONG_LINE, "takes": 3}).encode()
    with socket.create_connection(("127.0.0.1", app.port)) as conn:
        conn.sendall(b"POST /v1/audio/captioned_speech HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_until(lambda: len(app.health()["worker"]["busy"]) == 3, 30)  # batched: all three at once
    wait_until(lambda: not app.health()["worker"]["busy"] and app.health()["inflight"] == 0, 30)
    assert app.health()["served"] == served  # cancelled, none finished


def test_an_unknown_voice_is_refused_with_its_lines_before_any_work(app, voices):
    served = app.health()["served"]
    text = "[voice:Alice] One.\n[voice:Nobody] Two.\n[voice:Alice] Three.\n[voice:Nobody] Four."
    for path in ("speech", "captioned_speech"):
        reply = httpx.post(app.url + f"v1/audio/{path}", timeout=30,
                           json={"model": "cosyvoice3", "voice": "Alice", "input": text})
        assert reply.status_code == 400, reply.text
        error = reply.json()["error"]
        assert error["param"] == "input" and "Nobody" in error["message"] and "lines 2, 4" in error["message"]
    health = app.health()
    assert health["served"] == served and health["inflight"] == 0


def test_the_gradio_api_speaks_a_script_and_gives_its_captions(app, voices, recording):
    """The Gradio API's caller is a browser owner (its cookie): its saved voices are the ones a script names."""
    owner = "0123456789abcdef0123456789abcdef"
    library = VoiceLibrary(app.voices_dir)
    for voice in voices:
        info, prompt = library.load(OPEN_API_OWNER, voice.id)
        library.save(f"browser:{owner}", info.name, prompt)
    gradio = Client(app.url, verbose=False, headers={"Cookie": f"{OWNER_COOKIE}={owner}"})
    wav = gradio.predict(SCRIPT, "zero_shot", handle_file(str(recording)), "hello there", "", SEED, 1.0,
                         api_name="/synthesize")
    audio, rate = sf.read(wav, dtype="float32")
    assert rate == RATE and len(audio) > PAUSE_S * RATE
    wav, srt, vtt = gradio.predict(SCRIPT, "zero_shot", handle_file(str(recording)), "hello there", "", SEED, 1.0,
                                   api_name="/synthesize_captioned")
    cues = read_srt(open(srt, encoding="utf-8").read())
    assert [text.split(": ", 1)[0] for _, _, text in cues] == ["Alice", "Bob"]
    assert [v for *_, v in read_vtt(open(vtt, encoding="utf-8").read())] == ["Alice", "Bob"]
    assert abs(cues[-1][1] / 1000 - len(sf.read(wav)[0]) / RATE) <= 0.05


def test_a_client_that_leaves_mid_script_cancels_every_line_in_flight(app, client, voices):
    """The first line streams while the next ones already run in the worker (batched); leaving
    cancels all of them at once, and none is served."""
    text = "\n".join(f"[voice:{name}] {LONG_LINE}" for name in ("Alice", "Bob", "Alice"))
    served = app.health()["served"]

    def working_on() -> int:  # requests the worker is at work on (its last heartbeat)
        return len(app.health()["worker"]["busy"])

    with client.audio.speech.with_streaming_response.create(
            model="cosyvoice3", voice="Alice", input=text, response_format="pcm") as response:
        chunks = response.iter_bytes()  # kept: a dropped iterator would close the response now
        next(chunks)
        wait_until(lambda: working_on() == 3, 10)  # the next lines started before the first one ended
    wait_until(lambda: working_on() == 0, 10)
    assert app.health()["served"] == served  # cancelled, none finished
