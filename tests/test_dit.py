"""DiT estimator: strict loading of flow.pt, golden outputs, the attention mask, dtypes, ONNX export."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cosyvoice3.checkpoint import load_strict, read_state_dict
from cosyvoice3.config import load_config
from cosyvoice3.nn.dit import DiT, attention_mask

GOLDEN = Path(__file__).resolve().parent / "golden"
INPUTS = ("x", "mask", "mu", "t", "spks", "cond")
PREFIX = "decoder.estimator."


@pytest.fixture(scope="module")
def dit():
    cfg = load_config(GOLDEN / "model").flow.dit
    state = read_state_dict(GOLDEN / "model" / "flow.pt")
    model = DiT(cfg)
    load_strict(model, {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}, "flow.pt")
    assert torch.equal(model.rotary_embed.inv_freq, state[PREFIX + "rotary_embed.inv_freq"])
    return model.eval()


@pytest.fixture(scope="module")
def golden():
    data = np.load(GOLDEN / "dit_estimator.npz")
    return {k: torch.from_numpy(data[k]) for k in data.files}


def random_inputs(n_frames: int, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return dict(x=torch.randn(batch, 80, n_frames, generator=g), mask=torch.ones(batch, 1, n_frames),
                mu=torch.randn(batch, 80, n_frames, generator=g), t=torch.rand(batch, generator=g),
                spks=torch.randn(batch, 80, generator=g), cond=torch.randn(batch, 80, n_frames, generator=g))


@torch.no_grad()
def test_golden_outputs(dit, golden):
    inputs = {k: golden[k] for k in INPUTS}
    out = dit(**inputs)
    np.testing.assert_allclose(out.numpy(), golden["out"].numpy(), rtol=0, atol=1e-4)
    chunk = int(golden["static_chunk_size"])
    out_streaming = dit(**inputs, attn_mask=attention_mask(inputs["mask"], True, chunk))
    np.testing.assert_allclose(out_streaming.numpy(), golden["out_streaming"].numpy(), rtol=0, atol=1e-4)
    assert not np.allclose(golden["out"].numpy(), golden["out_streaming"].numpy(), atol=1e-3)
    assert torch.equal(dit(**inputs, attn_mask=attention_mask(inputs["mask"], False, chunk)), out)


def brute_force_mask(lengths, n_frames, streaming, chunk):
    out = torch.zeros(len(lengths), 1, n_frames, n_frames, dtype=torch.bool)
    for b, length in enumerate(lengths):
        for i in range(n_frames):
            for j in range(n_frames):
                visible = j < length
                if streaming:
                    visible = visible and j < (i // chunk + 1) * chunk
                out[b, 0, i, j] = visible
            if not out[b, 0, i].any():
                out[b, 0, i] = True
    return out


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_attention_mask_matches_brute_force(streaming, chunk):
    lengths, n_frames = [23, 9, 0], 23
    mask = torch.zeros(len(lengths), 1, n_frames)
    for b, length in enumerate(lengths):
        mask[b, 0, :length] = 1
    got = attention_mask(mask, streaming, chunk)
    assert got.dtype == torch.bool and got.shape == (3, 1, n_frames, n_frames)
    assert torch.equal(got, brute_force_mask(lengths, n_frames, streaming, chunk))


@torch.no_grad()
def test_streaming_chunks_ignore_the_future(dit):
    # With the chunk mask, frames of chunk c depend only on frames < (c + 1) * chunk.
    inputs = random_inputs(130)
    attn = attention_mask(inputs["mask"], True, 50)
    base = dit(**inputs, attn_mask=attn)
    changed = {k: v.clone() for k, v in inputs.items()}
    for name in ("x", "mu", "cond"):
        changed[name][:, :, 100:] = torch.randn(2, 80, 30)
    out = dit(**changed, attn_mask=attn)
    torch.testing.assert_close(out[:, :, :100], base[:, :, :100], rtol=0, atol=1e-6)
    assert not torch.allclose(out[:, :, 100:], base[:, :, 100:], atol=1e-3)
    full = dit(**changed)  # full attention: every frame sees the change
    assert not torch.allclose(full[:, :, :100], dit(**inputs)[:, :, :100], atol=1e-3)


@torch.no_grad()
def test_padding_is_invisible(dit):
    # A sequence padded at the end gives the same real frames as the sequence alone.
    short = random_inputs(40, batch=1, seed=1)
    padded = {k: v.clone() for k, v in short.items()}
    for name in ("x", "mu", "cond"):
        padded[name] = torch.cat([short[name], torch.randn(1, 80, 25)], dim=2)
    padded["mask"] = torch.cat([short["mask"], torch.zeros(1, 1, 25)], dim=2)
    torch.testing.assert_close(dit(**padded)[:, :, :40], dit(**short), rtol=0, atol=1e-5)


@torch.no_grad()
def test_scalar_t_and_batch_independence(dit):
    inputs = random_inputs(60, batch=3, seed=2)
    inputs["t"] = torch.full((3,), 0.3)
    out = dit(**inputs)
    scalar = dit(**{**inputs, "t": torch.tensor(0.3)})
    torch.testing.assert_close(scalar, out, rtol=0, atol=0)
    single = dit(**{k: v[1:2] for k, v in inputs.items()})
    torch.testing.assert_close(single, out[1:2], rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_and_stays_close(dit, golden, dtype):
    half = DiT(dit.cfg)
    half.load_state_dict(dit.state_dict())
    half = half.to(dtype).eval()
    inputs = {k: golden[k].to(dtype) for k in INPUTS}
    out = half(**inputs, attn_mask=attention_mask(inputs["mask"], True, 50))
    assert out.dtype == dtype and torch.isfinite(out).all()
    ref = golden["out_streaming"]
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < (3e-2 if dtype == torch.bfloat16 else 5e-3), err


def test_onnx_export_dynamic_frames(dit, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    names = INPUTS + ("attn_mask",)
    example = random_inputs(130)
    example["attn_mask"] = attention_mask(example["mask"], True, 50)
    path = tmp_path / "dit.onnx"
    frames = {2: "T"}
    torch.onnx.export(dit, tuple(example[n] for n in names), str(path), input_names=list(names),
                      output_names=["estimator_out"], opset_version=17, dynamo=False,
                      dynamic_axes={"x": frames, "mask": frames, "mu": frames, "cond": frames,
                                    "attn_mask": {2: "T", 3: "T"}, "estimator_out": frames})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in session.get_inputs()}
    for n_frames, streaming in [(77, True), (161, False)]:
        inputs = random_inputs(n_frames, seed=n_frames)
        inputs["attn_mask"] = attention_mask(inputs["mask"], streaming, 50)
        with torch.no_grad():
            ref = dit(**inputs).numpy()
        out = session.run(None, {k: v.numpy() for k, v in inputs.items() if k in graph_inputs})[0]
        np.testing.assert_allclose(out, ref, rtol=0, atol=1e-4)
