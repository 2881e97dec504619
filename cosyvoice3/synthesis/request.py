"""What a synthesis request asks for, and the audio chunks it gets back (plain data)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.modes import ZERO_SHOT, check_seed


@dataclass
class SynthesisRequest:
    """text: what to say; prompt: the voice; mode/instruction: see `cosyvoice3.modes`; seed: the
    randomness of the sampling (segment i samples from a stream derived from (seed, i));
    speed: 0.5 .. 2.0; stream: audio chunk by chunk as it is made (else one chunk per text
    segment); start_segment: resume at this segment (after a worker restart); forced_tokens:
    exactly this many speech tokens per segment (benchmarks)."""

    text: str
    prompt: PreparedPrompt
    mode: str = ZERO_SHOT
    instruction: str = ""
    seed: int = 0
    speed: float = 1.0
    stream: bool = True
    start_segment: int = 0
    forced_tokens: int | None = None


@dataclass
class AudioChunk:
    pcm: np.ndarray  # float32 (N,) at sample_rate
    sample_rate: int
    segment: int
    index: int
    segment_final: bool


def segment_seed(seed: int, segment: int) -> int:
    """Key of one text segment's random stream, derived from the request seed and the segment
    index (63 bits), so a request resumed at segment k samples as the uninterrupted one did. The
    seed is one of `cosyvoice3.modes`' MIN_SEED..MAX_SEED (BadInputError otherwise): each gives
    a stream of its own, none is folded onto another."""
    return int(np.random.SeedSequence([check_seed(seed), segment]).generate_state(1, np.uint64)[0] >> 1)
