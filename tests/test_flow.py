"""CausalFlow: golden conditions, Euler steps and mels; the estimator seam; streaming consistency."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cosyvoice3.config import load_config
from cosyvoice3.errors import BadInputError, CheckpointMismatchError
from cosyvoice3.nn.flow import CausalFlow, cosine_time_grid, load_flow
from cosyvoice3.nn.noise import FixedNoise

GOLDEN = Path(__file__).resolve().parent / "golden"
ATOL = 1e-4


@pytest.fixture(scope="module")
def config():
    return load_config(GOLDEN / "model")


@pytest.fixture(scope="module")
def flow(config):
    return load_flow(GOLDEN / "model" / "flow.pt", config.flow)


@pytest.fixture(scope="module")
def noise(config):
    return FixedNoise(config)


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN / "flow.npz")


def golden_inputs(golden):
    return dict(token=torch.from_numpy(golden["token"]), prompt_token=torch.from_numpy(golden["prompt_token"]),
                prompt_feat=torch.from_numpy(golden["prompt_feat"]), embedding=torch.from_numpy(golden["embedding"]))


def test_golden_trace_and_mel(flow, noise, golden):
    trace = {}
    mel = flow.inference(**golden_inputs(golden), streaming=False, finalize=True, noise_source=noise, trace=trace)
    for name in ("noise", "mu", "cond", "spks_proj", "euler_t", "euler_x", "euler_dphi_cfg_in"):
        assert trace[name].shape == golden[name].shape, name
        np.testing.assert_allclose(trace[name].numpy(), golden[name], rtol=0, atol=ATOL, err_msg=name)
    assert mel.shape == golden["mel"].shape and mel.dtype == torch.float32
    np.testing.assert_allclose(mel.numpy(), golden["mel"], rtol=0, atol=ATOL)
    assert int(golden["n_timesteps"]) == len(trace["euler_t"])
    assert float(golden["inference_cfg_rate"]) == pytest.approx(flow.cfg.cfm.inference_cfg_rate)


def test_golden_streaming_mel(flow, noise, golden):
    mel = flow.inference(**golden_inputs(golden), streaming=True, finalize=True, noise_source=noise)
    np.testing.assert_allclose(mel.numpy(), golden["mel_streaming_dit"], rtol=0, atol=ATOL)
    assert not np.allclose(golden["mel_streaming_dit"], golden["mel"], atol=1e-3)


def test_golden_e2e_mel(flow, noise):
    e2e = np.load(GOLDEN / "e2e.npz")
    mel = flow.inference(torch.from_numpy(e2e["flow_token"]), torch.from_numpy(e2e["flow_prompt_speech_token"]),
                         torch.from_numpy(e2e["prompt_speech_feat"]), torch.from_numpy(e2e["flow_embedding"]),
                         streaming=False, finalize=True, noise_source=noise)
    np.testing.assert_allclose(mel.numpy(), e2e["mel"], rtol=0, atol=ATOL)


def test_cosine_grid():
    grid = cosine_time_grid(10)
    expected = 1 - np.cos(np.linspace(0, 1, 11) * np.pi / 2)
    np.testing.assert_allclose(grid.numpy(), expected, atol=1e-7)
    assert grid[0] == 0 and grid[-1] == 1


def test_estimator_is_an_argument_and_gets_per_row_chunk_sizes(flow, noise, golden):
    calls = []

    def spy(x, mask, mu, t, spks, cond, chunk_frames):
        calls.append((x.shape, mask.shape, mu.shape, t.shape, spks.shape, cond.shape, chunk_frames.tolist()))
        assert torch.equal(mu[1], torch.zeros_like(mu[1])) and torch.equal(spks[1], torch.zeros_like(spks[1]))
        return flow.default_estimator(x, mask, mu, t, spks, cond, chunk_frames)

    keys = set(flow.state_dict())
    mel = flow.inference(**golden_inputs(golden), streaming=True, finalize=True, noise_source=noise, estimator=spy)
    assert set(flow.state_dict()) == keys
    np.testing.assert_allclose(mel.numpy(), golden["mel_streaming_dit"], rtol=0, atol=ATOL)
    assert len(calls) == 10
    assert calls[0] == ((2, 80, 130), (2, 1, 130), (2, 80, 130), (2,), (2, 80), (2, 80, 130), [50, 50])


def test_a_padded_batch_solves_each_request_as_alone(flow, noise, golden):
    """Two requests of different lengths and attention rules in one solve: each gets its own mel."""
    inputs = golden_inputs(golden)
    full = flow.inference(**inputs, streaming=False, finalize=True, noise_source=noise)
    short = {**inputs, "token": inputs["token"][:, :25]}
    streamed = flow.inference(**short, streaming=True, finalize=False, noise_source=noise)
    conds = [flow.prepare(**inputs, finalize=True), flow.prepare(**short, finalize=False)]
    width = max(c[0].shape[2] for c in conds)
    mu, cond = torch.zeros(2, 80, width), torch.zeros(2, 80, width)
    mask = torch.zeros(2, 1, width)
    for i, c in enumerate(conds):
        n = c[0].shape[2]
        mu[i, :, :n], cond[i, :, :n], mask[i, :, :n] = c[0][0], c[1][0], 1
    spks = torch.cat([c[2] for c in conds])
    with torch.inference_mode():
        x = flow.solve(mu, cond, spks, mask, torch.tensor([0, 50]),
                       noise.flow_noise(width, "cpu", torch.float32).expand(2, -1, -1))
    p = conds[0][3]
    np.testing.assert_allclose(x[0:1, :, p:conds[0][0].shape[2]].numpy(), full.numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(x[1:2, :, p:conds[1][0].shape[2]].numpy(), streamed.numpy(), atol=1e-4, rtol=0)


def test_prepare_lengths_and_lookahead(flow, golden):
    inputs = golden_inputs(golden)
    mu, cond, spks, n_prompt = flow.prepare(**inputs, finalize=True)
    assert mu.shape == cond.shape == (1, 80, 130) and spks.shape == (1, 80) and n_prompt == 50
    mu_nf, cond_nf, _, _ = flow.prepare(**inputs, finalize=False)
    assert mu_nf.shape == (1, 80, 124)
    # Without finalize the last 3 tokens are look-ahead: the frames before them are unchanged.
    torch.testing.assert_close(mu_nf, mu[:, :, :124], rtol=0, atol=1e-6)
    torch.testing.assert_close(cond_nf, cond[:, :, :124], rtol=0, atol=0)
    with pytest.raises(BadInputError):
        flow.prepare(**{**inputs, "token": inputs["token"][:, :2]}, finalize=False)


def test_streaming_chunks_are_stable(flow, noise, golden):
    # The official streaming use: a non-final call on a token prefix (chunk mask) reproduces the
    # frames of complete chunks that a later call on more tokens produces.
    inputs = golden_inputs(golden)
    full = flow.inference(**inputs, streaming=True, finalize=True, noise_source=noise)  # 80 frames
    prefix = flow.inference(**{**inputs, "token": inputs["token"][:, :28]}, streaming=True, finalize=False,
                            noise_source=noise)  # prompt 50 + 50 new frames = two complete chunks
    assert prefix.shape == (1, 80, 50)
    torch.testing.assert_close(prefix, full[:, :, :50], rtol=0, atol=1e-5)
    plain = flow.inference(**{**inputs, "token": inputs["token"][:, :28]}, streaming=False, finalize=False,
                           noise_source=noise)
    assert not torch.allclose(plain, full[:, :, :50], atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.bfloat16])
def test_half_precision(config, noise, golden, dtype):
    flow = load_flow(GOLDEN / "model" / "flow.pt", config.flow, dtype=dtype)
    assert flow.estimator.proj_out.weight.dtype == dtype
    mel = flow.inference(**golden_inputs(golden), streaming=False, finalize=True, noise_source=noise)
    assert mel.dtype == torch.float32 and torch.isfinite(mel).all()
    err = np.abs(mel.numpy() - golden["mel"]).max() / np.abs(golden["mel"]).max()
    assert err < 2e-2, err


def test_strict_loading_reports_mismatch(config, tmp_path):
    state = torch.load(GOLDEN / "model" / "flow.pt", weights_only=True)
    state.pop("decoder.estimator.rotary_embed.inv_freq")
    state["decoder.estimator.extra"] = torch.zeros(1)
    path = tmp_path / "flow.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_flow(path, config.flow)
    assert "rotary_embed.inv_freq" in str(err.value) and "extra" in str(err.value)
    assert set(CausalFlow(config.flow).state_dict()) == set(torch.load(GOLDEN / "model" / "flow.pt",
                                                                      weights_only=True))
