"""A prepared prompt (speaker): the small, reusable result of the prompt front end.

Numpy only, so the app process (voice library, protocol messages) can hold prompts without
importing torch. Saved as `.npz` without pickling (`allow_pickle=False` on load).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosyvoice3.files import atomic_write


@dataclass
class PreparedPrompt:
    """speech_tokens: int32 (P,) prompt speech tokens (25 Hz)
    embedding: float32 (192,) speaker embedding (CAM++)
    mel: float32 (2P, 80) prompt mel at 50 Hz (24 kHz audio, hop 480)
    text: transcript of the prompt audio as given ('' when unknown)
    duration_s: length of the prompt audio that was used
    """

    speech_tokens: np.ndarray
    embedding: np.ndarray
    mel: np.ndarray
    text: str = ""
    duration_s: float = 0.0

    def __post_init__(self):
        self.speech_tokens = np.asarray(self.speech_tokens, dtype=np.int32).reshape(-1)
        self.embedding = np.asarray(self.embedding, dtype=np.float32).reshape(-1)
        self.mel = np.asarray(self.mel, dtype=np.float32)
        if self.mel.ndim != 2 or self.mel.shape[0] != 2 * len(self.speech_tokens):
            raise ValueError(f"prompt mel {self.mel.shape} must have 2 x {len(self.speech_tokens)} frames")

    def arrays(self) -> dict[str, np.ndarray]:
        """The prompt as plain arrays (what `save` stores; `from_arrays` reads them back)."""
        meta = json.dumps({"text": self.text, "duration_s": self.duration_s}).encode("utf-8")
        return {"speech_tokens": self.speech_tokens, "embedding": self.embedding, "mel": self.mel,
                "meta": np.frombuffer(meta, dtype=np.uint8)}

    @classmethod
    def from_arrays(cls, data) -> "PreparedPrompt":
        """From `arrays()`'s dict or an open npz holding them."""
        meta = json.loads(bytes(data["meta"]).decode("utf-8"))
        return cls(data["speech_tokens"], data["embedding"], data["mel"], meta.get("text", ""),
                   float(meta.get("duration_s", 0.0)))

    def save(self, path: str | Path) -> None:
        """Write an npz atomically (a crash leaves the old file or the new one, never half)."""
        atomic_write(path, lambda f: np.savez(f, **self.arrays()))

    @classmethod
    def load(cls, path: str | Path) -> "PreparedPrompt":
        with np.load(path, allow_pickle=False) as data:
            return cls.from_arrays(data)
