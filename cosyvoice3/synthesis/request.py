"""A synthesis request as the model takes it, and the audio chunks it gets back (plain data)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cosyvoice3.frontend.prompt import PreparedPrompt
from cosyvoice3.modes import check_seed
from cosyvoice3.spec import SpeechSpec


@dataclass
class SynthesisRequest:
    """spec: what the caller asks for (`cosyvoice3.spec`, as it arrived); prompt: the voice's
    features (its transcript is spec.prompt_text; the prompt's own `text` is not read);
    start_segment: resume at this segment (after a worker restart); forced_tokens: exactly this
    many speech tokens per segment (benchmarks)."""

    spec: SpeechSpec
    prompt: PreparedPrompt
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
