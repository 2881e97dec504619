"""Prompt audio in: bounded decoding, resampling, silence trimming and level.

`load_audio` reads a path, raw bytes or a file object with soundfile (wav, flac, ogg/vorbis,
ogg/opus, mp3) and falls back to an `ffmpeg` subprocess for everything else browsers and phones
produce (webm/opus, m4a/aac, ...). The result is always float32 mono in [-1, 1].

Decoding is bounded, because uploads are decoded in the web process: a file larger than
`max_bytes` is refused before it is read; the container's header (soundfile's, or `ffprobe`'s for
the ffmpeg path) gives the rate, channels and, where it states one, the length, so a clip longer
than `max_seconds` is refused before any sample is decoded; and no more than `max_seconds` is ever
decoded whatever the header says (soundfile reads at most that many frames, block by block;
ffmpeg runs with `-t` and its output is read up to that many samples). Channels are averaged
block by block, so what is held is one mono clip of at most `max_seconds` at no more than
MAX_SAMPLE_RATE, plus one block.

`resample` has two methods:
- "reference": the windowed-sinc resampler of `torchaudio.transforms.Resample` with its defaults
  (Hann window, lowpass_filter_width 6, rolloff 0.99, rates reduced by their gcd), written here
  in torch. The prompt front end uses it so our features match the official implementation.
- "soxr": the soxr library, for everything where bit-level agreement does not matter (UI).

This module imports torch only inside the reference resampler, so the app process can decode and
resample uploads with soxr without loading torch.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

from cosyvoice3.errors import (
    AudioDecodeError,
    BadInputError,
    CosyVoiceError,
    PromptTooLongError,
    TooLongError,
    UnsupportedSampleRateError,
)

FFMPEG_TIMEOUT_S = 60.0
FFPROBE_TIMEOUT_S = 10.0
MAX_SAMPLE_RATE = 192_000  # highest rate decoded: with max_seconds it bounds what a clip can hold
BLOCK_BYTES = 1 << 22  # decoded samples (all channels, float32) held at once while mixing down
UNKNOWN_FRAMES = 1 << 62  # libsndfile says SF_COUNT_MAX (2^63 - 1) when a header gives no length
# ffmpeg decodes this much past max_seconds (the buffer keeps no more than the bound): to see that a
# clip is longer, and to cut a clip to max_seconds in full (its -t counts Opus's pre-skip: a streamed
# WebM cut at -t 1 gave 312 samples short of 1 s)
FFMPEG_MARGIN_S = 0.5

# torchaudio.transforms.Resample defaults.
LOWPASS_FILTER_WIDTH = 6
ROLLOFF = 0.99

AudioSource = str | Path | bytes | bytearray | BinaryIO


# ---------------------------------------------------------------------------- decoding


def load_audio(source: AudioSource, *, max_seconds: float | None = None, truncate: bool = False,
               max_bytes: int | None = None, ffmpeg_timeout: float = FFMPEG_TIMEOUT_S) -> tuple[np.ndarray, int]:
    """Decode an audio file into float32 mono samples in [-1, 1] and its sample rate.

    source: a path, the file's bytes, or a readable binary file object.
    max_seconds: longest clip accepted (None: no bound). A longer one raises PromptTooLongError,
    from the header when it states the length, else once max_seconds have been decoded; with
    `truncate` its first max_seconds are returned instead. Either way no more is decoded.
    max_bytes: largest file accepted (None: no bound); a larger one raises TooLongError unread.
    Multichannel audio is averaged to mono; integer PCM is scaled to [-1, 1]. A rate above
    MAX_SAMPLE_RATE raises UnsupportedSampleRateError. Raises AudioDecodeError (naming every
    decoder tried) when nothing can read it.
    """
    path, payload, label = _open_source(source, max_bytes)
    bound = _Bound(max_seconds, truncate)
    failures = []
    try:
        return _read_soundfile(path if path is not None else io.BytesIO(payload), bound)
    except CosyVoiceError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        failures.append(f"soundfile: {_first_line(e)}")

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        failures.append("ffmpeg: not installed (needed for webm, m4a/aac and similar formats)")
    else:
        try:
            if path is not None:
                return _read_ffmpeg(ffmpeg, path, bound, ffmpeg_timeout)
            with tempfile.NamedTemporaryFile(prefix="cosyfast-audio-") as copy:  # ffmpeg may need to seek
                copy.write(payload)
                copy.flush()
                return _read_ffmpeg(ffmpeg, Path(copy.name), bound, ffmpeg_timeout)
        except AudioDecodeError as e:
            failures.append(f"ffmpeg: {e}")
    raise AudioDecodeError(
        f"Could not read {label}: it is damaged or not in a supported audio format "
        f"(tried {'; '.join(failures)}).")


def _open_source(source: AudioSource, max_bytes: int | None) -> tuple[Path | None, bytes | None, str]:
    """(path, None, label) or (None, bytes, label), the size checked against max_bytes unread."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise AudioDecodeError(f"Audio file not found: {path}")
        _check_size(path.stat().st_size, max_bytes)
        return path, None, f"the file {path.name}"
    if isinstance(source, (bytes, bytearray)):
        payload = bytes(source)
    else:
        payload = source.read() if max_bytes is None else source.read(max_bytes + 1)
    _check_size(len(payload), max_bytes)
    return None, payload, "the uploaded audio"


def _check_size(size: int, max_bytes: int | None) -> None:
    if size == 0:
        raise AudioDecodeError("The audio is empty (0 bytes).")
    if max_bytes is not None and size > max_bytes:
        raise TooLongError(f"The audio file is larger than {max_bytes / (1 << 20):g} MB "
                           f"({max_bytes} bytes), the upload limit.")


class _Bound:
    """How much of a clip may be decoded: max_seconds (None: all), and whether a longer clip is
    cut (truncate) or refused."""

    def __init__(self, max_seconds: float | None, truncate: bool):
        if max_seconds is not None and not max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, not {max_seconds}")
        self.max_seconds, self.truncate = max_seconds, truncate

    def check_rate(self, sample_rate: int) -> None:
        if not 0 < sample_rate <= MAX_SAMPLE_RATE:
            raise UnsupportedSampleRateError(f"The audio's sample rate is {sample_rate} Hz; at most "
                                             f"{MAX_SAMPLE_RATE} Hz is accepted.")

    def check_stated_length(self, seconds: float | None) -> None:
        """Refuse, before decoding, a clip whose header says it is too long."""
        if seconds is not None and self.max_seconds is not None and not self.truncate and seconds > self.max_seconds:
            raise self.too_long(seconds)

    def frames(self, sample_rate: int) -> int | None:
        """Frames to decode at most: max_seconds, plus one to see that a clip is longer."""
        if self.max_seconds is None:
            return None
        return int(self.max_seconds * sample_rate) + (0 if self.truncate else 1)

    def too_long(self, seconds: float | None = None) -> PromptTooLongError:
        length = (f"is {seconds:.1f} s long; the limit is {self.max_seconds:g} s" if seconds is not None
                  else f"is longer than the limit of {self.max_seconds:g} s")
        return PromptTooLongError(f"The prompt audio {length}. Use a shorter clip (3 to 10 s works best).")

    def finish(self, mono: "_MonoBuffer", sample_rate: int) -> tuple[np.ndarray, int]:
        """The decoded clip, or PromptTooLongError when more than max_seconds was decoded."""
        if self.max_seconds is not None and not self.truncate and mono.frames > self.max_seconds * sample_rate:
            raise self.too_long()
        return mono.samples(), sample_rate


class _MonoBuffer:
    """Mono float32 samples gathered from (frames, channels) blocks, at most `capacity` frames."""

    def __init__(self, capacity: int | None):
        self.capacity, self.frames, self._parts = capacity, 0, []

    @property
    def room(self) -> int | None:
        return None if self.capacity is None else self.capacity - self.frames

    def add(self, block: np.ndarray) -> None:
        mono = _to_mono(block[: self.room] if self.capacity is not None else block)
        self._parts.append(mono)
        self.frames += len(mono)

    def samples(self) -> np.ndarray:
        if len(self._parts) == 1:
            return self._parts[0]
        return np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)


def _block_frames(channels: int) -> int:
    return max(1, BLOCK_BYTES // (4 * max(1, channels)))


def _read_soundfile(source, bound: _Bound) -> tuple[np.ndarray, int]:
    with sf.SoundFile(source) as f:
        sample_rate, channels = int(f.samplerate), int(f.channels)
        bound.check_rate(sample_rate)
        if f.frames < UNKNOWN_FRAMES:
            bound.check_stated_length(f.frames / sample_rate)
        mono = _MonoBuffer(bound.frames(sample_rate))
        block = _block_frames(channels)
        while mono.room is None or mono.room > 0:
            wanted = block if mono.room is None else min(block, mono.room)
            data = f.read(wanted, dtype="float32", always_2d=True)  # (n, C), ints scaled
            if not len(data):
                break
            mono.add(data)
    return bound.finish(mono, sample_rate)


def _read_ffmpeg(ffmpeg: str, path: Path, bound: _Bound, timeout: float) -> tuple[np.ndarray, int]:
    """Decode with ffmpeg into a Sun AU stream (a header with rate and channels, float32 samples)
    after ffprobe, when installed, has read the container's header; at most bound.frames() are
    read back, then ffmpeg is stopped."""
    probe = _probe(path)
    if probe is not None:
        if probe["sample_rate"]:
            bound.check_rate(probe["sample_rate"])
        bound.check_stated_length(probe["duration"])
    command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path), "-vn", "-map", "0:a:0"]
    if bound.max_seconds is not None:
        command += ["-t", f"{bound.max_seconds + FFMPEG_MARGIN_S:.3f}"]
    command += ["-c:a", "pcm_f32be", "-f", "au", "pipe:1"]
    timed_out = threading.Event()
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors)

        def stop() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(timeout, stop)
        timer.start()
        try:
            decoded = _read_au(process.stdout, bound)
            if decoded is not None and decoded[0].room == 0:
                process.kill()  # the bound is reached: nothing further is decoded
            returncode = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stdout.close()
        if timed_out.is_set():
            raise AudioDecodeError(f"decoding took longer than {timeout:.0f} s")
        if decoded is None or (returncode != 0 and decoded[0].room != 0):
            raise AudioDecodeError(_last_line(errors) or f"exit status {returncode}")
    mono, sample_rate = decoded
    if mono.frames == 0:
        raise AudioDecodeError(_last_line(errors) or "no audio samples")
    return bound.finish(mono, sample_rate)


def _read_au(stream: BinaryIO, bound: _Bound) -> tuple["_MonoBuffer", int] | None:
    """Read a float32 Sun AU stream block by block into a bounded mono buffer; None without a
    header (ffmpeg wrote nothing)."""
    header = stream.read(24)
    if len(header) < 24:
        return None
    magic, offset, _, encoding, sample_rate, channels = struct.unpack(">4sIIIII", header)
    if magic != b".snd" or encoding != 6 or channels < 1 or offset < 24:
        raise AudioDecodeError("unreadable output of ffmpeg")
    stream.read(offset - 24)  # the header's annotation field
    bound.check_rate(sample_rate)
    mono = _MonoBuffer(bound.frames(sample_rate))
    frame_bytes = 4 * channels
    block = _block_frames(channels)
    while mono.room is None or mono.room > 0:
        wanted = (block if mono.room is None else min(block, mono.room)) * frame_bytes
        data = stream.read(wanted)
        frames = len(data) // frame_bytes
        if frames:
            mono.add(np.frombuffer(data, dtype=">f4", count=frames * channels).reshape(frames, channels))
        if len(data) < wanted:
            break
    return mono, int(sample_rate)


def _probe(path: Path) -> dict | None:
    """{"sample_rate": Hz or 0, "duration": seconds or None} of the first audio stream, from the
    container's header by ffprobe; None when ffprobe is missing or cannot tell (ffmpeg will say)."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return None
    command = [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries",
               "stream=sample_rate,channels,duration:format=duration", "-of", "json", str(path)]
    try:
        done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, timeout=FFPROBE_TIMEOUT_S)
        info = json.loads(done.stdout) if done.returncode == 0 else None
    except (subprocess.TimeoutExpired, ValueError):
        return None
    if not isinstance(info, dict):
        return None
    streams = info.get("streams") or []
    if not streams:
        raise AudioDecodeError("no audio stream")
    stream = streams[0]
    duration = _seconds(stream.get("duration"))
    if duration is None:
        duration = _seconds((info.get("format") or {}).get("duration"))
    return {"sample_rate": int(_seconds(stream.get("sample_rate")) or 0), "duration": duration}


def _seconds(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def _last_line(file) -> str:
    """The last line of the tail of an open binary file (ffmpeg's stderr)."""
    size = file.seek(0, os.SEEK_END)
    file.seek(max(0, size - 4096))
    lines = file.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def _to_mono(samples: np.ndarray) -> np.ndarray:
    """(N, C) -> (N,) float32, channels averaged."""
    if samples.shape[1] == 1:
        return np.ascontiguousarray(samples[:, 0], dtype=np.float32)
    return samples.mean(axis=1, dtype=np.float64).astype(np.float32)


def as_mono_float32(samples: np.ndarray) -> np.ndarray:
    """Samples as a program hands them over (e.g. Gradio's int16 (N, C)) -> float32 mono (N,).

    Integer PCM is scaled to [-1, 1] (int16 / 2^15, int32 / 2^31, uint8 centred on 128).
    A 2-D array is (N, C) or (C, N): the shorter axis is taken as channels and averaged.
    """
    samples = np.asarray(samples)
    if samples.dtype.kind == "u":
        bits = 8 * samples.dtype.itemsize
        samples = (samples.astype(np.float64) - 2.0 ** (bits - 1)) / 2.0 ** (bits - 1)
    elif samples.dtype.kind == "i":
        samples = samples.astype(np.float64) / 2.0 ** (8 * samples.dtype.itemsize - 1)
    elif samples.dtype.kind != "f":
        raise BadInputError(f"audio samples must be numbers, got dtype {samples.dtype}")
    if samples.ndim == 2:
        channels_last = samples.shape[1] <= samples.shape[0]
        return _to_mono(samples if channels_last else samples.T)
    if samples.ndim != 1:
        raise BadInputError(f"audio must be mono (N,) or multichannel (N, C), got shape {samples.shape}")
    return np.ascontiguousarray(samples, dtype=np.float32)


def _first_line(error: Exception) -> str:
    text = str(getattr(error, "error_string", "") or error).strip()  # libsndfile's own words
    return text.splitlines()[0] if text else type(error).__name__


# ---------------------------------------------------------------------------- resampling


def resample(wav: np.ndarray, sr_in: int, sr_out: int, method: str = "soxr") -> np.ndarray:
    """Resample mono float audio (N,) from `sr_in` to `sr_out` Hz; returns float32 (M,).

    method "reference" reproduces torchaudio.transforms.Resample(sr_in, sr_out) (defaults) and
    returns ceil(N * sr_out / sr_in) samples; "soxr" uses the soxr library (high quality).
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"resample expects mono audio (N,), got shape {wav.shape}")
    if sr_in <= 0 or sr_out <= 0 or int(sr_in) != sr_in or int(sr_out) != sr_out:
        raise ValueError(f"sample rates must be positive integers, got {sr_in} -> {sr_out}")
    if sr_in == sr_out:
        return wav.copy()
    if method == "reference":
        return _resample_reference(wav, int(sr_in), int(sr_out))
    if method == "soxr":
        return soxr.resample(wav, sr_in, sr_out).astype(np.float32, copy=False)
    raise ValueError(f"unknown resampling method {method!r} (use 'reference' or 'soxr')")


def _resample_reference(wav: np.ndarray, sr_in: int, sr_out: int, block: int = 1 << 16) -> np.ndarray:
    """torchaudio's Hann-windowed sinc resampler, evaluated sparsely and in float64.

    With the rates reduced by their gcd to `orig` -> `new`, output sample j sits at input
    position c = j * orig / new and is sum_n x[n] * h((n - c) * base / orig), where
    base = min(orig, new) * rolloff and h(t) = sinc(t) * cos^2(pi t / (2 * width)) * base / orig
    with t clamped to [-width, width]. torchaudio stores h for every phase j % new over a span
    of 2 * taps + orig inputs and runs a strided conv1d; outside |t| < width its kernel is zero
    (to ~1e-33), so summing over the 2 * taps inputs nearest to c gives the same numbers
    without the dense (new, 2 * taps + orig) kernel, which is huge for coprime rates.
    """
    import torch

    gcd = math.gcd(sr_in, sr_out)
    orig, new = sr_in // gcd, sr_out // gcd
    base = min(orig, new) * ROLLOFF
    taps = math.ceil(LOWPASS_FILTER_WIDTH * orig / base)  # torchaudio's `width`

    # Weights per phase p = j % new: inputs n = floor(c) + d for d in (-taps, taps].
    phase = torch.arange(new, dtype=torch.int64)
    start = (phase * orig) // new                                        # (new,) floor(c) - i * orig
    frac = ((phase * orig) % new).to(torch.float64) / new                # (new,) c - floor(c)
    offsets = torch.arange(-taps + 1, taps + 1, dtype=torch.int64)       # (2 * taps,)
    t = (offsets[None, :].to(torch.float64) - frac[:, None]) * (base / orig)
    t = t.clamp(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)             # (new, 2 * taps)
    window = torch.cos(t * (math.pi / LOWPASS_FILTER_WIDTH / 2)) ** 2
    weights = torch.special.sinc(t) * window * (base / orig)             # (new, 2 * taps)

    n_in = wav.shape[0]
    n_out = -(-n_in * new // orig)                                       # ceil(n_in * new / orig)
    padded = torch.nn.functional.pad(torch.from_numpy(wav).to(torch.float64), (taps, taps))
    out = torch.empty(n_out, dtype=torch.float64)
    for first in range(0, n_out, block):
        j = torch.arange(first, min(first + block, n_out), dtype=torch.int64)
        p = j % new
        centre = (j // new) * orig + start[p]                            # (B,) floor(c)
        index = centre[:, None] + offsets[None, :] + taps                # (B, 2 * taps) into padded
        out[first:first + len(j)] = (padded[index] * weights[p]).sum(dim=1)
    return out.to(torch.float32).numpy()


# ---------------------------------------------------------------------------- level and length


def duration(wav: np.ndarray, sr: int) -> float:
    """Length of `wav` (N,) in seconds."""
    return len(wav) / float(sr)


def peak_amplitude(wav: np.ndarray) -> float:
    """Largest absolute sample of `wav` (0 for an empty clip)."""
    return float(np.max(np.abs(wav))) if len(wav) else 0.0


def rms_amplitude(wav: np.ndarray) -> float:
    """Root mean square of `wav` (0 for an empty clip)."""
    return float(np.sqrt(np.mean(np.square(wav, dtype=np.float64)))) if len(wav) else 0.0


def normalize_level(wav: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale `wav` so its largest absolute sample is `peak`; an all-zero clip is returned as is."""
    wav = np.asarray(wav, dtype=np.float32)
    current = peak_amplitude(wav)
    if current == 0.0:
        return wav.copy()
    return (wav * np.float32(peak / current)).astype(np.float32)


def sound_bounds(wav: np.ndarray, sr: int, *, top_db: float = 50.0, frame_s: float = 0.02,
                 margin_s: float = 0.1) -> tuple[int, int]:
    """Sample range [begin, end) of mono `wav` (N,) without its leading and trailing silence.

    A frame (`frame_s` long, hopped by half) is silent when its energy is more than `top_db`
    below the loudest frame's. The range spans the first to the last loud frame plus `margin_s`
    on each side; it is (0, 0) for an all-zero clip.
    """
    frame = max(1, int(round(frame_s * sr)))
    hop = max(1, frame // 2)
    if len(wav) <= frame:
        return (0, len(wav)) if peak_amplitude(wav) > 0.0 else (0, 0)
    energy_sum = np.concatenate([[0.0], np.cumsum(np.square(wav, dtype=np.float64))])  # (N + 1,)
    starts = np.arange(0, len(wav) - frame + 1, hop)                                 # (F,)
    energy = (energy_sum[starts + frame] - energy_sum[starts]) / frame               # (F,)
    loudest = energy.max()
    if loudest <= 0.0:
        return 0, 0
    loud = np.flatnonzero(energy >= loudest * 10.0 ** (-top_db / 10.0))
    margin = int(round(margin_s * sr))
    return max(0, int(starts[loud[0]]) - margin), min(len(wav), int(starts[loud[-1]]) + frame + margin)


def trim_silence(wav: np.ndarray, sr: int, **options) -> np.ndarray:
    """`wav` (N,) without leading and trailing silence (a view; see `sound_bounds` for options)."""
    begin, end = sound_bounds(wav, sr, **options)
    return wav[begin:end]
