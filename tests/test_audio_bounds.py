"""Bounded decoding (cosyvoice3.frontend.audio.load_audio with max_seconds / max_bytes): a small
compressed file that holds an hour of silence is refused from its header, or decoding stops at
the limit when the header does not tell; the decoding process stays small either way."""

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cosyvoice3.errors import AudioDecodeError, PromptTooLongError, TooLongError, UnsupportedSampleRateError
from cosyvoice3.frontend.audio import MAX_SAMPLE_RATE, load_audio
from tests.conftest import ROOT

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
RATE = 16000
HOUR = 3600
LIMIT_S = 30.0
# What decoding the hour would take: 16 kHz float32 samples. A bounded decoder holds 30 s of it.
HOUR_MB = HOUR * RATE * 4 / 2**20  # 220 MB
GROWTH_LIMIT_MB = 40.0


def flac_without_length(path: Path) -> bytes:
    """The FLAC file with its STREAMINFO total-samples field zeroed: "length unknown", as a
    streaming encoder writes it (libsndfile then reports 2^63 - 1 frames)."""
    data = bytearray(path.read_bytes())
    assert data[:4] == b"fLaC"
    field = 8 + 10  # 'fLaC', the metadata block header, then min/max block and frame sizes
    value = int.from_bytes(data[field:field + 8], "big") & ~((1 << 36) - 1)
    data[field:field + 8] = value.to_bytes(8, "big")
    return bytes(data)


@pytest.fixture(scope="module")
def hour_flac(tmp_path_factory) -> Path:
    """An hour of 16 kHz silence: about 180 kB of FLAC, 220 MB decoded."""
    path = tmp_path_factory.mktemp("hour") / "hour.flac"
    block = np.zeros(RATE * 60, np.int16)
    with sf.SoundFile(path, "w", RATE, 1, "PCM_16", format="FLAC") as f:
        for _ in range(HOUR // 60):
            f.write(block)
    assert path.stat().st_size < 1 << 20
    return path


@pytest.fixture(scope="module")
def hour_wavpack(tmp_path_factory) -> Path:
    """An hour of 16 kHz silence in WavPack (ffmpeg reads it, libsndfile does not): about 60 kB."""
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    path = tmp_path_factory.mktemp("hour") / "hour.wv"
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", f"anullsrc=r={RATE}:cl=mono",
                    "-t", str(HOUR), "-c:a", "wavpack", str(path)], check=True, timeout=120)
    with pytest.raises(sf.LibsndfileError):
        sf.info(path)
    return path


def decode_in_a_subprocess(source: Path, env: dict | None = None, **options) -> dict:
    """Run load_audio(source, **options) in a fresh interpreter (the web process's imports: no
    torch) and report the outcome and how much its peak RSS grew while decoding."""
    script = f"""
import json, resource, sys
from cosyvoice3.frontend.audio import load_audio
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    wav, rate = load_audio(sys.argv[1], **{options!r})
    outcome = {{"seconds": len(wav) / rate}}
except Exception as e:
    outcome = {{"error": type(e).__name__, "message": str(e)}}
outcome["grew_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
outcome["torch"] = "torch" in sys.modules
print(json.dumps(outcome))
"""
    done = subprocess.run([sys.executable, "-c", script, str(source)], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def path_without_ffprobe(tmp_path: Path) -> dict:
    """An environment whose PATH has ffmpeg but no ffprobe (as with a static ffmpeg from pip)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "ffmpeg").symlink_to(FFMPEG)
    return {**os.environ, "PATH": str(folder)}


# ---------------------------------------------------------------------------- refused from the header


def test_an_hour_is_refused_from_the_header_before_any_sample_is_decoded(hour_flac, tmp_path):
    with pytest.raises(PromptTooLongError, match=r"3600\.0 s long; the limit is 30 s") as info:
        load_audio(hour_flac, max_seconds=LIMIT_S)
    assert info.value.code == "too_long"
    # The header alone decides: the same header in front of one frame of audio is refused the same.
    header_only = tmp_path / "header.flac"
    header_only.write_bytes(hour_flac.read_bytes()[:8192])
    with pytest.raises(PromptTooLongError, match=r"3600\.0 s long"):
        load_audio(header_only, max_seconds=LIMIT_S)


@needs_ffmpeg
def test_the_ffmpeg_path_reads_the_header_with_ffprobe(hour_wavpack):
    if shutil.which("ffprobe") is None:
        pytest.skip("ffprobe is not installed")
    with pytest.raises(PromptTooLongError, match=r"3600\.0 s long"):
        load_audio(hour_wavpack, max_seconds=LIMIT_S)
    with pytest.raises(PromptTooLongError, match=r"3600\.0 s long"):
        load_audio(hour_wavpack.read_bytes(), max_seconds=LIMIT_S)


# ---------------------------------------------------------------------------- stopped at the limit


def test_without_a_stated_length_decoding_stops_at_the_limit(hour_flac, tmp_path):
    unknown = tmp_path / "unknown-length.flac"
    unknown.write_bytes(flac_without_length(hour_flac))
    assert sf.info(unknown).frames > 2**62  # the header gives no length
    outcome = decode_in_a_subprocess(unknown, max_seconds=LIMIT_S)
    assert outcome["error"] == "PromptTooLongError" and "longer than the limit of 30 s" in outcome["message"]
    assert outcome["grew_mb"] < GROWTH_LIMIT_MB < HOUR_MB, outcome
    kept = decode_in_a_subprocess(unknown, max_seconds=LIMIT_S, truncate=True)
    assert kept["seconds"] == LIMIT_S and kept["grew_mb"] < GROWTH_LIMIT_MB, kept
    assert not kept["torch"]


@needs_ffmpeg
def test_ffmpeg_without_ffprobe_stops_at_the_limit(hour_wavpack, tmp_path):
    env = path_without_ffprobe(tmp_path)
    outcome = decode_in_a_subprocess(hour_wavpack, env=env, max_seconds=LIMIT_S)
    assert outcome["error"] == "PromptTooLongError" and "longer than the limit" in outcome["message"], outcome
    assert outcome["grew_mb"] < GROWTH_LIMIT_MB, outcome
    kept = decode_in_a_subprocess(hour_wavpack, env=env, max_seconds=LIMIT_S, truncate=True)
    assert kept["seconds"] == LIMIT_S and kept["grew_mb"] < GROWTH_LIMIT_MB, kept


def test_keeping_the_first_seconds_decodes_only_those(hour_flac):
    outcome = decode_in_a_subprocess(hour_flac, max_seconds=LIMIT_S, truncate=True)
    assert outcome["seconds"] == LIMIT_S and outcome["grew_mb"] < GROWTH_LIMIT_MB, outcome


@pytest.mark.parametrize("decoder", ["soundfile", pytest.param("ffmpeg", marks=needs_ffmpeg)])
def test_a_clip_at_the_limit_is_accepted_and_one_past_it_refused(tmp_path, decoder):
    rng = np.random.default_rng(0)
    for frames, accepted in ((int(LIMIT_S * RATE), True), (int(LIMIT_S * RATE) + RATE // 10, False)):
        audio = (0.1 * rng.standard_normal(frames)).astype(np.float32)
        path = tmp_path / f"{frames}.wav"
        sf.write(path, audio, RATE, subtype="FLOAT")
        if decoder == "ffmpeg":
            encoded = path.with_suffix(".wv")
            subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-i", str(path), "-c:a", "wavpack",
                            str(encoded)], check=True, timeout=60)
            path = encoded
        if accepted:
            wav, rate = load_audio(path, max_seconds=LIMIT_S)
            assert rate == RATE and len(wav) == frames
            np.testing.assert_allclose(wav, audio, atol=1e-6)
        else:
            with pytest.raises(PromptTooLongError):
                load_audio(path, max_seconds=LIMIT_S)
            wav, _ = load_audio(path, max_seconds=LIMIT_S, truncate=True)
            assert len(wav) == int(LIMIT_S * RATE)
            np.testing.assert_allclose(wav, audio[: len(wav)], atol=1e-6)


# ---------------------------------------------------------------------------- size, rate, channels


def test_a_file_over_the_upload_limit_is_refused_unread(tmp_path):
    path = tmp_path / "big.wav"
    sf.write(path, np.zeros(RATE * 4, np.float32), RATE, subtype="FLOAT")  # 256 kB
    limit = 100_000
    for source in (path, path.read_bytes()):
        with pytest.raises(TooLongError, match="upload limit"):
            load_audio(source, max_bytes=limit)
    stream = io.BytesIO(path.read_bytes())
    with pytest.raises(TooLongError):
        load_audio(stream, max_bytes=limit)
    assert stream.tell() == limit + 1  # read no further than needed to know
    assert len(load_audio(path, max_bytes=path.stat().st_size)[0]) == RATE * 4


def test_a_rate_above_the_maximum_is_refused_before_decoding(tmp_path):
    path = tmp_path / "fast.wav"
    sf.write(path, np.zeros(1000, np.float32), 2 * MAX_SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(UnsupportedSampleRateError, match=f"{2 * MAX_SAMPLE_RATE} Hz"):
        load_audio(path, max_seconds=LIMIT_S)


def test_many_channels_are_averaged_block_by_block(tmp_path):
    rng = np.random.default_rng(1)
    audio = (0.1 * rng.standard_normal((RATE * 3, 24))).astype(np.float32)
    path = tmp_path / "many.wav"
    sf.write(path, audio, RATE, subtype="FLOAT")
    wav, _ = load_audio(path, max_seconds=LIMIT_S)
    np.testing.assert_allclose(wav, audio.mean(axis=1), atol=1e-6)


@needs_ffmpeg
def test_ffmpeg_output_is_averaged_like_soundfile(tmp_path):
    stereo = np.stack([np.full(RATE, 0.5, np.float32), np.full(RATE, -0.25, np.float32)], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, RATE, subtype="FLOAT")
    encoded = tmp_path / "stereo.wv"
    subprocess.run([FFMPEG, "-nostdin", "-loglevel", "error", "-i", str(path), "-c:a", "wavpack", str(encoded)],
                   check=True, timeout=60)
    wav, _ = load_audio(encoded, max_seconds=LIMIT_S)
    np.testing.assert_allclose(wav, 0.125, atol=1e-6)


@needs_ffmpeg
def test_damaged_input_still_names_both_decoders(tmp_path):
    junk = tmp_path / "junk.webm"
    junk.write_bytes(np.random.default_rng(2).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioDecodeError, match="soundfile.*ffmpeg"):
        load_audio(junk, max_seconds=LIMIT_S)
