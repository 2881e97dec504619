"""cosyvoice3.features.mel against the golden front-end features of the official implementation."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cosyvoice3.features import mel as features
from cosyvoice3.config import MelConfig, load_config

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN / "frontend.npz") as data:
        return {k: data[k] for k in data}


def test_campplus_fbank_matches_golden(golden):
    fbank = features.campplus_input(golden["wav_16k"][0])
    assert fbank.dtype == torch.float32 and tuple(fbank.shape) == golden["campplus_fbank"].shape
    np.testing.assert_allclose(fbank.numpy(), golden["campplus_fbank"], rtol=0, atol=1e-3)
    assert fbank.numpy().mean(axis=1) == pytest.approx(0.0, abs=1e-5)


def test_kaldi_fbank_frames_and_floor():
    for n in (400, 559, 560, 16000):
        assert features.kaldi_fbank(np.zeros(n, np.float32) + 0.01).shape == (1 + (n - 400) // 160, 80)
    silent = features.kaldi_fbank(np.zeros(800, np.float32))       # DC only: removed, power 0
    np.testing.assert_allclose(silent.numpy(), np.log(np.finfo(np.float32).eps), rtol=1e-6)
    with pytest.raises(ValueError):
        features.kaldi_fbank(np.zeros(399, np.float32))


def test_whisper_log_mel_matches_golden(golden):
    log_mel = features.whisper_log_mel(golden["wav_16k"][0], n_mels=128)
    assert log_mel.dtype == torch.float32
    assert tuple(log_mel.shape) == (128, int(golden["whisper_logmel_len"][0]))
    np.testing.assert_allclose(log_mel.numpy(), golden["whisper_logmel"][0], rtol=0, atol=1e-4)


def test_prompt_mel_matches_golden(golden):
    cfg = load_config(GOLDEN / "model").mel
    assert cfg == MelConfig()                       # the golden model uses the released settings
    mel = features.prompt_mel(golden["wav_24k"][0], cfg)
    assert mel.dtype == torch.float32
    assert tuple(mel.shape) == (int(golden["prompt_feat_len"][0]), 80)
    np.testing.assert_allclose(mel.numpy(), golden["prompt_feat"][0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("n", [24000, 24479, 24480, 30001])
def test_frame_counts(n):
    wav = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    assert features.prompt_mel(wav, MelConfig()).shape == (n // 480, 80)
    assert features.whisper_log_mel(wav).shape == (128, n // 160)


def test_slaney_filters_cover_the_band():
    filters = features.slaney_mel_filters(16000, 400, 128)
    assert filters.shape == (128, 201) and filters.min() >= 0
    assert np.all(filters.max(axis=1) > 0)                      # no empty filter
    mel24 = features.slaney_mel_filters(24000, 1920, 80)       # fmax None -> 12 kHz
    assert mel24[-1, -1] == 0 and mel24[-1, -10] > 0
    # Slaney normalisation: each triangle has area 1 in Hz (sampled every 12.5 Hz here).
    areas = mel24.sum(axis=1) * (24000 / 1920)
    np.testing.assert_allclose(areas[5:], 1.0, rtol=0.02)


def test_kaldi_banks_span_20hz_to_nyquist():
    banks = features.kaldi_mel_banks(80, 512, 16000)
    assert banks.shape == (80, 257) and np.all(banks[:, -1] == 0)
    used = np.flatnonzero(banks.sum(axis=0) > 0) * 16000 / 512
    assert 20 <= used[0] <= 60 and used[-1] > 7800
