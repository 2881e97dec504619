"""TensorRT: building engines from our exports (TensorRT-RTX builds without a GPU), the cache
around builds, clean failure reasons, and - on a GPU - running engines from a context pool."""

from __future__ import annotations

import threading
import types
from pathlib import Path

import pytest
import torch

from engines import trt_backend
from engines.artifacts import source_hashes, trt_engine_for
from engines.cache import ArtifactCache
from engines.modules import dit_def, llm_decode_def
from engines.onnx_export import export_onnx
from engines.runner import BackendUnavailable
from engines.trt_backend import BuildFailed, TrtRunner, build_engine, find_tensorrt

MODEL = str(Path(__file__).resolve().parent / "golden" / "model")


@pytest.fixture(scope="module")
def pkg():
    try:
        return find_tensorrt()
    except BackendUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def defs():
    from cosyvoice3.config import load_config
    from cosyvoice3.nn.flow import load_flow
    from cosyvoice3.nn.llm import load_llm

    cfg = load_config(MODEL)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    flow = load_flow(f"{MODEL}/flow.pt", cfg.flow, device)
    lm = load_llm(f"{MODEL}/llm.pt", cfg.llm, cfg.qwen, device)
    return types.SimpleNamespace(dit=dit_def(flow.estimator), decode=llm_decode_def(lm))


@pytest.fixture(scope="module")
def onnx_files(defs, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    return {(m.name, p): export_onnx(m, out / f"{m.name}-{p}.onnx", p)
            for m in (defs.dit, defs.decode) for p in ("fp16", "fp32")}


def test_builder_builds_strongly_typed_engines_with_progress(pkg, defs, onnx_files):
    for mdef in (defs.dit, defs.decode):
        steps = []
        engine, timing = build_engine(pkg, onnx_files[(mdef.name, "fp16")], mdef.profile(),
                                      progress=lambda fraction, phase: steps.append(fraction))
        assert len(engine) > 10_000 and (pkg.is_rtx or len(timing) > 0)  # RTX has no timing cache
        assert steps and steps[-1] == 1.0 and all(0.0 <= f <= 1.0 for f in steps)


def test_engine_cache_around_real_builds(pkg, defs, onnx_files, tmp_path):
    cache, mdef, device = ArtifactCache(tmp_path), defs.dit, torch.device("cpu")
    sources = source_hashes(mdef, MODEL, cache)
    fp16 = onnx_files[("dit", "fp16")]
    first, meta, built = trt_engine_for(mdef, fp16, "fp16", sources, pkg, device, cache)
    assert built and meta["fields"]["trt_package"] == pkg.name and meta["fields"]["precision"] == "fp16"
    assert pkg.is_rtx or list(tmp_path.glob("timing-*.cache"))
    again, _, built = trt_engine_for(mdef, fp16, "fp16", sources, pkg, device, cache)
    assert not built and again == first
    _, other, built = trt_engine_for(mdef, onnx_files[("dit", "fp32")], "fp32", sources, pkg, device, cache)
    assert built and other["file"] != meta["file"]

    path = tmp_path / meta["file"]
    path.write_bytes(b"\0" * path.stat().st_size)  # corrupted in place
    rebuilt, _, built = trt_engine_for(mdef, fp16, "fp16", sources, pkg, device, cache)
    assert built and len(rebuilt) == len(first)


def test_unparsable_onnx_is_a_clean_build_failure(pkg, defs, tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not an onnx file")
    with pytest.raises(BuildFailed, match="ONNX parser"):
        build_engine(pkg, bad, defs.dit.profile())


def test_missing_profile_is_a_clean_build_failure(pkg, defs, onnx_files):
    profile = defs.dit.profile()
    del profile["chunk_frames"]
    with pytest.raises(BuildFailed, match="no profile shapes for input 'chunk_frames'"):
        build_engine(pkg, onnx_files[("dit", "fp16")], profile)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_runtime_without_a_gpu_is_unavailable(pkg, defs, onnx_files):
    engine, _ = build_engine(pkg, onnx_files[("dit", "fp16")], defs.dit.profile())
    with pytest.raises(BackendUnavailable, match="CUDA device"):
        TrtRunner(pkg, engine, "dit", defs.dit.inputs, defs.dit.outputs, "cpu", "fp16")


def test_missing_package_reason_lists_every_import_error(monkeypatch):
    monkeypatch.setattr(trt_backend, "PACKAGES", ("tensorrt_absent_a", "tensorrt_absent_b"))
    monkeypatch.setattr(trt_backend, "_found", {})
    with pytest.raises(BackendUnavailable, match="TensorRT is not installed.*tensorrt_absent_a.*tensorrt_absent_b"):
        find_tensorrt()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_engine_runs_from_a_context_pool_or_the_gpu_refusal_is_reported(pkg, defs, onnx_files):
    mdef = defs.dit
    engine, _ = build_engine(pkg, onnx_files[("dit", "fp16")], mdef.profile())
    try:
        runner = TrtRunner(pkg, engine, "dit", mdef.inputs, mdef.outputs, "cuda", "fp16", mdef.accepted(), contexts=2)
    except BackendUnavailable as e:  # TensorRT-RTX on compute capability 9.0 (H100)
        assert pkg.is_rtx and "compute capabilit" in str(e), e
        pytest.skip(f"engine refused by this GPU, as expected: {e}")
    reference = torch.no_grad()(mdef.wrapper)
    examples = [mdef.example({"batch": 2, "frames": n, "chunk": c}, "cuda") for n, c in ((64, 0), (130, 50), (333, 50))]
    results = [None] * len(examples)

    def work(i):
        stream = torch.cuda.Stream()
        with torch.cuda.stream(stream):
            results[i] = runner.run(examples[i])["velocity"]
        stream.synchronize()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(examples))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for ex, out in zip(examples, results):
        ref = reference(*[ex[s.name] for s in mdef.inputs])[0]
        assert float((out - ref).abs().max()) / max(1.0, float(ref.abs().max())) < mdef.tolerance["fp16"]
