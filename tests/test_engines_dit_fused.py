"""The fused cached DiT call equals its twin, `DiT.forward_cached`, up to float rounding."""

from __future__ import annotations

import torch

from cosyvoice3.config import DiTConfig
from cosyvoice3.nn.dit import DiT
from engines.dit_fused import FusedChunkDiT


def test_fused_chunk_dit_equals_forward_cached():
    torch.manual_seed(1)
    cfg = DiTConfig(dim=128, depth=3, heads=4, dim_head=32, ff_mult=2)
    dit = DiT(cfg).eval()
    for p in dit.parameters():
        torch.nn.init.normal_(p, std=0.1)
    fused = FusedChunkDiT(dit).eval()
    depth, heads, dh, ctx = dit.cache_shape()
    for rows, new, past in ((2, 100, 150), (3, 50, 0), (4, 150, 300)):
        mask = torch.ones(rows, 1, new)
        mask[-1, :, new // 2:] = 0
        args = (torch.randn(rows, 80, new), mask, torch.randn(rows, 80, new), torch.rand(rows),
                torch.randn(rows, 80), torch.randn(rows, 80, new), torch.full((rows,), past),
                torch.randn(depth, 2, rows, heads, past, dh), torch.randn(rows, 2, cfg.dim, ctx))
        with torch.inference_mode():
            want = dit.forward_cached(*args)
            got = fused(*args)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
