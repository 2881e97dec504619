"""The streaming flow's cached DiT call (`DiT.forward_cached`) replayed from CUDA graphs.

A cached chunk solves few frames (50-200 per request), so one estimator call is a few thousand
small kernels: launches, not arithmetic, set its time. One graph is captured per shape bucket -
rows (the next power of two), new frames (a multiple of the 50-frame chunk), cached frames (a
multiple of `past_bucket`) - and replayed; padded rows, frames and cache slots are masked out of
every real frame's attention (`continuation_mask`) and the convolutions are causal, so the real
outputs are those of the eager call. Calls above the largest bucket run eagerly (arithmetic
bound anyway). The cached keys/values, the largest input, live in one buffer shared by every
graph (graphs replay one at a time); the other inputs are per graph. Outputs are copied out
before the next replay can overwrite them. What is captured is `FusedChunkDiT` (engines.dit_fused:
the same function in fewer kernels). Its plain twin is the eager `forward_cached` of the same
module (`cosyvoice3.backends.TorchChunkEstimator`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import torch

from .dit_fused import FusedChunkDiT
from .torch_backend import _copy_padded


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class GraphChunkEstimator:
    """dit: a DiT on a CUDA device in the precision to run (this class does not copy it)."""

    def __init__(self, dit, max_rows: int = 32, max_new: int = 400, max_past: int = 2048, past_bucket: int = 256,
                 max_graphs: int = 160):
        self.dit = dit
        self.run = FusedChunkDiT(dit).eval()
        self.dtype = dit.proj_out.weight.dtype
        self.device = dit.proj_out.weight.device
        self.chunk = dit.cfg.static_chunk_size
        self.max_rows, self.max_new, self.max_past = max_rows, max_new, max_past
        self.past_bucket, self.max_graphs = past_bucket, max_graphs
        depth, heads, dim_head, context = dit.cache_shape()
        self.context = context
        self._kv = torch.zeros(depth * 2 * max_rows * heads * max_past * dim_head, dtype=self.dtype,
                               device=self.device)
        self._kv_dims = (depth, 2, heads, dim_head)
        self.graphs: dict[tuple[int, int, int], _Graph] = {}
        self.pool = torch.cuda.graph_pool_handle()
        self._lock = threading.Lock()

    def cache_shape(self) -> tuple[int, int, int, int]:
        return self.dit.cache_shape()

    def describe(self) -> str:
        return f"CUDA graphs per (rows, new frames, cached frames) up to ({self.max_rows}, {self.max_new}, " \
               f"{self.max_past}), eager above"

    def past_buffer(self, rows: int, past: int) -> torch.Tensor | None:
        """Where a caller may write the cached keys/values of a call of `rows` rows and `past`
        cached frames: the graphs' own input buffer, shaped (depth, 2, rows', heads, past', dim_head)
        for the call's bucket, so the call copies nothing (None: no graph takes such a call).
        Slots a call does not fill hold earlier calls' values: finite, and masked out by
        `past_len`. Valid until the next call; one caller at a time (the worker's one engine)."""
        key = self.bucket(rows, self.chunk, past)
        if key[0] > self.max_rows or key[2] > self.max_past:
            return None
        return self._kv_view(key[0], key[2])

    def _kv_view(self, rows: int, past: int) -> torch.Tensor:
        depth, two, heads, dim_head = self._kv_dims
        return self._kv[:depth * two * rows * heads * past * dim_head].view(depth, two, rows, heads, past, dim_head)

    def bucket(self, rows: int, new: int, past: int) -> tuple[int, int, int]:
        return (1 << max(0, rows - 1).bit_length(), math.ceil(new / self.chunk) * self.chunk,
                math.ceil(past / self.past_bucket) * self.past_bucket)

    @torch.inference_mode()
    def __call__(self, x, mask, mu, t, spks, cond, past_len, past_kv, past_conv):
        d = self.dtype
        args = (x.to(d), mask.to(d), mu.to(d), t.to(d), spks.to(d), cond.to(d), past_len.to(self.device),
                past_kv.to(d), past_conv.to(d))
        rows, new, past = x.shape[0], x.shape[2], past_kv.shape[4]
        key = self.bucket(rows, new, past)
        eager = (*args[:7], args[7][:, :, :rows], args[8])  # a `past_buffer` has the bucket's rows
        if key[0] > self.max_rows or key[1] > self.max_new or key[2] > self.max_past:
            return self.run(*eager)
        with self._lock:
            g = self.graphs.get(key)
            if g is None:
                if len(self.graphs) >= self.max_graphs:
                    return self.run(*eager)
                g = self.graphs[key] = self._capture(key)
            for static, value in zip(g.inputs, args):
                if value.data_ptr() != static.data_ptr() or value.shape != static.shape:  # not `past_buffer`
                    _copy_padded(static, value)
            g.graph.replay()
            v, new_kv, conv_in = g.outputs
            return (v[:rows, :, :new].clone(), new_kv[:, :, :rows, :, :new].clone(),
                    conv_in[:rows, :, :, :new].clone())

    def warm(self, shapes=(((2,), (100, 150, 200), (0, 256, 512, 768, 1024)),
                           ((4, 8, 16, 32), (100, 200), (256, 512)))) -> int:
        """Capture the graphs of the common shapes now (a worker's boot) rather than at a first
        chunk: (rows, new frames, cached frames) products; returns how many were captured."""
        n = 0
        with self._lock:
            for rows, new, past in shapes:
                for r, k, p in ((r, k, p) for r in rows for k in new for p in past):
                    key = self.bucket(r, k, p)
                    if key not in self.graphs and len(self.graphs) < self.max_graphs:
                        self.graphs[key] = self._capture(key)
                        n += 1
        return n

    def _static_inputs(self, key: tuple[int, int, int]) -> list[torch.Tensor]:
        rows, new, past = key
        mel = self.dit.cfg.mel_dim
        z = dict(dtype=self.dtype, device=self.device)
        kv = self._kv_view(rows, past)
        return [torch.zeros(rows, mel, new, **z), torch.zeros(rows, 1, new, **z), torch.zeros(rows, mel, new, **z),
                torch.zeros(rows, **z), torch.zeros(rows, self.dit.cfg.spk_dim, **z), torch.zeros(rows, mel, new, **z),
                torch.zeros(rows, dtype=torch.long, device=self.device), kv,
                torch.zeros(rows, 2, self.dit.cfg.dim, self.context, **z)]

    def _capture(self, key: tuple[int, int, int]) -> _Graph:
        static = self._static_inputs(key)
        static[1].fill_(1)  # real frames while warming: no row without a visible key
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            self.run(*static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            outputs = self.run(*static)
        return _Graph(graph, static, outputs)

    def close(self) -> None:
        self.graphs.clear()

