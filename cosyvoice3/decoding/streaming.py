"""The streaming schedule: when a chunk of speech tokens is ready to become audio.

Reference rules (cosyvoice3-reference.md section 7.3): the first hop is 25 tokens plus a pad
that aligns prompt + first hop to a multiple of 25 tokens (the DiT's 50-frame chunk grid); each
later hop doubles, capped at 100 tokens; a chunk is converted once 3 look-ahead tokens beyond it
exist. The official code keeps the hop on the model instance, so after the first streaming request
every request starts at 100 tokens; here each request has its own schedule (a fixed bug).
"""

from __future__ import annotations

from dataclasses import dataclass

FIRST_HOP = 25
MAX_HOP = 100
HOP_SCALE = 2
LOOKAHEAD = 3


@dataclass
class HopSchedule:
    """Token offsets of the streaming chunks of one text segment.

    n_prompt_tokens: prompt speech tokens prepended inside the flow (they set the first pad)
    """

    n_prompt_tokens: int
    first_hop: int = FIRST_HOP
    max_hop: int = MAX_HOP
    lookahead: int = LOOKAHEAD
    offset: int = 0  # tokens already turned into audio
    chunks_done: int = 0

    def __post_init__(self):
        self._hop = self.first_hop

    @property
    def next_hop(self) -> int:
        """Tokens in the next chunk (the first one padded to the chunk grid)."""
        if self.chunks_done == 0:
            pad = -self.n_prompt_tokens % self._hop
            return self._hop + pad
        return self._hop

    def ready(self, n_available: int) -> bool:
        """True when `n_available` generated tokens allow the next chunk (with its look-ahead)."""
        return n_available - self.offset >= self.next_hop + self.lookahead

    def advance(self) -> tuple[int, int]:
        """Mark the next chunk done; returns (start, end) token offsets of that chunk."""
        start, end = self.offset, self.offset + self.next_hop
        self.offset = end
        self.chunks_done += 1
        self._hop = min(self.max_hop, self._hop * HOP_SCALE)
        return start, end
