"""Eight API clients at once and a worker killed mid-way (SIGKILL while requests are in flight):
every request ends with audio that decodes, or an OpenAI-shaped error; none hangs."""

import io
import os
import signal
import threading

import openai
import pytest
import soundfile as sf

from tests.app_server import running_app, wait_until
from tests.browser.audio_samples import speechlike

CLIENTS = 8
TEXT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("load")) as server:
        yield server


def test_eight_clients_and_a_worker_kill_all_get_an_answer(app, tmp_path):
    sf.write(tmp_path / "dan.wav", speechlike(3.0, 16000), 16000)
    make = lambda: openai.OpenAI(base_url=app.url + "v1", api_key="-", max_retries=0, timeout=300)  # noqa: E731
    with open(tmp_path / "dan.wav", "rb") as f:
        make().audio.voices.create(audio_sample=f, consent="c", name="Dan", extra_body={"transcript": "hello"})
    answers: dict[int, object] = {}

    def speak(i: int) -> None:
        try:
            data = make().audio.speech.create(model="cosyvoice3", voice="Dan", input=TEXT, response_format="wav",
                                              extra_body={"seed": i}).content
            answers[i] = sf.read(io.BytesIO(data))[0]
        except openai.APIStatusError as e:
            answers[i] = e
    threads = [threading.Thread(target=speak, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    wait_until(lambda: app.health()["inflight"] >= 2, 120)
    os.kill(app.health()["worker"]["pid"], signal.SIGKILL)
    for thread in threads:
        thread.join(300)
    assert not any(thread.is_alive() for thread in threads), "a request hangs"
    assert sorted(answers) == list(range(CLIENTS))
    for i, answer in answers.items():
        if isinstance(answer, openai.APIStatusError):
            assert set(answer.body) == {"message", "type", "param", "code"}, (i, answer.body)
        else:
            assert len(answer) > 0, i
    assert app.health()["worker"]["restarts"] == 1
    assert sum(not isinstance(a, openai.APIStatusError) for a in answers.values()) >= CLIENTS // 2
