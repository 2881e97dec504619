"""The ONNX front-end runners on the demo stand-in models (cosyvoice3.features.onnx_models, demo_onnx)."""

import time
from pathlib import Path

import numpy as np
import pytest

from cosyvoice3.errors import ModelLoadError
from cosyvoice3.features.onnx_models import SpeakerEncoder, SpeechTokenizer
from cosyvoice3.tools.demo_onnx import write_demo_campplus, write_demo_speech_tokenizer

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN / "frontend.npz") as data:
        return {k: data[k] for k in data}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return (SpeakerEncoder(write_demo_campplus(folder / "campplus.onnx", seed=0)),
            SpeechTokenizer(write_demo_speech_tokenizer(folder / "speech_tokenizer_v3.onnx", seed=0)))


def test_demo_models_are_byte_identical_small_and_fast(tmp_path):
    for writer in (write_demo_campplus, write_demo_speech_tokenizer):
        start = time.perf_counter()
        first = writer(tmp_path / "a.onnx", seed=3).read_bytes()
        assert time.perf_counter() - start < 1.0
        second = writer(tmp_path / "b.onnx", seed=3).read_bytes()
        other = writer(tmp_path / "c.onnx", seed=4).read_bytes()
        assert first == second and first != other
        assert len(first) < 1_000_000


def test_demo_models_have_the_real_io(models):
    encoder, tokenizer = models
    assert [(i.name, i.shape, i.type) for i in encoder.session.get_inputs()] == \
        [("input", [1, "T", 80], "tensor(float)")]
    assert [(i.name, i.shape, i.type) for i in tokenizer.session.get_inputs()] == \
        [("feats", [1, 128, "T"], "tensor(float)"), ("feats_length", [1], "tensor(int32)")]
    assert encoder.providers == ["CPUExecutionProvider"]
    assert encoder.session.get_session_options().intra_op_num_threads == 1


def test_speaker_encoder_embeds(models, golden):
    encoder, _ = models
    embedding = encoder.embed(golden["campplus_fbank"])
    assert embedding.shape == (192,) and embedding.dtype == np.float32
    assert np.array_equal(encoder.embed(golden["campplus_fbank"][0]), embedding)   # (T, 80) accepted
    other = encoder.embed(golden["campplus_fbank"][:, :150] * 1.5)
    assert np.abs(other - embedding).max() > 1e-3


def test_speech_tokenizer_tokens(models, golden):
    _, tokenizer = models
    log_mel = golden["whisper_logmel"]                     # (1, 128, 300)
    tokens = tokenizer.tokenize(log_mel)
    assert tokens.dtype == np.int32 and tokens.shape == (75,)                    # 25 Hz
    assert tokens.min() >= 0 and tokens.max() < 6561
    assert len(np.unique(tokens)) > 10                                           # depends on the audio
    assert np.array_equal(tokenizer.tokenize(log_mel[0]), tokens)
    assert tokenizer.tokenize(log_mel[:, :, :201]).shape == (51,)               # ceil(T / 4)
    shifted = tokenizer.tokenize(np.roll(log_mel, 37, axis=2))
    assert not np.array_equal(shifted, tokens)


def test_missing_or_corrupt_model_files(tmp_path):
    with pytest.raises(ModelLoadError, match="campplus.onnx"):
        SpeakerEncoder(tmp_path / "campplus.onnx")
    broken = tmp_path / "speech_tokenizer_v3.onnx"
    broken.write_bytes(b"this is not an onnx model")
    with pytest.raises(ModelLoadError, match="speech_tokenizer_v3.onnx"):
        SpeechTokenizer(broken)
    # a model with the wrong inputs (the tokenizer given as the speaker encoder)
    wrong = write_demo_speech_tokenizer(tmp_path / "wrong.onnx")
    with pytest.raises(ModelLoadError, match="2 inputs"):
        SpeakerEncoder(wrong)
