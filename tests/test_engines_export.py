"""ONNX exports of the golden model's modules, run by ONNX Runtime on the CPU, against PyTorch and
against the reference tensors of the official implementation (tests/golden, a copy of ../shared/golden).

Tolerances, as max |ONNX - PyTorch| / max(1, max |PyTorch|): FP32 1e-4 for every module (seen:
~1e-6); FP16 2e-2 for the DiT, 3e-2 for HiFT and the LLM steps (seen: ~1e-3). Against the
golden files: DiT and flow mel 1e-4, LLM logits 1e-4 and identical greedy tokens, HiFT speech
1e-3 (the golden README's tolerances).
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from engines.adapters import EstimatorAdapter, RunnerDecodeSteps, VocoderAdapter
from engines.modules import chunk_attention_mask, dit_def, hift_def, llm_decode_def, llm_prefill_def
from engines.onnx_export import export_onnx
from engines.ort_backend import OrtRunner
from engines.torch_backend import TorchRunner

GOLDEN = str(Path(__file__).resolve().parent / "golden")
MODEL = f"{GOLDEN}/model"


@pytest.fixture(scope="module")
def model():
    from cosyvoice3.config import load_config
    from cosyvoice3.nn.flow import load_flow
    from cosyvoice3.nn.hift import load_hift
    from cosyvoice3.nn.llm import load_llm

    cfg = load_config(MODEL)
    return types.SimpleNamespace(config=cfg, flow=load_flow(f"{MODEL}/flow.pt", cfg.flow),
                                 hift=load_hift(f"{MODEL}/hift.pt", cfg.hift),
                                 llm=load_llm(f"{MODEL}/llm.pt", cfg.llm, cfg.qwen))


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """(module def, precision) -> ORT runner of its export, exported once per test module."""
    out = tmp_path_factory.mktemp("onnx")
    runners = {}

    def get(mdef, precision):
        key = (mdef.name, precision)
        if key not in runners:
            path = export_onnx(mdef, out / f"{mdef.name}-{precision}.onnx", precision)
            runners[key] = OrtRunner(path, mdef.name, mdef.inputs, mdef.outputs, "cpu", precision, mdef.accepted())
        return runners[key]

    return get


def rel_err(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) / max(1.0, float(b[k].abs().max())) for k in b)


def golden(name):
    with np.load(f"{GOLDEN}/{name}.npz") as data:
        return {k: torch.from_numpy(data[k]) for k in data.files}


def test_exports_have_named_inputs_and_dynamic_axes(model, exported):
    import onnx

    mdef = dit_def(model.flow.estimator)
    runner = exported(mdef, "fp32")
    graph = onnx.load(runner.path).graph
    names = [i.name for i in graph.input]
    assert names == ["x", "mask", "mu", "t", "spks", "cond", "chunk_frames"]
    x = graph.input[0].type.tensor_type.shape.dim
    assert x[0].dim_param and x[1].dim_value == 80 and x[2].dim_param  # batch and frames dynamic
    assert [o.name for o in graph.output] == ["velocity"]


@pytest.mark.parametrize("chunk, key", [(0, "out"), (50, "out_streaming")])
def test_dit_export_matches_golden(model, exported, chunk, key):
    g = golden("dit_estimator")
    runner = exported(dit_def(model.flow.estimator), "fp32")
    inputs = {k: g[k] for k in ("x", "mask", "mu", "t", "spks", "cond")}
    out = runner.run({**inputs, "chunk_frames": torch.full((2,), chunk)})["velocity"]
    assert (out - g[key]).abs().max() < 1e-4


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_dit_export_parity_on_other_shapes(model, exported, precision):
    mdef = dit_def(model.flow.estimator)
    runner = exported(mdef, precision)
    reference = TorchRunner(mdef.wrapper, "dit", mdef.inputs, mdef.outputs, "cpu")
    for sizes in ({"batch": 4, "frames": 77, "chunk": 50}, {"batch": 2, "frames": 301, "chunk": 0}):
        ex = mdef.example(sizes, "cpu")
        ex["mask"][1, :, sizes["frames"] - 9:] = 0  # a padded row
        assert rel_err(runner.run(ex), reference.run(ex)) < mdef.tolerance[precision]


def test_chunk_mask_in_graph_equals_the_models_mask():
    from cosyvoice3.nn.dit import attention_mask

    mask = torch.ones(2, 1, 137)
    mask[1, :, 120:] = 0
    for streaming, chunk in ((False, 0), (True, 50), (True, 7)):
        ours = chunk_attention_mask(mask, torch.tensor([chunk if streaming else 0, chunk if streaming else 0]))
        assert torch.equal(ours, attention_mask(mask, streaming, chunk if streaming else 50))
    mixed = chunk_attention_mask(mask, torch.tensor([0, 50]))  # one rule per row
    assert torch.equal(mixed[0], attention_mask(mask, False, 50)[0]) and torch.equal(mixed[1], attention_mask(mask, True, 50)[1])


@pytest.mark.parametrize("streaming, key", [(False, "mel"), (True, "mel_streaming_dit")])
def test_flow_through_the_estimator_seam_matches_golden(model, exported, streaming, key):
    from cosyvoice3.nn.noise import FixedNoise

    g = golden("flow")
    runner = exported(dit_def(model.flow.estimator), "fp32")
    calls = []

    def counted(*args):
        calls.append(args[-1].tolist())
        return EstimatorAdapter(runner)(*args)

    mel = model.flow.inference(g["token"], g["prompt_token"], g["prompt_feat"], g["embedding"],
                               streaming=streaming, finalize=True, noise_source=FixedNoise(model.config),
                               estimator=counted)
    assert len(calls) == 10 and calls[0] == [50 if streaming else 0] * 2
    assert (mel - g[key]).abs().max() < 1e-4


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_hift_export_parity(model, exported, precision):
    mdef = hift_def(model.hift)
    runner = exported(mdef, precision)
    reference = TorchRunner(mdef.wrapper, "hift", mdef.inputs, mdef.outputs, "cpu")
    for sizes in ({"batch": 1, "frames": 7}, {"batch": 2, "frames": 40}):
        ex = mdef.example(sizes, "cpu")
        assert rel_err(runner.run(ex), reference.run(ex)) < mdef.tolerance[precision]


def test_hift_through_the_decode_seam_matches_golden(model, exported):
    g = golden("hift")
    stack = VocoderAdapter(exported(hift_def(model.hift), "fp32"))
    speech, _ = model.hift.inference(g["mel"], finalize=True, stack=stack)
    partial, _ = model.hift.inference(g["mel"], finalize=False, stack=stack)
    assert (speech - g["speech"]).abs().max() < 1e-3
    assert partial.shape == g["speech_finalize_false"].shape
    assert (partial - g["speech_finalize_false"]).abs().max() < 1e-3


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_llm_step_exports_parity(model, exported, precision):
    for make, sizes in ((llm_prefill_def, {"batch": 3, "length": 11, "slots": 40}),
                        (llm_decode_def, {"batch": 3, "slots": 40})):
        mdef = make(model.llm)
        runner = exported(mdef, precision)
        reference = TorchRunner(mdef.wrapper, mdef.name, mdef.inputs, mdef.outputs, "cpu")
        ex = mdef.example(sizes, "cpu")
        out = runner.run(ex)
        ref = reference.run({k: v.clone() for k, v in ex.items()})  # writes its caches in place
        assert rel_err(out, ref) < mdef.tolerance[precision], mdef.name


def test_llm_through_engine_steps_reproduces_golden_tokens(model, exported):
    from cosyvoice3.decoding.token_batch import SegmentSpec, TokenBatch

    g = golden("llm")
    steps = RunnerDecodeSteps(model.llm, exported(llm_prefill_def(model.llm), "fp32"),
                              exported(llm_decode_def(model.llm), "fp32"))
    spec = SegmentSpec(g["prompt_text"][0].tolist(), g["text"][0].tolist(), g["prompt_speech_token"][0].tolist(),
                       greedy=True, min_len_rule="official")
    batch = TokenBatch(model.llm, model.config.llm, rows=2, max_len=256, steps=steps)
    other = SegmentSpec([151646], [5, 6, 7], key=9, forced_tokens=3)  # shares the batch and leaves early
    tokens = [t for ev in batch.join([("golden", spec), ("other", other)]) if ev.owner == "golden" for t in ev.emitted]
    while "golden" in batch:
        tokens += [t for ev in batch.step() if ev.owner == "golden" for t in ev.emitted]
    assert tokens == g["out_tokens"].tolist()
