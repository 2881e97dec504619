"""cosyvoice3.features.prepare: golden features end to end, alignment, validation errors, and
prepare_prompt on the demo ONNX models."""

from pathlib import Path

import numpy as np
import pytest
import soxr

from cosyvoice3 import errors
from cosyvoice3.config import MelConfig
from cosyvoice3.features.onnx_models import SpeakerEncoder, SpeechTokenizer
from cosyvoice3.features.prepare import align_prompt, compute_features, prepare_prompt, validate_prompt_audio
from cosyvoice3.frontend.audio import load_audio
from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.tools.demo_onnx import write_demo_campplus, write_demo_speech_tokenizer

GOLDEN = Path(__file__).resolve().parent / "golden"
MEL = MelConfig()


@pytest.fixture(scope="module")
def speech():
    """The golden 3 s speech-like prompt (24 kHz)."""
    wav, sr = load_audio(GOLDEN / "prompt_24k.wav")
    assert sr == 24000
    return wav


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    return (SpeakerEncoder(write_demo_campplus(folder / "campplus.onnx", seed=0)),
            SpeechTokenizer(write_demo_speech_tokenizer(folder / "speech_tokenizer_v3.onnx", seed=0)))


def prepare(models, audio, sr, **options):
    return prepare_prompt(audio, sr, "a transcript", *models, MEL, **options)


# ---------------------------------------------------------------------------- golden


def test_compute_features_matches_golden(speech):
    golden = np.load(GOLDEN / "frontend.npz")
    feats = compute_features(speech, 24000, MEL)
    np.testing.assert_array_equal(feats.wav_24k, golden["wav_24k"][0])
    np.testing.assert_allclose(feats.wav_16k, golden["wav_16k"][0], rtol=0, atol=1e-5)
    assert feats.campplus_fbank.shape == golden["campplus_fbank"].shape[1:]
    np.testing.assert_allclose(feats.campplus_fbank, golden["campplus_fbank"][0], rtol=0, atol=1e-3)
    assert feats.whisper_logmel.shape[1] == golden["whisper_logmel_len"][0]
    np.testing.assert_allclose(feats.whisper_logmel, golden["whisper_logmel"][0], rtol=0, atol=1e-4)
    assert feats.prompt_feat.shape[0] == golden["prompt_feat_len"][0]
    np.testing.assert_allclose(feats.prompt_feat, golden["prompt_feat"][0], rtol=0, atol=1e-4)


def test_alignment_matches_golden_e2e():
    e2e = np.load(GOLDEN / "e2e.npz")
    tokens, mel = align_prompt(e2e["prompt_speech_token_raw"][0], np.load(GOLDEN / "frontend.npz")["prompt_feat"][0])
    np.testing.assert_array_equal(tokens, e2e["llm_prompt_speech_token"][0])
    np.testing.assert_array_equal(tokens, e2e["flow_prompt_speech_token"][0])
    np.testing.assert_array_equal(mel, e2e["prompt_speech_feat"][0])


def test_alignment_truncates_the_longer_side():
    mel = np.zeros((151, 80), np.float32)
    tokens, cut = align_prompt(np.arange(80), mel)
    assert len(tokens) == 75 and cut.shape == (150, 80)
    tokens, cut = align_prompt(np.arange(60), mel)
    assert len(tokens) == 60 and cut.shape == (120, 80)


# ---------------------------------------------------------------------------- prepare_prompt


def test_prepare_prompt_on_demo_models_is_aligned_and_deterministic(models, speech):
    first = prepare(models, speech, 24000)
    assert isinstance(first, PreparedPrompt) and first.text == "a transcript"
    assert first.mel.shape[0] == 2 * len(first.speech_tokens) and first.mel.shape[1] == 80
    assert 60 <= len(first.speech_tokens) <= 75
    assert first.embedding.shape == (192,) and first.speech_tokens.dtype == np.int32
    assert 2.4 <= first.duration_s <= 3.0
    again = prepare(models, speech.copy(), 24000)
    assert np.array_equal(again.speech_tokens, first.speech_tokens)
    assert np.array_equal(again.embedding, first.embedding) and np.array_equal(again.mel, first.mel)
    untrimmed = prepare(models, speech, 24000, trim=False)
    assert untrimmed.duration_s == 3.0 and len(untrimmed.speech_tokens) == 75


def test_prepare_prompt_stereo_44k_int16(models, speech):
    mono_44k = soxr.resample(speech, 24000, 44100)
    stereo = np.stack([mono_44k, 0.8 * mono_44k], axis=1)                 # (N, 2)
    pcm = np.round(np.clip(stereo, -1, 1) * 32767).astype(np.int16)
    prompt = prepare(models, pcm, 44100)
    assert prompt.mel.shape[0] == 2 * len(prompt.speech_tokens) >= 120
    reference = prepare(models, speech, 24000)
    # same sound at another rate and level: similar mel (log scale, level offset ~ log 0.9)
    n = min(len(prompt.mel), len(reference.mel))
    assert np.median(np.abs(prompt.mel[:n] - reference.mel[:n])) < 0.5


@pytest.mark.parametrize("make,error", [
    (lambda s: s[:int(0.2 * 24000)], errors.PromptTooShortError),
    (lambda s: np.zeros(24000 * 3, np.float32), errors.SilentPromptError),
    (lambda s: s * 1e-5, errors.SilentPromptError),
    (lambda s: np.tile(s, 20), errors.PromptTooLongError),
    (lambda s: np.where(np.arange(len(s)) == 5000, np.nan, s).astype(np.float32), errors.BadInputError),
    (lambda s: np.where(np.arange(len(s)) == 5000, np.inf, s).astype(np.float32), errors.BadInputError),
    (lambda s: s[:0], errors.PromptTooShortError),
])
def test_unusable_prompts_raise(models, speech, make, error):
    with pytest.raises(error) as info:
        prepare(models, make(speech), 24000)
    assert info.value.code in ("bad_input", "too_long")


def test_error_messages_name_the_numbers(models, speech):
    with pytest.raises(errors.PromptTooLongError, match=r"60\.0 s long; the limit is 30 s") as info:
        validate_prompt_audio(np.tile(speech, 20), 24000, trim=False, max_seconds=30)
    assert info.value.code == "too_long"
    with pytest.raises(errors.UnsupportedSampleRateError, match="8000 Hz") as info:
        prepare(models, soxr.resample(speech, 24000, 8000), 8000)
    assert info.value.code == "bad_input"
    with pytest.raises(errors.UnsupportedSampleRateError, match="768000 Hz"):
        validate_prompt_audio(speech, 768000)
    with pytest.raises(errors.PromptTooShortError, match="after removing silence"):
        padded = np.concatenate([np.zeros(48000, np.float32), speech[:12000], np.zeros(48000, np.float32)])
        validate_prompt_audio(padded, 24000)
    with pytest.raises(ValueError):
        prepare(models, speech, 24000, max_seconds=60)


def test_long_prompt_truncated(models, speech):
    long = np.tile(speech, 20)                                             # 60 s
    prompt = prepare(models, long, 24000, truncate=True)
    assert prompt.duration_s == 30.0
    assert len(prompt.speech_tokens) == 750 and prompt.mel.shape == (1500, 80)
