"""campplus and the speech tokenizer (ONNX files) through the same Runner interface and selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cosyvoice3.features.onnx_models import SpeakerEncoder, SpeechTokenizer
from cosyvoice3.tools.demo_onnx import write_demo_campplus, write_demo_speech_tokenizer
from engines.modules import onnx_file_def
from engines.ort_backend import OrtRunner
from engines.runner import BackendUnavailable, FallbackRunner
from engines.adapters import RunnerSession
from engines.trt_backend import build_engine, find_tensorrt


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("frontend")
    return write_demo_campplus(d / "campplus.onnx"), write_demo_speech_tokenizer(d / "speech_tokenizer_v3.onnx")


def test_specs_are_read_from_the_files(files):
    campplus, tokenizer = onnx_file_def("campplus", files[0]), onnx_file_def("speech_tokenizer", files[1])
    assert [(s.name, s.dtype, s.shape) for s in campplus.inputs] == [("input", "float32", (1, "T", 80))]
    assert [s.name for s in campplus.outputs] == ["embedding"]
    assert [(s.name, s.dtype) for s in tokenizer.inputs] == [("feats", "float32"), ("feats_length", "int32")]
    assert tokenizer.value_dims == {"feats_length": "T"}
    assert tokenizer.shape_values()["feats_length"] == ([4], [500], [3000])
    assert campplus.profile()["input"] == ((1, 4, 80), (1, 500, 80), (1, 3000, 80))


def test_runners_match_the_front_end_classes(files):
    campplus, tokenizer = onnx_file_def("campplus", files[0]), onnx_file_def("speech_tokenizer", files[1])
    fbank = np.random.default_rng(0).standard_normal((1, 250, 80)).astype(np.float32)
    mel = np.random.default_rng(1).standard_normal((1, 128, 333)).astype(np.float32)
    emb = OrtRunner(files[0], "campplus", campplus.inputs, campplus.outputs).run({"input": torch.from_numpy(fbank)})
    toks = OrtRunner(files[1], "speech_tokenizer", tokenizer.inputs, tokenizer.outputs).run(
        {"feats": torch.from_numpy(mel), "feats_length": torch.tensor([333], dtype=torch.int32)})
    np.testing.assert_allclose(emb["embedding"].numpy().reshape(-1), SpeakerEncoder(files[0]).embed(fbank), atol=1e-6)
    assert toks["tokens"].numpy().reshape(-1).tolist() == SpeechTokenizer(files[1]).tokenize(mel).tolist()


def test_a_runner_serves_the_front_end_object(files):
    campplus = onnx_file_def("campplus", files[0])
    encoder = SpeakerEncoder(files[0])
    fbank = np.random.default_rng(2).standard_normal((1, 120, 80)).astype(np.float32)
    before = encoder.embed(fbank)
    runner = FallbackRunner([OrtRunner(files[0], "campplus", campplus.inputs, campplus.outputs)])
    through_runner = SpeakerEncoder(files[0], runner=RunnerSession(runner))
    np.testing.assert_allclose(through_runner.embed(fbank), before, atol=1e-6)
    assert through_runner.providers == ["CPUExecutionProvider"]  # the file's own session still names the inputs


def test_tensorrt_builds_both_front_end_files(files):
    try:
        pkg = find_tensorrt()
    except BackendUnavailable as e:
        pytest.skip(str(e))
    for name, path in zip(("campplus", "speech_tokenizer"), files):
        mdef = onnx_file_def(name, path)
        engine, _ = build_engine(pkg, path, mdef.profile(), shape_values=mdef.shape_values())
        assert len(engine) > 1000, name
