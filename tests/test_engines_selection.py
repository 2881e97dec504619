"""Backend selection on this CPU machine: every fallback carries its reason, engines are handed
to the model as its backends, a failing engine call falls back to PyTorch for that call."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from cosyvoice3.spec import SpeechSpec
from engines import trt_backend
from engines.adapters import EstimatorAdapter, RunnerDecodeSteps
from engines.runner import FallbackRunner, TensorSpec
from engines.selection import EngineConfig, build_backends, build_runners
from engines.torch_backend import TorchRunner

MODEL = str(Path(__file__).resolve().parent / "golden" / "model")


def load_model():
    from cosyvoice3.pipeline import load_parts

    return load_parts(MODEL)


@pytest.fixture
def no_tensorrt(monkeypatch):
    """A machine without any TensorRT package (whatever this venv has installed)."""
    monkeypatch.setattr(trt_backend, "PACKAGES", ("tensorrt_not_installed_here",))
    monkeypatch.setattr(trt_backend, "_found", {})


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("engines")


def test_auto_without_tensorrt_falls_back_with_reasons(no_tensorrt, cache_dir):
    model = load_model()
    steps = []
    config = EngineConfig(cache_dir=cache_dir, modules=("dit", "llm_decode"), measure=False)
    backends = build_backends(model, config=config,
                              progress=lambda stage, fraction, message="": steps.append((stage, fraction, message)))
    report = backends.report
    for name in ("dit", "llm_decode"):
        r = report[name]
        assert (r["backend"], r["precision"], r["device"]) == ("onnxruntime", "fp32", "cpu")
        assert "tensorrt: TensorRT is not installed" in r["reason"] and "tensorrt_not_installed_here" in r["reason"]
        assert "torch-cuda: no CUDA device" in r["reason"]
        assert r["fallback"] == "torch/fp32"
        assert [t["backend"] for t in r["tried"]] == ["tensorrt", "torch-cuda", "onnxruntime"]
    assert isinstance(backends.estimator, EstimatorAdapter) and backends.vocoder is None
    assert isinstance(backends.decode_steps, RunnerDecodeSteps) and backends.decode_steps.prefill_runner is None
    assert report["flow"]["backend"] == "onnxruntime" and report["llm"]["backend"] == "onnxruntime"
    assert steps[-1][1] == 1.0 and any("exporting to ONNX" in s[2] for s in steps)


def test_second_start_uses_the_cached_exports(no_tensorrt, cache_dir):
    first = sorted(p.name for p in cache_dir.glob("*.onnx"))
    before = {p.name: p.stat().st_mtime_ns for p in cache_dir.glob("*.onnx")}
    report = build_backends(load_model(), config=EngineConfig(cache_dir=cache_dir, modules=("dit", "llm_decode"),
                                                              measure=False)).report
    assert report["dit"]["backend"] == "onnxruntime"
    assert sorted(p.name for p in cache_dir.glob("*.onnx")) == first
    assert {p.name: p.stat().st_mtime_ns for p in cache_dir.glob("*.onnx")} == before


def test_onnxruntime_is_kept_only_where_it_is_faster(no_tensorrt, cache_dir):
    report = build_backends(load_model(), config=EngineConfig(cache_dir=cache_dir, modules=("dit",))).report["dit"]
    ort = next(t for t in report["tried"] if t["backend"] == "onnxruntime")
    if report["backend"] == "onnxruntime":
        assert ort["ok"]
    else:  # PyTorch was as fast at the measured size: the report says so, with both times
        assert report["backend"] == "torch" and report["detail"] == "the model's own module"
        assert "onnxruntime: not faster than PyTorch here (" in report["reason"] and " ms vs " in report["reason"]


def test_backend_torch_keeps_the_model_modules(cache_dir):
    backends = build_backends(load_model(), config=EngineConfig(backend="torch", cache_dir=cache_dir,
                                                                modules=("dit", "hift")))
    report = backends.report
    assert report["dit"]["backend"] == "torch" and report["dit"]["detail"] == "the model's own module"
    assert "torch-cuda: no CUDA device" in report["dit"]["reason"]
    assert backends.estimator is None and backends.vocoder is None and backends.decode_steps is None


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="unknown backend"):
        build_runners(load_model(), EngineConfig(backend="tpu"))


class Sqrt(nn.Module):
    """sqrt(x): NaN for negative inputs, like an FP16 engine that overflowed."""

    def forward(self, x):
        return (x.sqrt(),)


class Abs(nn.Module):
    def forward(self, x):
        return (x.abs().sqrt(),)


class Raises(nn.Module):
    def forward(self, x):
        raise RuntimeError("engine enqueue failed")


def _runner(module, dims=None):
    spec = (TensorSpec("x", "float32", ("n",)),)
    return TorchRunner(module, "toy", spec, (TensorSpec("y", "float32", ("n",)),), "cpu", dims=dims or {})


def test_fallback_runner_answers_nan_calls_with_the_next_backend():
    chain = FallbackRunner([_runner(Sqrt()), _runner(Abs())])
    good = chain.run({"x": torch.tensor([4.0, 9.0])})["y"]
    assert good.tolist() == [2.0, 3.0] and chain.fallbacks == {}
    bad = chain.run({"x": torch.tensor([-4.0, 9.0])})["y"]
    assert bad.tolist() == [2.0, 3.0]  # answered by the second runner
    assert sum(chain.fallbacks.values()) == 1 and "NaN/Inf in y" in chain.last_fallback
    assert chain.run({"x": torch.tensor([1.0])})["y"].tolist() == [1.0]  # the first runner again
    assert sum(chain.fallbacks.values()) == 1


def test_fallback_runner_on_errors_and_unsupported_shapes():
    chain = FallbackRunner([_runner(Raises()), _runner(Abs())])
    assert chain.run({"x": torch.tensor([4.0])})["y"].tolist() == [2.0]
    assert "engine enqueue failed" in chain.last_fallback

    small = FallbackRunner([_runner(Raises(), {"n": (1, 2)}), _runner(Abs())])
    assert small.run({"x": torch.ones(5)})["y"].shape == (5,)
    assert "n=5 outside 1..2" in small.last_fallback

    last_fails = FallbackRunner([_runner(Sqrt()), _runner(Raises())])
    with pytest.raises(RuntimeError, match="engine enqueue failed"):
        last_fails.run({"x": torch.tensor([-1.0])})


@pytest.mark.slow
def test_pipeline_with_auto_engines_gives_the_same_audio(tmp_path, monkeypatch, no_tensorrt):
    import numpy as np
    import soundfile as sf

    from cosyvoice3.pipeline import CosyVoice3, load_parts
    from cosyvoice3.tools.demo import write_demo_model

    monkeypatch.setenv("COSYFAST_ENGINE_CACHE", str(tmp_path / "cache"))
    model_dir = write_demo_model(tmp_path / "demo")
    audio, rate = sf.read(Path(__file__).resolve().parent / "golden" / "prompt_24k.wav", dtype="float32")
    pcm = {}
    for backend in ("torch", "auto"):
        parts = load_parts(model_dir)
        model = CosyVoice3(parts, build_backends(parts, backend=backend))
        prompt = model.prepare_prompt(audio, rate, "a prompt text")
        for stream in (False, True):
            spec = SpeechSpec("Hello there.", prompt_text=prompt.text, seed=3, stream=stream)
            pcm[backend, stream] = np.concatenate(list(model.synthesize(spec, prompt)))
    info = model.info()["backends"]
    for seam in ("flow", "hift", "llm", "llm_prefill", "campplus", "speech_tokenizer"):
        assert "tensorrt: TensorRT is not installed" in info[seam]["reason"], seam
    for stream in (False, True):
        assert pcm["auto", stream].shape == pcm["torch", stream].shape and pcm["torch", stream].size > 0
        assert np.abs(pcm["auto", stream] - pcm["torch", stream]).max() < 1e-4


def test_a_restart_runs_the_backends_of_the_last_start_untimed(no_tensorrt, tmp_path):
    """The choice of `auto` (partly made by timing) is remembered per machine and model: the next
    start tries it first and does not time it again, so it cannot switch."""
    config = EngineConfig(cache_dir=tmp_path, modules=("dit", "hift"))
    first = build_backends(load_model(), config=config).report
    assert len(list((tmp_path / "choices").glob("*.json"))) == 2
    second = build_backends(load_model(), config=config).report
    for name in ("dit", "hift"):
        assert (second[name]["backend"], second[name]["precision"]) == (first[name]["backend"], first[name]["precision"])
        assert not first[name]["remembered"] and second[name]["remembered"]
        assert "not faster than PyTorch" not in second[name]["reason"]  # nothing was timed
        if second[name]["tried"]:
            assert second[name]["tried"][0]["ok"]  # the remembered candidate, first and only


def test_a_remembered_backend_that_no_longer_sets_up_is_replaced(no_tensorrt, tmp_path):
    import json

    config = EngineConfig(cache_dir=tmp_path, modules=("dit",), measure=False)
    build_backends(load_model(), config=config)
    record = next((tmp_path / "choices").glob("*.json"))
    record.write_text(json.dumps({"module": "dit", "choice": "torch-cuda", "precision": "fp16"}))  # not here
    report = build_backends(load_model(), config=config).report["dit"]
    assert report["tried"][0] == {"backend": "torch-cuda", "ok": False, "reason": "no CUDA device"}
    assert report["backend"] == "onnxruntime" and not report["remembered"]
    assert json.loads(record.read_text())["choice"] == "onnxruntime"


def test_the_default_dtype_is_the_devices_fast_precision():
    import torch

    from engines import model_dtype

    assert model_dtype("auto", "cpu") == torch.float32  # the CPU keeps float32
    assert model_dtype("bfloat16", "cpu") == torch.bfloat16 and model_dtype("float16", "cuda") == torch.float16
