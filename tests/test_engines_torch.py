"""PyTorch runners: reduced precision on a private copy, and (GPU) CUDA graphs with padded buckets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engines.modules import dit_def, hift_def, llm_decode_def
from engines.torch_backend import CudaGraphRunner, TorchRunner, copy_module

MODEL = str(Path(__file__).resolve().parent / "golden" / "model")


def load(device="cpu"):
    from cosyvoice3.config import load_config
    from cosyvoice3.nn.flow import load_flow
    from cosyvoice3.nn.hift import load_hift
    from cosyvoice3.nn.llm import load_llm

    cfg = load_config(MODEL)
    return (load_flow(f"{MODEL}/flow.pt", cfg.flow, device), load_hift(f"{MODEL}/hift.pt", cfg.hift, device),
            load_llm(f"{MODEL}/llm.pt", cfg.llm, cfg.qwen, device))


def rel_err(a, b):
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def test_bf16_runner_uses_a_private_copy_and_float32_boundaries():
    flow, _, _ = load()
    mdef = dit_def(flow.estimator)
    fp32 = TorchRunner(mdef.wrapper, "dit", mdef.inputs, mdef.outputs, "cpu")
    bf16 = TorchRunner(mdef.wrapper, "dit", mdef.inputs, mdef.outputs, "cpu", "bf16")
    assert fp32.wrapper is mdef.wrapper and bf16.wrapper is not mdef.wrapper
    assert flow.estimator.proj_out.weight.dtype == torch.float32  # the model is untouched
    ex = mdef.example({"batch": 2, "frames": 90, "chunk": 50}, "cpu")
    out = bf16.run(ex)["velocity"]
    assert out.dtype == torch.float32
    assert rel_err(out, fp32.run(ex)["velocity"]) < mdef.tolerance["bf16"]


def test_copy_module_shares_non_tensor_state():
    _, hift, _ = load()
    copy = copy_module(hift)
    assert copy.noise is hift.noise  # the fixed noise tables are shared, not duplicated
    assert copy.conv_post.weight.data_ptr() != hift.conv_post.weight.data_ptr()


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_dit_cuda_graphs_with_padded_buckets_match_eager():
    flow, _, _ = load("cuda")
    mdef = dit_def(flow.estimator)
    eager = TorchRunner(mdef.wrapper, "dit", mdef.inputs, mdef.outputs, "cuda")
    graphs = CudaGraphRunner(TorchRunner(mdef.wrapper, "dit", mdef.inputs, mdef.outputs, "cuda"), ("frames",), 64)
    for frames, chunk in ((70, 50), (100, 50), (128, 0), (300, 50)):
        ex = mdef.example({"batch": 2, "frames": frames, "chunk": chunk}, "cuda")
        out = graphs.run(ex)["velocity"]
        assert out.shape == (2, 80, frames)
        # padding changes kernel choices (cuDNN convs use TF32 by default): a padding bug would be O(1)
        assert rel_err(out, eager.run(ex)["velocity"]) < 5e-3
    assert len(graphs.graphs) == 2  # 70, 100 and 128 share the 128-frame bucket; 300 -> 320


@pytest.mark.gpu
@needs_cuda
def test_llm_decode_cuda_graph_matches_eager_and_updates_the_cache():
    _, _, lm = load("cuda")
    mdef = llm_decode_def(lm)
    eager = TorchRunner(mdef.wrapper, "llm_decode", mdef.inputs, mdef.outputs, "cuda")
    graphs = CudaGraphRunner(TorchRunner(mdef.wrapper, "llm_decode", mdef.inputs, mdef.outputs, "cuda", "bf16"))
    ex = mdef.example({"batch": 3, "slots": 48}, "cuda")
    ref = eager.run({k: v.clone() for k, v in ex.items()})
    for _ in range(2):  # a replay gives the same answer as the capture run
        out = graphs.run({k: v.clone() for k, v in ex.items()})
        for name in ref:
            assert rel_err(out[name], ref[name]) < mdef.tolerance["bf16"], name


@pytest.mark.gpu
@needs_cuda
def test_hift_fp16_on_gpu_within_tolerance():
    _, hift, _ = load("cuda")
    mdef = hift_def(hift)
    ex = mdef.example({"batch": 1, "frames": 50}, "cuda")
    ref = TorchRunner(mdef.wrapper, "hift", mdef.inputs, mdef.outputs, "cuda").run(ex)["spectrum"]
    out = TorchRunner(mdef.wrapper, "hift", mdef.inputs, mdef.outputs, "cuda", "fp16").run(ex)["spectrum"]
    assert rel_err(out, ref) < mdef.tolerance["fp16"]


@pytest.mark.gpu
@needs_cuda
def test_hift_cuda_graphs_pad_frames_and_the_source_spectrum_exactly():
    _, hift, _ = load("cuda")
    mdef = hift_def(hift)
    eager = TorchRunner(mdef.wrapper, "hift", mdef.inputs, mdef.outputs, "cuda")
    graphs = CudaGraphRunner(TorchRunner(mdef.wrapper, "hift", mdef.inputs, mdef.outputs, "cuda"), mdef.pad_dims, 64,
                             derived=mdef.derived)
    for batch, frames in ((1, 40), (1, 64), (3, 57), (2, 130)):
        ex = mdef.example({"batch": batch, "frames": frames}, "cuda")
        out = graphs.run(ex)["spectrum"]
        assert out.shape == (batch, 18, 120 * frames + 1)
        assert rel_err(out, eager.run(ex)["spectrum"]) < 1e-4
    assert len(graphs.graphs) == 3  # (1, 64) twice, (4, 64), (2, 192)
