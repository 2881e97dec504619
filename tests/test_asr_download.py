"""Where the recogniser comes from, against a local server that plays Hugging Face and ModelScope."""

import huggingface_hub
import pytest

from asr.files import DEMO_NAME, SENSEVOICE, STAGE, DownloadError, resolve_recognizer
from asr.recognizer import Recognizer
from cosyvoice3.errors import ModelLoadError
from tests.fake_hub import FakeHub


@pytest.fixture
def hub(demo_asr_dir):
    """Serves the demo recogniser's files under the released names."""
    server = FakeHub({name: (demo_asr_dir / name).read_bytes() for name in SENSEVOICE.files})
    yield server
    server.close()


def test_first_use_downloads_with_progress_then_the_cache_serves_offline(hub, tmp_path):
    reports = []
    resolved = resolve_recognizer(cache_dir=tmp_path, endpoints=[hub.endpoint()],
                                  progress=lambda stage, fraction, message: reports.append((stage, fraction, message)))
    assert resolved.source == "download" and not resolved.demo
    assert resolved.path == tmp_path / "models" / "SenseVoiceSmall"
    assert hub.repos == {"FunAudioLLM/SenseVoiceSmall"}
    fractions = [f for stage, f, _ in reports if stage == STAGE]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("model.pt" in message and "MB" in message for _, _, message in reports)
    assert Recognizer.from_pretrained(resolved.path).tokenizer.vocab_size > 0  # the files load as released

    offline = "http://127.0.0.1:9/{repo}/{path}"  # discard port: connection refused
    again = resolve_recognizer(cache_dir=tmp_path, endpoints=[offline], timeout=2)
    assert again.source == "cache" and again.path == resolved.path


def test_modelscope_is_asked_under_its_own_repository_name_when_hugging_face_fails(hub, tmp_path):
    resolved = resolve_recognizer(cache_dir=tmp_path, endpoints=[hub.endpoint("missing"), hub.template("modelscope")])
    assert resolved.source == "download"
    assert hub.repos == {"FunAudioLLM/SenseVoiceSmall", "iic/SenseVoiceSmall"}


def test_an_interrupted_checkpoint_download_resumes_with_a_range_request(hub, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 10_000)  # 10 MB blocks otherwise
    hub.cut["model.pt"] = 50_000
    resolved = resolve_recognizer(cache_dir=tmp_path, endpoints=[hub.endpoint()])
    assert ("model.pt", "bytes=50000-") in hub.requests
    assert (resolved.path / "model.pt").read_bytes() == hub.files["model.pt"]


def test_offline_without_a_cache_is_an_error_not_a_random_recogniser(tmp_path):
    with pytest.raises(DownloadError):
        resolve_recognizer(cache_dir=tmp_path, endpoints=["http://127.0.0.1:9/{repo}/{path}"], timeout=2)
    assert not (tmp_path / "models" / DEMO_NAME).exists()


def test_the_demo_model_gets_the_demo_recogniser_and_a_given_directory_wins(tmp_path):
    demo = resolve_recognizer(cache_dir=tmp_path, demo=True)
    assert demo.demo and demo.path == tmp_path / "models" / DEMO_NAME
    assert Recognizer.from_pretrained(demo.path).demo
    assert resolve_recognizer(demo.path, cache_dir=tmp_path).source == "given"
    with pytest.raises(ModelLoadError, match="not found"):
        resolve_recognizer(tmp_path / "missing")
