"""Model resolution and download, against a local HTTP server that plays Hugging Face (through
huggingface_hub, as against the real hub) and ModelScope (a URL template)."""

import os
from pathlib import Path

import huggingface_hub
import pytest

from cosyvoice3 import download
from cosyvoice3.errors import ModelLoadError
from tests.fake_hub import FakeHub, fake_files

FILES = fake_files(download.MODEL_FILES)


@pytest.fixture
def hub():
    server = FakeHub(FILES)
    yield server
    server.close()


def assert_model_files(path: Path):
    for name, body in FILES.items():
        assert (path / name).read_bytes() == body, name
    assert not list(path.rglob("*.part"))


def test_download_fills_the_cache_then_the_cache_is_used(hub, tmp_path):
    reports = []
    resolved = download.resolve_model(cache_dir=tmp_path, endpoints=[hub.endpoint()],
                                      progress=lambda stage, fraction, message: reports.append((stage, fraction)))
    assert resolved.source == "download" and not resolved.demo
    assert resolved.path == tmp_path / "models" / download.MODEL_NAME
    assert_model_files(resolved.path)
    assert not (tmp_path / "models" / f"{download.MODEL_NAME}.partial").exists()
    fractions = [f for stage, f in reports if stage == "download"]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {name for name, _ in hub.requests} == set(download.MODEL_FILES)

    hub.requests.clear()
    again = download.resolve_model(cache_dir=tmp_path, endpoints=[hub.endpoint()])
    assert again.source == "cache" and again.path == resolved.path and hub.requests == []


def test_a_cut_transfer_is_resumed_with_a_range_request(hub, tmp_path, monkeypatch):
    """huggingface_hub continues a transfer cut short after the last whole block it wrote, in the
    same run (its blocks are 10 MB; the fake files are kB, so the blocks are made smaller)."""
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 500)
    hub.cut["llm.pt"] = 1000
    dest = tmp_path / "model"
    download.download_model(dest, [hub.endpoint()], progress=lambda *a: None)
    assert_model_files(dest)
    assert [r for r in hub.requests if r[0] == "llm.pt"] == [("llm.pt", None), ("llm.pt", "bytes=1000-")]
    assert set(hub.heads) == set(download.MODEL_FILES)  # the hub's metadata (ETag, commit) was asked for
    assert not (dest / download.HUB_CACHE).exists()


def test_a_download_stopped_midway_keeps_its_finished_files(hub, tmp_path):
    """The hub goes away during llm.pt: the files before it stay in <dest>.partial and are not
    asked for again; the next run fetches the rest."""
    hub.cut["llm.pt"], hub.down_after_cut = 1000, True
    dest = tmp_path / "model"
    with pytest.raises(download.DownloadError, match="503"):
        download.download_model(dest, [hub.endpoint()], progress=lambda *a: None)
    assert (tmp_path / "model.partial" / "cosyvoice3.yaml").is_file()  # finished files are kept
    assert not (tmp_path / "model.partial" / "llm.pt").exists() and not dest.exists()

    hub.down = False
    hub.requests.clear()
    download.download_model(dest, [hub.endpoint()], progress=lambda *a: None)
    assert_model_files(dest)
    assert "cosyvoice3.yaml" not in [name for name, _ in hub.requests]


def test_a_url_template_download_resumes_its_part_file_in_the_next_run(hub, tmp_path, monkeypatch):
    """ModelScope's way (a URL per file): a part file left by a stopped run is continued."""
    monkeypatch.setattr(huggingface_hub.constants, "DOWNLOAD_CHUNK_SIZE", 500)
    hub.cut["llm.pt"], hub.down_after_cut = 1000, True
    dest = tmp_path / "model"
    with pytest.raises(download.DownloadError):
        download.download_model(dest, [hub.template()], progress=lambda *a: None)
    assert (tmp_path / "model.partial" / "llm.pt.part").stat().st_size == 1000
    hub.down = False
    hub.requests.clear()
    download.download_model(dest, [hub.template()], progress=lambda *a: None)
    assert_model_files(dest)
    assert ("llm.pt", "bytes=1000-") in hub.requests


def test_the_second_endpoint_is_used_when_the_first_fails(hub, tmp_path):
    resolved = download.resolve_model(cache_dir=tmp_path, endpoints=[hub.endpoint("missing"), hub.endpoint()])
    assert resolved.source == "download"
    assert_model_files(resolved.path)


def test_offline_falls_back_to_the_demo_model_with_the_reason(tmp_path):
    closed = "http://127.0.0.1:9/{repo}/{path}"  # discard port: connection refused
    resolved = download.resolve_model(cache_dir=tmp_path, endpoints=[closed], timeout=2)
    assert resolved.demo and resolved.source == "demo" and "download failed" in resolved.reason
    assert resolved.path == tmp_path / "models" / download.DEMO_NAME
    assert (resolved.path / "llm.pt").is_file() and (resolved.path / "cosyvoice3.yaml").is_file()
    again = download.resolve_model(cache_dir=tmp_path, demo=True)
    assert again.path == resolved.path and again.demo


def test_a_given_directory_wins_and_must_exist(tmp_path):
    assert download.resolve_model(tmp_path, demo=True).path == tmp_path
    with pytest.raises(ModelLoadError, match="not found"):
        download.resolve_model(tmp_path / "missing")


def test_cache_root_and_endpoints_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COSYFAST_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.local/")
    monkeypatch.delenv("COSYFAST_MODEL_ENDPOINTS", raising=False)
    assert download.cache_root() == tmp_path
    assert download.default_endpoints()[0] == "http://mirror.local"
    assert "modelscope" in download.default_endpoints()[1]
    monkeypatch.setenv("COSYFAST_MODEL_ENDPOINTS", "http://a/{repo}/{path}, http://b/{repo}/{path}")
    assert download.default_endpoints() == ["http://a/{repo}/{path}", "http://b/{repo}/{path}"]
    monkeypatch.delenv("COSYFAST_CACHE")
    assert download.cache_root() == Path(os.path.expanduser("~/.cache/cosyfast"))


def test_hf_endpoint_is_where_the_default_download_goes(hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint())
    monkeypatch.delenv("COSYFAST_MODEL_ENDPOINTS", raising=False)
    resolved = download.resolve_model(cache_dir=tmp_path)
    assert resolved.source == "download"
    assert_model_files(resolved.path)
    assert hub.repos == {download.REPO}
