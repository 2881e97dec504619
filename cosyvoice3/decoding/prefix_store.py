"""The LLM's keys/values of a prompt's fixed start, computed once and reused by later segments.

A segment's LLM input is `[sos] prompt_ids  text_ids [task_id] prompt speech` (`CosyVoice3LM.
first_step_input`): its first 1 + len(prompt_ids) positions - sos and the prompt text (the system
prompt and the voice's transcript, or the instruction) - are the same for every segment of a
voice and every request that uses it, and a causal LM's keys/values at those positions depend on
nothing after them. The token batch keeps them here after a full prefill and, for the next
segment with the same prompt ids, copies them into its cache row and prefills only the rest
(`TokenBatch.join`). The prompt's speech tokens come after the target text, so they are no part
of a prefix.

A `PrefixStore` belongs to one token batch, so one model in one precision: its key is the prompt
ids alone. It is bounded in bytes and forgets the least recently used prefix first. Entries live
on the model's device.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Prefix:
    """k, v: (layers, kv_heads, length, head_dim), the keys/values of positions 0..length-1."""

    k: torch.Tensor
    v: torch.Tensor

    @property
    def length(self) -> int:
        return self.k.shape[2]

    @property
    def nbytes(self) -> int:
        return self.k.numel() * self.k.element_size() * 2


class PrefixStore:
    """Prefixes by prompt ids, at most `budget_bytes` in all (0: off). Thread-safe for `report`."""

    def __init__(self, budget_bytes: int):
        self.budget = max(0, int(budget_bytes))
        self.used = 0
        self.hits = self.misses = self.evictions = 0
        self._entries: OrderedDict[tuple[int, ...], Prefix] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, prompt_ids) -> Prefix | None:
        """The prefix of these prompt ids (marked recently used), or None; counts a hit or a miss."""
        key = tuple(prompt_ids)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry

    def put(self, prompt_ids, prefix: Prefix) -> bool:
        """Keep `prefix` (the caller's tensors: pass copies), evicting the least recently used
        ones to make room; False (nothing kept) when it alone exceeds the budget."""
        key, size = tuple(prompt_ids), prefix.nbytes
        with self._lock:
            if size > self.budget:
                return False
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= old.nbytes
            while self._entries and self.used + size > self.budget:
                self.used -= self._entries.popitem(last=False)[1].nbytes
                self.evictions += 1
            self._entries[key] = prefix
            self.used += size
            return True

    def report(self) -> dict:
        with self._lock:
            asked = self.hits + self.misses
            return {"budget_mb": round(self.budget / 2**20, 1), "used_kb": round(self.used / 2**10, 1),
                    "prompts": len(self._entries), "hits": self.hits, "misses": self.misses,
                    "hit_rate": round(self.hits / asked, 3) if asked else None, "evictions": self.evictions}
