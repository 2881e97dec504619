"""Captured LLM steps: decode one position + RAS sampling in one CUDA graph, lent per request.

A decode step of the 0.5B LLM is a few hundred small kernels; launched from Python each token
costs far more than the GPU work, and sampling adds its own launches and syncs. Here the whole
`cosyvoice3.speech_decoding.sample_next` (model step, log-softmax, length masks, RAS draw, state
update) is captured once per *slot*: a slot owns a static KV cache of a fixed number of positions,
the request state tensors and a CUDA generator registered with its graph. `SpeechTokenDecoder`
borrows a slot whose cache is long enough (`acquire`), runs its prefill eagerly into the slot's
cache, replays the graph once per token and gives the slot back when it finishes (`release`).
Slots are reused by later requests, so capture happens once per slot, not per request. When all
slots of a size are busy the decoder falls back to the eager step, so requests never wait here.

`use_graphs=False` keeps the same slot protocol with eager steps (CPU tests).
"""

from __future__ import annotations

import logging
import threading

import torch

from cosyvoice3.config import LLMConfig
from cosyvoice3.speech_decoding import DecodeState, sample_next

log = logging.getLogger(__name__)

DEFAULT_SIZES = (1024, 4096)  # cache positions of the slot kinds (prompt + speech tokens)
DEFAULT_PER_SIZE = 4


class StepSlot:
    """One static cache + state + generator, with the step captured on first use."""

    def __init__(self, pool: "StepGraphPool", size: int):
        self.pool, self.size = pool, size
        lm = pool.lm
        self.cache = lm.new_cache(size)
        self.state = DecodeState.empty(lm.speech_vocab_size, pool.config.sampling.win_size, lm.device)
        self.generator = torch.Generator(device=lm.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.busy = False

    @property
    def lm(self):
        return self.pool.lm

    def _eager(self) -> None:
        sample_next(self.pool.lm, self.cache, self.state, self.generator, self.pool.config)

    def _capture(self) -> None:
        """Warm up on a side stream, then capture; the state is restored so the request's first
        replay starts from what the decoder set up (capture runs once per slot)."""
        saved = DecodeState(*(t.clone() for t in (self.state.token, self.state.position, self.state.recent,
                                                   self.state.count, self.state.ban_until, self.state.ban)))
        rng = self.generator.get_state()
        side = torch.cuda.Stream(self.pool.lm.device)
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):
                self._eager()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        graph.register_generator_state(self.generator)
        with torch.cuda.graph(graph, pool=self.pool.memory_pool):
            self._eager()
        self.graph = graph
        self.state.load(saved)
        self.generator.set_state(rng)

    def step(self) -> None:
        """Advance the borrowing request by one token (result in `state.token`)."""
        if not self.pool.use_graphs:
            self._eager()
            return
        if self.graph is None:
            self._capture()
        self.graph.replay()

    def release(self) -> None:
        self.pool.release(self)


class StepGraphPool:
    """Slots of a few cache sizes for one LLM; `acquire(n)` lends a free slot of >= n positions."""

    def __init__(self, lm, config: LLMConfig, sizes=DEFAULT_SIZES, per_size: int = DEFAULT_PER_SIZE,
                 use_graphs: bool | None = None):
        self.lm, self.config = lm, config
        self.sizes, self.per_size = tuple(sorted(sizes)), per_size
        self.use_graphs = lm.device.type == "cuda" if use_graphs is None else use_graphs
        self.memory_pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.slots: list[StepSlot] = []
        self._lock = threading.Lock()

    def acquire(self, positions: int) -> StepSlot | None:
        """A free slot whose cache holds `positions`, or None (the caller then steps eagerly)."""
        with self._lock:
            for size in self.sizes:
                if size < positions:
                    continue
                for slot in self.slots:
                    if slot.size == size and not slot.busy:
                        slot.busy = True
                        return slot
                if sum(s.size == size for s in self.slots) < self.per_size:
                    slot = StepSlot(self, size)
                    slot.busy = True
                    self.slots.append(slot)
                    return slot
            return None

    def release(self, slot: StepSlot) -> None:
        with self._lock:
            slot.busy = False

    def describe(self) -> str:
        kind = "CUDA graph" if self.use_graphs else "eager"
        return f"{kind} per step (decode + sampling), cache slots {'/'.join(map(str, self.sizes))}"
