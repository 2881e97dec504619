"""The batched LLM decode step (model step + RAS sampling) captured in CUDA graphs, per bucket.

A decode step of the 0.5B LLM is a few hundred small kernels; launched from Python every token
costs far more than the GPU work. `GraphDecodeSteps` captures
`cosyvoice3.decoding.token_batch.decode_rows` - the same function the eager path runs - once per
(rows, slots) bucket: rows rounded up to a power of two (1 .. the batch's capacity), slots (the
cache positions attention reads) rounded up to the next of a few sizes up to the batch's
`max_len`. A graph works in place on the token batch's KV cache and state tensors, so a replay
needs no copies; rows past the active ones take part in a bucket harmlessly (see `decode_rows`).
All graphs share one memory pool. `warm(cache, state)` captures every bucket at start-up; a
bucket met later (or every bucket, after the token batch grew into a new cache) is captured on
first use, with the state saved and restored around the warm-up runs (their K/V writes are the
ones the real step makes).

`compile=True` runs the step through `torch.compile` (dynamic shapes, so one compilation serves
every bucket) before capturing it. `step_lm` is what the captured step runs (default: `lm`
itself): `engines.llm_fused.FusedDecodeLM` reads each row's length, so its graphs are one per row
bucket over the whole cache, not one per (rows, slots).
"""

from __future__ import annotations

import logging
import threading

import torch

from cosyvoice3.decoding.token_batch import DecodeState, decode_rows

log = logging.getLogger(__name__)

SLOT_SIZES = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)


def row_buckets(capacity: int) -> list[int]:
    sizes, n = [], 1
    while n < capacity:
        sizes.append(n)
        n *= 2
    return sizes + [capacity]


def slot_buckets(max_len: int) -> list[int]:
    return [s for s in SLOT_SIZES if s < max_len] + [max_len]


def _bucket(value: int, sizes: list[int]) -> int:
    for s in sizes:
        if s >= value:
            return s
    raise ValueError(f"{value} exceeds the largest bucket {sizes[-1]}")


class GraphDecodeSteps:
    """DecodeSteps on CUDA graphs. lm: the LLM in the precision the steps run in (the token
    batch's cache is allocated from it)."""

    def __init__(self, lm, compile: bool = False, warmup: int = 2, step_lm=None):
        self.lm, self.warmup = lm, warmup
        self.step_lm = step_lm if step_lm is not None else lm
        self.own_lengths = getattr(self.step_lm, "reads_own_lengths", False)
        self.compiled = compile
        self.fn = torch.compile(decode_rows, dynamic=True) if compile else decode_rows
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self._bound: tuple | None = None  # (cache, state, sampling) the graphs were captured on
        self._lock = threading.Lock()

    continues_prefix = True  # the prefill is the module's own

    def prefill(self, embeds, lengths, cache, start=None):
        return self.lm.prefill(embeds, cache, lengths, start=start)

    def decode(self, cache, state, n, n_slots, sampling):
        rows = _bucket(n, row_buckets(cache.batch))
        slots = _bucket(n_slots, self._slot_sizes(cache.max_len))
        with self._lock:
            self._bind(cache, state, sampling)
            entry = self.graphs.get((rows, slots))
            if entry is None:
                entry = self._capture(rows, slots, restore=True)
            graph, tokens = entry
            graph.replay()
            return tokens[:n]

    def warm(self, cache, state: DecodeState, sampling) -> None:
        """Capture every bucket now (start-up: the state holds nothing yet)."""
        with self._lock:
            self._bind(cache, state, sampling)
            for rows in row_buckets(cache.batch):
                for slots in self._slot_sizes(cache.max_len):
                    if (rows, slots) not in self.graphs:
                        self._capture(rows, slots, restore=False)
        torch.cuda.synchronize()

    def _slot_sizes(self, max_len: int) -> list[int]:
        return [max_len] if self.own_lengths else slot_buckets(max_len)

    def _bind(self, cache, state, sampling) -> None:
        """The graphs hold the tensors they were captured on: a new cache (the token batch grew)
        means new graphs, captured on first use."""
        if self._bound is None or self._bound[0] is not cache or self._bound[1] is not state:
            if self._bound is not None:
                log.info("decode graphs: the token batch grew to %d rows; recapturing on use", cache.batch)
            self.graphs.clear()
            self.pool = torch.cuda.graph_pool_handle()  # the old pool went with its graphs
            self._bound = (cache, state, sampling)

    def _capture(self, rows: int, slots: int, restore: bool):
        cache, state, sampling = self._bound
        saved = {name: getattr(state, name)[:rows].clone() for name in DecodeState.FIELDS} if restore else None
        try:
            side = torch.cuda.Stream(self.lm.device)
            side.wait_stream(torch.cuda.current_stream(self.lm.device))
            with torch.inference_mode(), torch.cuda.stream(side):
                for _ in range(self.warmup):
                    self.fn(self.step_lm, cache, state, 0, rows, slots, sampling)
            torch.cuda.current_stream(self.lm.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.inference_mode(), torch.cuda.graph(graph, pool=self.pool):
                tokens = self.fn(self.step_lm, cache, state, 0, rows, slots, sampling)
        finally:  # also when a capture fails (out of memory): the step it stood for changed no state
            if saved is not None:
                for name, value in saved.items():
                    getattr(state, name)[:rows].copy_(value)
            else:  # start-up: leave no trace of the warm-up steps
                for name in ("position", "count"):
                    getattr(state, name).zero_()
        self.graphs[(rows, slots)] = (graph, tokens)
        return graph, tokens

    def describe(self) -> str:
        kind = "compiled, " if self.compiled else ""
        if self.own_lengths:
            return f"{kind}CUDA graphs of the {self.step_lm.describe()} + sampling, {len(self.graphs)} row buckets"
        return f"{kind}CUDA graphs of decode + sampling, {len(self.graphs)} (rows, slots) buckets"
