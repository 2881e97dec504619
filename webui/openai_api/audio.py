"""Audio of the API in each `response_format`, encoded as it is made.

`encode(fmt, sample_rate, pcm)` turns an async iterator of float32 chunks (N,) into an async
iterator of bytes: `pcm` is raw 16-bit little-endian mono at the model's rate (24 kHz for
CosyVoice3, as OpenAI's pcm), `wav` the same after a streaming header (RIFF and data sizes
0xFFFFFFFF: the length is not known when the header is sent; soundfile and ffmpeg read it),
`mp3`, `opus` (in Ogg) and `aac` (ADTS) go through one ffmpeg process per response, fed from a
task while the response reads its output, flushed packet by packet. `flac` is the exception: it
is sent once the audio is complete, because a streamed FLAC header cannot hold the length and
libsndfile-based readers (soundfile) then fail to read the file.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import struct
from collections.abc import AsyncIterator

import numpy as np
import soundfile as sf

FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
MEDIA_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
# response_format -> ffmpeg output options
FFMPEG_OUTPUTS = {"mp3": ["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"],
                  "opus": ["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"],
                  "aac": ["-c:a", "aac", "-b:a", "128k", "-f", "adts"]}
READ_BYTES = 1 << 16


def pcm16(pcm: np.ndarray) -> bytes:
    """float32 samples in [-1, 1] -> 16-bit little-endian PCM."""
    return np.rint(np.clip(pcm, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int) -> bytes:
    """A 16-bit mono PCM wav header of unknown length."""
    unknown = 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", unknown) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + \
        b"data" + struct.pack("<I", unknown)


def flac_bytes(pcm: np.ndarray, sample_rate: int) -> bytes:
    """A whole 16-bit FLAC file (its header holds the length)."""
    out = io.BytesIO()
    sf.write(out, np.clip(pcm, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return out.getvalue()


def ffmpeg_missing() -> str:
    """'' when ffmpeg is on PATH, else the sentence saying which formats need it."""
    if shutil.which("ffmpeg"):
        return ""
    return f"ffmpeg is not installed on the server: {', '.join(FFMPEG_OUTPUTS)} need it (wav and pcm do not)"


async def encode(fmt: str, sample_rate: int, pcm: AsyncIterator[np.ndarray]) -> AsyncIterator[bytes]:
    """Bytes of `fmt` as the float32 chunks of `pcm` come; an exception of `pcm` is raised once
    the audio before it has been passed on."""
    if fmt in ("pcm", "wav"):
        if fmt == "wav":
            yield wav_header(sample_rate)
        async for chunk in pcm:
            yield pcm16(chunk)
        return
    if fmt == "flac":
        parts = [chunk async for chunk in pcm]
        yield await asyncio.to_thread(flac_bytes, np.concatenate(parts) if parts else np.zeros(0, np.float32),
                                      sample_rate)
        return
    async for data in _ffmpeg(FFMPEG_OUTPUTS[fmt], sample_rate, pcm):
        yield data


async def _ffmpeg(output: list[str], sample_rate: int, pcm: AsyncIterator[np.ndarray]) -> AsyncIterator[bytes]:
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-f", "s16le", "-ar", str(sample_rate),
        "-ac", "1", "-i", "pipe:0", *output, "-flush_packets", "1", "pipe:1",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)

    async def feed() -> None:
        try:
            async for chunk in pcm:
                process.stdin.write(pcm16(chunk))
                await process.stdin.drain()
        finally:
            process.stdin.close()

    feeder = asyncio.create_task(feed())
    try:
        while data := await process.stdout.read(READ_BYTES):
            yield data
        await feeder  # the source's own exception, after what ffmpeg made of the audio before it
    finally:
        feeder.cancel()
        if process.returncode is None:
            try:
                process.kill()
            except ProcessLookupError:
                pass
        await process.wait()
