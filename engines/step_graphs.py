"""Captured LLM steps: decode one position + RAS sampling in one CUDA graph, lent per request.

A decode step of the 0.5B LLM is a few hundred small kernels; launched from Python each token
costs far more than the GPU work, and sampling adds its own launches and syncs. Here the whole
`cosyvoice3.decoding.token_loop.sample_next` (model step, log-softmax, length masks, RAS draw, state
update) is captured once per *slot*: a slot owns a static KV cache of a fixed number of positions,
the request state tensors and a CUDA generator registered with its graph. `SpeechTokenDecoder`
borrows a slot whose cache is long enough (`acquire`), runs its prefill eagerly into the slot's
cache, replays the graph and gives the slot back when it finishes (`release`). One replay runs
`steps_per_replay` steps back to back and hands over their tokens with one host sync; tokens after
a stop (or past the request's limit) are simply not used.
Slots are reused by later requests, so capture happens once per slot, not per request. When all
slots of a size are busy the decoder falls back to the eager step, so requests never wait here.

`use_graphs=False` keeps the same slot protocol with eager steps (CPU tests). `compile=True`
(env COSYFAST_COMPILE_LLM=1) runs the step through `torch.compile` before capturing it: fused
elementwise kernels, about 25% faster per step on an H100, at the price of about 30 s of
compiling per slot size when the pool is warmed at start-up.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

from cosyvoice3.config import LLMConfig
from cosyvoice3.decoding.token_loop import DecodeState, sample_next

log = logging.getLogger(__name__)

DEFAULT_SIZES = (1024, 4096)  # cache positions of the slot kinds (prompt + speech tokens)
DEFAULT_PER_SIZE = 4
STEPS_PER_REPLAY = 1  # measured on an H100: 4 steps per replay gave no gain (the sync is not the cost)


class StepSlot:
    """One static cache + state + generator, with the step captured on first use."""

    def __init__(self, pool: "StepGraphPool", size: int):
        self.pool, self.size = pool, size
        lm = pool.lm
        self.cache = lm.new_cache(size)
        self.state = DecodeState.empty(lm.speech_vocab_size, pool.config.sampling.win_size, lm.device)
        self.generator = torch.Generator(device=lm.device)
        self.tokens_out = torch.zeros(pool.steps_per_replay, dtype=torch.long, device=lm.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.busy = False

    @property
    def lm(self):
        return self.pool.lm

    def _eager(self) -> None:
        """`steps_per_replay` decode steps; their tokens land in `tokens_out`."""
        for k in range(self.pool.steps_per_replay):
            self.pool.step_fn(self.pool.lm, self.cache, self.state, self.generator, self.pool.config)
            self.tokens_out[k] = self.state.token[0]

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

    def step(self) -> list[int]:
        """Advance the borrowing request by `steps_per_replay` tokens; returns them."""
        if not self.pool.use_graphs:
            self._eager()
        else:
            if self.graph is None:
                self._capture()
            self.graph.replay()
        return self.tokens_out.tolist()  # the one host sync of a replay

    def release(self) -> None:
        self.pool.release(self)


class StepGraphPool:
    """Slots of a few cache sizes for one LLM; `acquire(n)` lends a free slot of >= n positions."""

    def __init__(self, lm, config: LLMConfig, sizes=DEFAULT_SIZES, per_size: int = DEFAULT_PER_SIZE,
                 use_graphs: bool | None = None, steps_per_replay: int = STEPS_PER_REPLAY,
                 compile: bool | None = None):
        self.lm, self.config = lm, config
        self.steps_per_replay = steps_per_replay
        if compile is None:
            compile = os.environ.get("COSYFAST_COMPILE_LLM", "") == "1"
        self.compiled = compile
        self.step_fn = torch.compile(sample_next, dynamic=False) if compile else sample_next
        self.sizes, self.per_size = tuple(sorted(sizes)), per_size
        self.use_graphs = lm.device.type == "cuda" if use_graphs is None else use_graphs
        self.memory_pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.slots: list[StepSlot] = []
        self._lock = threading.Lock()

    def acquire(self, positions: int) -> StepSlot | None:
        """A free slot whose cache holds `positions` (plus the steps a replay may run past the
        request's end), or None (the caller then steps eagerly)."""
        positions += self.steps_per_replay
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

    def warm(self) -> None:
        """Capture one slot of every size now (start-up), so no request pays for it."""
        if not self.use_graphs:
            return
        for size in self.sizes:
            slot = self.acquire(size - self.steps_per_replay)
            if slot is not None:
                try:
                    with torch.inference_mode():
                        slot._capture()
                finally:
                    slot.release()

    def describe(self) -> str:
        kind = ("compiled " if self.compiled else "") + ("CUDA graph" if self.use_graphs else "eager")
        return (f"{kind} of {self.steps_per_replay} steps (decode + sampling), "
                f"cache slots {'/'.join(map(str, self.sizes))}")
