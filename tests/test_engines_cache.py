"""The engine cache: keys from model file hashes, precision and profile; corrupt or foreign
artefacts are rebuilt, never loaded; writes are atomic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from engines.artifacts import source_hashes, trt_fields
from engines.cache import ArtifactCache
from engines.modules import dit_def
from engines.trt_backend import TrtPackage

GOLDEN_MODEL = str(Path(__file__).resolve().parent / "golden" / "model")


class Builds:
    """A build function that writes distinct bytes and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, tmp):
        self.calls += 1
        tmp.write_bytes(f"engine #{self.calls}".encode() * 100)
        return {"build_s": 0.0}


@pytest.fixture
def model_dir(tmp_path):
    d = tmp_path / "model"
    shutil.copytree(GOLDEN_MODEL, d)
    for p in d.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return d


@pytest.fixture
def dit(model_dir):
    from cosyvoice3.config import load_config
    from cosyvoice3.nn.flow import load_flow

    cfg = load_config(model_dir)
    return dit_def(load_flow(model_dir / "flow.pt", cfg.flow).estimator)


def _fields(cache, mdef, model_dir, precision="fp16", profile=None):
    pkg = TrtPackage(None, "tensorrt_rtx", "1.7.1.116")
    sources = source_hashes(mdef, model_dir, cache)
    return trt_fields(mdef, "onnx-sha", sources, precision, pkg, torch.device("cpu"), profile or mdef.profile())


def test_hit_after_build_and_miss_after_model_file_change(tmp_path, model_dir, dit):
    cache, build = ArtifactCache(tmp_path / "cache"), Builds()
    fields = _fields(cache, dit, model_dir)
    assert set(fields["sources"]) == {"flow.pt", "cosyvoice3.yaml", "CosyVoice-BlankEN/config.json"}
    entry, built = cache.get_or_build("dit-fp16", fields, "engine", build)
    assert built and build.calls == 1
    again, built = cache.get_or_build("dit-fp16", fields, "engine", build)
    assert not built and again.path == entry.path and build.calls == 1

    state = torch.load(model_dir / "flow.pt", weights_only=True)
    state["decoder.estimator.proj_out.bias"] += 1e-3  # a fine-tuned flow.pt, same size and keys
    torch.save(state, model_dir / "flow.pt")
    changed = _fields(cache, dit, model_dir)
    assert changed["sources"]["flow.pt"] != fields["sources"]["flow.pt"]
    fresh, built = cache.get_or_build("dit-fp16", changed, "engine", build)
    assert built and build.calls == 2 and fresh.path != entry.path


def test_precision_gpu_trt_version_and_profile_are_part_of_the_key(tmp_path, model_dir, dit):
    cache = ArtifactCache(tmp_path / "cache")
    base = _fields(cache, dit, model_dir)
    cache.store("dit", base, "engine", data=b"x" * 64)
    profile = dit.profile({"frames": (1, 500, 6000)})
    variants = [_fields(cache, dit, model_dir, precision="fp32"),
                _fields(cache, dit, model_dir, profile=profile),
                {**base, "gpu": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"},
                {**base, "trt_package": "tensorrt", "trt_version": "10.13.3.9"}]
    for fields in variants:
        assert fields != base
        assert cache.lookup("dit", fields, "engine") is None
    assert cache.lookup("dit", base, "engine") is not None


def test_corrupt_engine_is_discarded_and_rebuilt(tmp_path, model_dir, dit):
    cache, build = ArtifactCache(tmp_path / "cache"), Builds()
    fields = _fields(cache, dit, model_dir)
    entry, _ = cache.get_or_build("dit-fp16", fields, "engine", build)
    data = bytearray(entry.path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    entry.path.write_bytes(bytes(data))
    assert cache.lookup("dit-fp16", fields, "engine") is None
    assert not entry.path.exists()  # deleted, never handed out
    rebuilt, built = cache.get_or_build("dit-fp16", fields, "engine", build)
    assert built and build.calls == 2 and rebuilt.path.read_bytes() != bytes(data)

    rebuilt.path.write_bytes(rebuilt.path.read_bytes()[:-10])  # truncated
    assert cache.lookup("dit-fp16", fields, "engine") is None


def test_foreign_metadata_is_rejected(tmp_path, model_dir, dit):
    cache = ArtifactCache(tmp_path / "cache")
    ours = _fields(cache, dit, model_dir)
    theirs = {**ours, "gpu": "another GPU"}
    mine = cache.store("dit", ours, "engine", data=b"ours" * 10)
    other = cache.store("dit", theirs, "engine", data=b"theirs" * 10)
    # an engine and metadata copied over from another machine under our file name
    shutil.copy(other.path, mine.path)
    meta = json.loads(other.path.with_name(other.path.name + ".json").read_text())
    mine.path.with_name(mine.path.name + ".json").write_text(json.dumps(meta))
    assert cache.lookup("dit", ours, "engine") is None
    assert cache.lookup("dit", theirs, "engine") is not None


def test_failed_build_leaves_nothing_behind(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")

    def failing(tmp):
        tmp.write_bytes(b"half an engine")
        raise RuntimeError("out of memory while building")

    with pytest.raises(RuntimeError, match="out of memory"):
        cache.get_or_build("dit-fp16", {"k": 1}, "engine", failing)
    leftovers = [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    assert leftovers == []
    assert cache.lookup("dit-fp16", {"k": 1}, "engine") is None


def test_file_hash_is_memoised_and_follows_changes(tmp_path):
    cache = ArtifactCache(tmp_path / "cache")
    f = tmp_path / "llm.pt"
    f.write_bytes(b"a" * 1000)
    first = cache.file_hash(f)
    assert cache.file_hash(f) == first
    assert str(f.resolve()) in json.loads((tmp_path / "cache" / "file_hashes.json").read_text())
    f.write_bytes(b"b" * 1001)
    assert cache.file_hash(f) != first


def test_modules_without_model_files_are_keyed_by_their_weights(tmp_path, dit):
    cache = ArtifactCache(tmp_path / "cache")
    before = source_hashes(dit, None, cache)
    with torch.no_grad():
        dit.wrapper.dit.proj_out.bias.add_(1.0)
    after = source_hashes(dit, None, cache)
    assert set(before) == {"state_dict"} and before != after
