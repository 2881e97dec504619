"""cosyvoice3.frontend.audio: decoding real files (soundfile and ffmpeg), resampling, trimming, level."""

import io
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from cosyvoice3.errors import AudioDecodeError, BadInputError, PromptTooLongError
from cosyvoice3.frontend.audio import (
    as_mono_float32,
    duration,
    load_audio,
    normalize_level,
    resample,
    sound_bounds,
    trim_silence,
)

GOLDEN = Path(__file__).resolve().parent / "golden"
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed: webm/m4a cannot be decoded")


def tone(sr: int, seconds: float, hz: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def best_alignment_error(decoded: np.ndarray, original: np.ndarray, max_shift: int = 2000) -> float:
    """Smallest RMS difference over small shifts (lossy codecs add encoder delay)."""
    n = min(len(original), len(decoded)) - max_shift
    errors = [np.sqrt(np.mean((decoded[s:s + n] - original[:n]) ** 2)) for s in range(0, max_shift, 1)]
    return float(min(errors))


# ---------------------------------------------------------------------------- soundfile formats


@pytest.mark.parametrize("fmt,subtype,exact", [("WAV", "PCM_16", True), ("WAV", "FLOAT", True),
                                               ("FLAC", "PCM_16", True), ("OGG", "VORBIS", False),
                                               ("MP3", "MPEG_LAYER_III", False)])
def test_load_soundfile_formats(tmp_path, fmt, subtype, exact):
    original = tone(44100, 1.0)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, original, 44100, format=fmt, subtype=subtype)
    wav, sr = load_audio(path)
    assert sr == 44100 and wav.dtype == np.float32 and wav.ndim == 1
    if exact:
        np.testing.assert_allclose(wav, original, atol=1 / 32768 + 1e-7)
    else:
        assert abs(len(wav) - len(original)) < 4096
        assert best_alignment_error(wav, original) < 0.05
    # the same file given as bytes and as a file object
    for source in (path.read_bytes(), io.BytesIO(path.read_bytes())):
        again, sr2 = load_audio(source)
        assert sr2 == sr and np.array_equal(again, wav)


def test_int_pcm_is_scaled_and_stereo_averaged(tmp_path):
    left = np.full(1000, 16384, dtype=np.int16)      # 0.5
    right = np.full(1000, -8192, dtype=np.int16)     # -0.25
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="PCM_16")
    wav, sr = load_audio(str(path))
    assert sr == 16000 and wav.shape == (1000,)
    np.testing.assert_allclose(wav, 0.125, atol=1e-7)


def test_as_mono_float32_handles_program_arrays():
    stereo_int16 = np.stack([np.full(500, 32767, np.int16), np.full(500, -32768, np.int16)], axis=1)
    np.testing.assert_allclose(as_mono_float32(stereo_int16), (32767 / 32768 - 1) / 2, atol=1e-7)
    np.testing.assert_allclose(as_mono_float32(stereo_int16.T), (32767 / 32768 - 1) / 2, atol=1e-7)
    np.testing.assert_allclose(as_mono_float32(np.full(10, 192, np.uint8)), 0.5)
    assert as_mono_float32(np.zeros(10, np.float64)).dtype == np.float32
    with pytest.raises(BadInputError):
        as_mono_float32(np.array(["a", "b"]))


# ---------------------------------------------------------------------------- ffmpeg formats


@needs_ffmpeg
@pytest.mark.parametrize("suffix,codec", [("webm", "libopus"), ("m4a", "aac")])
def test_load_ffmpeg_formats(tmp_path, suffix, codec):
    original = tone(48000, 1.5, hz=330.0)
    source = tmp_path / "in.wav"
    sf.write(source, np.stack([original, original], axis=1), 48000)
    encoded = tmp_path / f"out.{suffix}"
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-c:a", codec,
                    "-b:a", "96k", str(encoded)], check=True, timeout=60)
    with pytest.raises(sf.LibsndfileError):
        sf.read(encoded)                      # really needs the fallback
    for item in (encoded, encoded.read_bytes()):
        wav, sr = load_audio(item)
        assert sr == 48000 and wav.dtype == np.float32 and wav.ndim == 1
        assert abs(len(wav) - len(original)) < 4096
        assert best_alignment_error(wav, original, max_shift=3000) < 0.05


# What phones' MediaRecorder writes: iOS Safari AAC in a fragmented MP4 (no sample table up
# front), Android Chrome Opus in a WebM written as a stream (no duration, no cues).
PHONE_RECORDINGS = {
    "ios.mp4": ["-c:a", "aac", "-b:a", "64k", "-movflags", "frag_keyframe+empty_moov", "-f", "mp4"],
    "ios.m4a": ["-c:a", "aac", "-b:a", "128k", "-movflags", "frag_keyframe+empty_moov+default_base_moof",
                "-f", "mp4"],
    "android.webm": ["-c:a", "libopus", "-b:a", "32k", "-f", "webm"],
}


@needs_ffmpeg
@pytest.mark.parametrize("name", sorted(PHONE_RECORDINGS))
def test_phone_recordings_decode_whole_and_within_bounds(tmp_path, name):
    original = tone(48000, 1.5, hz=330.0)
    source = tmp_path / "in.wav"
    sf.write(source, original, 48000)  # a phone's microphone: mono
    recorded = tmp_path / name
    with open(recorded, "wb") as out:  # written to a pipe, as a recorder streams it: nothing is patched in later
        subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-i", str(source), *PHONE_RECORDINGS[name],
                        "pipe:1"], stdout=out, check=True, timeout=60)
    with pytest.raises(sf.LibsndfileError):
        sf.read(recorded)                      # really the ffmpeg path
    for item in (recorded, recorded.read_bytes()):
        wav, sr = load_audio(item, max_seconds=30.0)
        assert sr == 48000 and wav.ndim == 1 and abs(len(wav) - len(original)) < 4096
        assert best_alignment_error(wav, original, max_shift=3000) < 0.05
    cut, sr = load_audio(recorded, max_seconds=1.0, truncate=True)
    assert len(cut) == sr
    with pytest.raises(PromptTooLongError):
        load_audio(recorded, max_seconds=1.0)


@needs_ffmpeg
def test_without_ffmpeg_the_error_says_so(tmp_path, monkeypatch):
    source = tmp_path / "in.wav"
    sf.write(source, tone(48000, 0.5), 48000)
    encoded = tmp_path / "out.webm"
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-c:a", "libopus",
                    str(encoded)], check=True, timeout=60)
    monkeypatch.setenv("PATH", str(tmp_path))               # a PATH without ffmpeg
    with pytest.raises(AudioDecodeError, match="ffmpeg: not installed"):
        load_audio(encoded)


def test_corrupt_bytes_raise_a_readable_error(tmp_path):
    junk = np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes()
    with pytest.raises(AudioDecodeError) as info:
        load_audio(junk)
    message = str(info.value)
    assert "damaged or not in a supported audio format" in message and "soundfile" in message
    assert "ffmpeg" in message and "0x" not in message
    assert info.value.code == "bad_input"
    truncated = tmp_path / "cut.wav"
    sf.write(truncated, tone(16000, 1.0), 16000)
    truncated.write_bytes(truncated.read_bytes()[:30])
    with pytest.raises(AudioDecodeError):
        load_audio(truncated)
    with pytest.raises(AudioDecodeError, match="empty"):
        load_audio(b"")
    with pytest.raises(AudioDecodeError, match="not found"):
        load_audio(tmp_path / "missing.wav")


# ---------------------------------------------------------------------------- resampling


def torchaudio_resample_dense(wav: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """torchaudio's algorithm as documented: a dense polyphase kernel and a strided conv1d."""
    g = math.gcd(sr_in, sr_out)
    orig, new = sr_in // g, sr_out // g
    base = min(orig, new) * 0.99
    width = math.ceil(6 * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx) * base
    t = t.clamp(-6, 6)
    window = torch.cos(t * math.pi / 12) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), t.sin() / t) * window * (base / orig)
    x = torch.nn.functional.pad(torch.from_numpy(wav).double()[None], (width, width + orig))
    out = torch.nn.functional.conv1d(x[:, None], kernel, stride=orig).transpose(1, 2).reshape(-1)
    return out[:math.ceil(new * len(wav) / orig)].numpy()


def test_reference_resampler_matches_golden():
    golden = np.load(GOLDEN / "frontend.npz")
    wav_16k = resample(golden["wav_24k"][0], 24000, 16000, method="reference")
    assert wav_16k.shape == (48000,) and wav_16k.dtype == np.float32
    np.testing.assert_allclose(wav_16k, golden["wav_16k"][0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("sr_in,sr_out,n", [(44100, 16000, 22051), (16000, 24000, 8001), (48000, 24000, 9999),
                                            (22050, 16000, 7000), (44100, 24000, 12345)])
def test_reference_resampler_equals_dense_torchaudio_algorithm(sr_in, sr_out, n):
    wav = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.3
    ours = resample(wav, sr_in, sr_out, method="reference")
    dense = torchaudio_resample_dense(wav, sr_in, sr_out)
    assert ours.shape == dense.shape
    np.testing.assert_allclose(ours, dense, rtol=0, atol=1e-6)


def test_resamplers_keep_a_tone():
    for sr_in, sr_out in [(44100, 16000), (16001, 16000), (8000, 24000)]:
        wav = tone(sr_in, 0.5, hz=1000.0)
        expected = tone(sr_out, 0.5, hz=1000.0)
        for method in ("reference", "soxr"):
            out = resample(wav, sr_in, sr_out, method=method)
            assert out.dtype == np.float32 and abs(len(out) - len(expected)) <= 1
            inner = slice(200, len(expected) - 200)      # away from the edges
            np.testing.assert_allclose(out[inner], expected[inner], atol=3e-3)


def test_resample_checks_arguments():
    wav = tone(16000, 0.1)
    assert np.array_equal(resample(wav, 16000, 16000, method="reference"), wav)
    with pytest.raises(ValueError):
        resample(wav, 16000, 8000, method="linear")
    with pytest.raises(ValueError):
        resample(np.stack([wav, wav]), 16000, 8000)


# ---------------------------------------------------------------------------- trimming and level


def test_trim_silence_keeps_the_sound_and_a_margin():
    sr = 16000
    quiet = np.random.default_rng(1).standard_normal(sr).astype(np.float32) * 1e-5
    wav = np.concatenate([quiet, tone(sr, 1.0), quiet, quiet])
    begin, end = sound_bounds(wav, sr, margin_s=0.1)
    assert abs(begin - 0.9 * sr) <= 0.01 * sr and abs(end - 2.1 * sr) <= 0.02 * sr
    assert np.array_equal(trim_silence(wav, sr, margin_s=0.1), wav[begin:end])
    assert len(trim_silence(np.zeros(sr, np.float32), sr)) == 0
    loud = tone(sr, 1.0)
    assert len(trim_silence(loud, sr)) == len(loud)


def test_normalize_level_and_duration():
    wav = tone(16000, 0.5, amplitude=0.1)
    out = normalize_level(wav, peak=0.8)
    assert np.max(np.abs(out)) == pytest.approx(0.8, abs=1e-6)
    assert np.array_equal(normalize_level(np.zeros(5, np.float32)), np.zeros(5, np.float32))
    assert duration(wav, 16000) == 0.5
