"""`python app.py --demo --idle-release-minutes` over HTTP: an idle worker is healthy (/health 200,
status ok, state idle), and the OpenAI-compatible API's requests - a voice made, speech asked
for - wake it up instead of being refused. (The page: tests/browser/test_idle_browser.py; the
supervisor's rules: test_supervisor_idle.py.)"""

import io
import urllib.request

import numpy as np
import openai
import soundfile as sf

from tests.app_server import BOOT_TIMEOUT_S, AppServer
from tests.browser.audio_samples import speechlike


def is_idle(report: dict) -> bool:
    return report["worker"]["state"] == "idle" and report["worker"]["pid"] is None


def test_the_api_wakes_an_idle_worker_and_health_stays_ok(tmp_path):
    server = AppServer(tmp_path, ["--idle-release-minutes", "0.01"])  # 0.6 s
    try:
        server.wait_health(is_idle, BOOT_TIMEOUT_S)
        with urllib.request.urlopen(server.url + "health", timeout=5) as response:
            assert response.status == 200
        client = openai.OpenAI(base_url=server.url + "v1", api_key="unused", max_retries=0, timeout=120)
        recording = tmp_path / "alice.wav"
        sf.write(recording, speechlike(4.0, 16000), 16000)
        with open(recording, "rb") as f:
            voice = client.audio.voices.create(audio_sample=f, consent="cons_test", name="Alice",
                                               extra_body={"transcript": "hello there"})
        before = server.wait_health(is_idle, 60)
        assert before["status"] == "ok"
        speech = client.audio.speech.create(model="cosyvoice3", voice=voice.id, input="Hi there.",
                                            response_format="wav")
        audio, rate = sf.read(io.BytesIO(speech.content), dtype="float32")
        assert rate == 24000 and len(audio) > 0 and np.abs(audio).max() > 0
        after = server.health()
        assert after["worker"]["restarts"] == 0 and after["served"] > before["served"]
    finally:
        server.stop()
