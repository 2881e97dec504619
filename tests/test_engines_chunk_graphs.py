"""The cached streaming DiT call replayed from CUDA graphs equals its eager twin (GPU only)."""

from __future__ import annotations

import pytest
import torch

from cosyvoice3.config import DiTConfig
from cosyvoice3.nn.dit import DiT


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_graph_replays_equal_the_eager_call(dtype):
    from engines.chunk_graphs import GraphChunkEstimator

    torch.manual_seed(0)
    cfg = DiTConfig(dim=256, depth=3, heads=4, dim_head=64, ff_mult=2)
    dit = DiT(cfg).cuda().to(dtype).eval()
    est = GraphChunkEstimator(dit, max_rows=8, max_new=200, max_past=512, past_bucket=128)
    depth, heads, dh, ctx = dit.cache_shape()
    for rows, new, past in ((2, 100, 150), (3, 150, 300), (2, 50, 0), (2, 100, 150), (16, 50, 50)):
        args = (torch.randn(rows, 80, new, device="cuda"), torch.ones(rows, 1, new, device="cuda"),
                torch.randn(rows, 80, new, device="cuda"), torch.rand(rows, device="cuda"),
                torch.randn(rows, 80, device="cuda"), torch.randn(rows, 80, new, device="cuda"),
                torch.full((rows,), past, dtype=torch.long, device="cuda"),
                torch.randn(depth, 2, rows, heads, past, dh, device="cuda"),
                torch.randn(rows, 2, cfg.dim, ctx, device="cuda"))
        args[1][-1, :, new // 2:] = 0  # a shorter last row
        with torch.inference_mode():
            want = dit.forward_cached(*(a.to(dtype) if a.is_floating_point() else a for a in args))
            got = est(*args)
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        for g, w in zip(got, want):  # the last row's masked frames too: the same computation in both
            assert g.shape == w.shape
            assert float((g.float() - w.float()).norm() / w.float().norm()) < tol
    assert len(est.graphs) == 3  # (2,100,256) was replayed, (16, ...) ran eagerly


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cached_frames_written_into_the_graphs_own_buffer_give_the_eager_result():
    from engines.chunk_graphs import GraphChunkEstimator

    torch.manual_seed(1)
    cfg = DiTConfig(dim=256, depth=3, heads=4, dim_head=64, ff_mult=2)
    dit = DiT(cfg).cuda().to(torch.float32).eval()
    est = GraphChunkEstimator(dit, max_rows=8, max_new=200, max_past=512, past_bucket=128)
    depth, heads, dh, ctx = dit.cache_shape()
    # the buffer holds an earlier call's values in the slots this call leaves alone: masked out
    for rows, new, past in ((4, 100, 300), (2, 100, 100), (3, 250, 200)):  # the last one runs eagerly
        buf = est.past_buffer(rows, past)
        assert buf.shape[2] >= rows and buf.shape[4] >= past
        past_kv = torch.randn(depth, 2, rows, heads, past, dh, device="cuda")
        buf[:, :, :rows, :, :past] = past_kv
        args = (torch.randn(rows, 80, new, device="cuda"), torch.ones(rows, 1, new, device="cuda"),
                torch.randn(rows, 80, new, device="cuda"), torch.rand(rows, device="cuda"),
                torch.randn(rows, 80, device="cuda"), torch.randn(rows, 80, new, device="cuda"),
                torch.tensor([past - 7 * i for i in range(rows)], dtype=torch.long, device="cuda"))
        conv = torch.randn(rows, 2, cfg.dim, ctx, device="cuda")
        with torch.inference_mode():
            want = dit.forward_cached(*args, past_kv, conv)
            got = est(*args, buf, conv)
        for g, w in zip(got, want):
            assert g.shape == w.shape
            assert float((g - w).norm() / w.norm()) < 1e-4
    assert est.past_buffer(16, 100) is None  # above the largest bucket: the caller's own tensor
