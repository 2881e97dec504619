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

from engines.adapters import EngineLM, EstimatorAdapter, HiFTDecodeAdapter
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
    out = runner.run({**inputs, "chunk_frames": torch.tensor([chunk])})["velocity"]
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
        ours = chunk_attention_mask(mask, torch.tensor([chunk if streaming else 0]))
        assert torch.equal(ours, attention_mask(mask, streaming, chunk if streaming else 50))


@pytest.mark.parametrize("streaming, key", [(False, "mel"), (True, "mel_streaming_dit")])
def test_flow_through_the_estimator_seam_matches_golden(model, exported, streaming, key):
    from cosyvoice3.nn.noise import FixedNoise

    g = golden("flow")
    runner = exported(dit_def(model.flow.estimator), "fp32")
    adapter = EstimatorAdapter(runner, model.flow.estimator, model.config.flow.dit.static_chunk_size)
    model.flow.estimator_fn = adapter
    try:
        mel = model.flow.inference(g["token"], g["prompt_token"], g["prompt_feat"], g["embedding"],
                                   streaming=streaming, finalize=True, noise_source=FixedNoise(model.config))
    finally:
        model.flow.estimator_fn = model.flow.estimator
    assert adapter._seen is not None and adapter._seen[1] == (50 if streaming else 0)
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
    runner = exported(hift_def(model.hift), "fp32")
    model.hift.decode = HiFTDecodeAdapter(runner, model.hift.upsample_factor, model.hift.conv_pre.pad)
    try:
        speech, _ = model.hift.inference(g["mel"], finalize=True)
        partial, _ = model.hift.inference(g["mel"], finalize=False)
    finally:
        del model.hift.decode  # back to the class's method
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
    from cosyvoice3.decoding.token_loop import SpeechTokenDecoder

    g = golden("llm")
    lm = EngineLM(model.llm, exported(llm_prefill_def(model.llm), "fp32"),
                  exported(llm_decode_def(model.llm), "fp32"))
    decoder = SpeechTokenDecoder(lm, g["text"][0], g["prompt_text"][0], g["prompt_speech_token"][0],
                                 greedy=True, min_len_rule="official", trace=True)
    tokens = decoder.run()
    assert tokens == g["out_tokens"].tolist()
    assert (decoder.trace[0].logits - g["first_step_logits"]).abs().max() < 1e-4
    assert (decoder.trace[1].logits - g["step2_logits"]).abs().max() < 1e-4
