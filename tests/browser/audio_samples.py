"""Prompt recordings for the UI tests, made on the fly: speech-like, silent, too short, too long,
damaged, and webm/opus (what browsers record) when ffmpeg is installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf


def speechlike(seconds: float, sample_rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-like signal: gliding f0 with harmonics, 3 Hz envelope, a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum((0.5 / k) * np.sin(k * phase) for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 0.5
    signal = voiced * envelope + 0.01 * rng.standard_normal(len(t))
    return (0.3 * signal / np.abs(signal).max()).astype(np.float32)


def write_samples(folder: Path) -> dict[str, Path]:
    """{kind: path} for speech (4 s, 16 kHz wav), speech44k (3 s, 44.1 kHz stereo), silent,
    short (0.4 s), long (35 s), corrupt, and webm (4 s opus) when ffmpeg exists."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.wav" for name in ("speech", "speech44k", "silent", "short", "long")}
    sf.write(paths["speech"], speechlike(4.0), 16000)
    stereo = speechlike(3.0, 44100, seed=1)
    sf.write(paths["speech44k"], np.stack([stereo, 0.8 * stereo], axis=1), 44100)
    sf.write(paths["silent"], np.zeros(16000 * 4, np.float32), 16000)
    sf.write(paths["short"], speechlike(0.4), 16000)
    sf.write(paths["long"], speechlike(35.0), 16000)
    paths["corrupt"] = folder / "corrupt.wav"
    paths["corrupt"].write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(range(256)) * 4)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        paths["webm"] = folder / "speech.webm"
        subprocess.run([ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-i", str(paths["speech"]),
                        "-c:a", "libopus", str(paths["webm"])], check=True, timeout=60)
    return paths
