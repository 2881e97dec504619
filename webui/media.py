"""Audio files in and out of the page.

In: the prompt file the browser sent (wav from the microphone widget, or any upload: wav, mp3,
ogg, flac, webm/opus, m4a) decoded by the model package's own decoder, `cosyvoice3.frontend.audio`
(soundfile, then ffmpeg; no torch), never more of it than the prompt limit. The worker's prompt
front end does the rest (checks, trimming, level, resampling). Out: the finished audio as wav, plus
mp3 and ogg/vorbis when this libsndfile can write them, in a folder whose old files are swept away.
"""

from __future__ import annotations

import hashlib
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from cosyvoice3.frontend.audio import load_audio

# name -> (soundfile format, subtype)
OUTPUT_FORMATS = {"wav": ("WAV", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "ogg": ("OGG", "VORBIS")}


def read_prompt_audio(path: str | Path, max_seconds: float, truncate: bool = False,
                      max_bytes: int | None = None) -> tuple[np.ndarray, int]:
    """float32 mono samples (N,) and the sample rate, decoded within the limits: at most
    `max_seconds` (PromptTooLongError beyond, or the first max_seconds with `truncate`) from a
    file of at most `max_bytes`; AudioDecodeError when it cannot be read (see load_audio)."""
    return load_audio(path, max_seconds=max_seconds, truncate=truncate, max_bytes=max_bytes)


def file_digest(path: str | Path) -> str:
    """Content hash of a file, to know whether the prompt audio changed."""
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def available_formats() -> list[str]:
    """Output formats this libsndfile can write (wav always)."""
    have = sf.available_formats()
    formats = [name for name, (fmt, _) in OUTPUT_FORMATS.items() if fmt in have]
    missing = sorted(set(OUTPUT_FORMATS) - set(formats))
    if missing:
        warnings.warn(f"libsndfile {sf.__libsndfile_version__} cannot write {', '.join(missing)}: "
                      "downloads offer the other formats only")
    return formats


class OutputFolder:
    """Finished audio files for download; files older than `keep_s` are removed on each write."""

    def __init__(self, root: str | Path, keep_s: float = 3600.0, formats: list[str] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep_s = keep_s
        self.formats = formats if formats is not None else available_formats()

    def write(self, pcm: np.ndarray, sample_rate: int, stem: str = "cosyvoice3",
              formats: list[str] | None = None) -> list[Path]:
        """Write float32 (N,) audio in each format (default: all available); paths, wav first."""
        self.sweep()
        name = f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        pcm = np.clip(np.asarray(pcm, dtype=np.float32), -1.0, 1.0)
        paths = []
        for ext in formats or self.formats:
            fmt, subtype = OUTPUT_FORMATS[ext]
            path = self.root / f"{name}.{ext}"
            sf.write(path, pcm, sample_rate, format=fmt, subtype=subtype)
            paths.append(path)
        return paths

    def write_text(self, name: str, text: str) -> Path:
        """Write a text file (UTF-8) of that name, e.g. the captions beside an audio file."""
        path = self.root / Path(name).name
        path.write_text(text, encoding="utf-8")
        return path

    def sweep(self) -> None:
        cutoff = time.time() - self.keep_s
        for path in self.root.iterdir():
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
