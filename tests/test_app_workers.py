"""`python app.py --workers 2` as a user runs it: /health lists both workers (`worker` stays, the
first one), requests through the OpenAI-compatible API are served by both, and while one worker
is killed and restarts the app stays "ok" and serves on the other."""

import io
import os
import signal

import openai
import soundfile as sf

from tests.app_server import running_app
from tests.browser.audio_samples import speechlike

TEXT = "The quick brown fox jumps over the lazy dog."


def test_two_workers_serve_and_report_and_one_recovers_while_the_other_serves(tmp_path):
    with running_app(tmp_path, ["--workers", "2"]) as app:
        report = app.wait_health(lambda r: [w["state"] for w in r.get("workers", [])] == ["ready", "ready"], 180)
        first, second = report["workers"]
        assert (first["name"], second["name"]) == ("cosyfast-worker-0", "cosyfast-worker-1")
        assert report["worker"]["pid"] == first["pid"] != second["pid"] and report["status"] == "ok"
        assert report["max_queue"] == 128  # 64 per worker unless --max-queue says otherwise
        assert f"cosyfast-worker-1[{second['pid']}] worker: ready" in app.log_path.read_text()

        client = openai.OpenAI(base_url=app.url + "v1", api_key="-", max_retries=0, timeout=120)
        sf.write(tmp_path / "ann.wav", speechlike(3.0, 16000), 16000)
        with open(tmp_path / "ann.wav", "rb") as f:
            client.audio.voices.create(audio_sample=f, consent="c", name="Ann", extra_body={"transcript": "hello"})

        def speak(seed: int):
            data = client.audio.speech.create(model="cosyvoice3", voice="Ann", input=TEXT, response_format="wav",
                                              extra_body={"seed": seed}).content
            return sf.read(io.BytesIO(data))[0]

        for seed in range(2):  # an idle set takes turns: each worker serves
            assert len(speak(seed)) > 0
        served = [w["served"] for w in app.health()["workers"]]
        assert all(n >= 1 for n in served) and sum(served) == 3, served  # the voice's prompt and two speeches

        os.kill(second["pid"], signal.SIGKILL)
        down = app.wait_health(lambda r: r["workers"][1]["pid"] != second["pid"], 30)
        assert down["status"] == "ok" and down["workers"][0]["state"] == "ready"  # one ready worker is enough
        assert len(speak(5)) > 0  # served by the first worker while the second restarts
        back = app.wait_health(lambda r: r["workers"][1]["state"] == "ready", 180)
        assert back["workers"][1]["restarts"] == 1 and back["workers"][1]["last_restart_cause"] == "crashed"
        assert back["workers"][0]["restarts"] == 0 and back["status"] == "ok"
