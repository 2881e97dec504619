"""FixedNoise reproduces the reference's construction-time noise exactly, without a 260 MB buffer."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from cosyvoice3.config import ModelConfig, load_config
from cosyvoice3.errors import TooLongError
from cosyvoice3.nn.noise import FixedNoise

GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def golden_noise():
    return FixedNoise(load_config(GOLDEN / "model"))


def test_matches_golden_buffers(golden_noise):
    hift = np.load(GOLDEN / "hift.npz")
    flow = np.load(GOLDEN / "flow.npz")
    assert np.array_equal(golden_noise.rand_ini.numpy(), hift["rand_ini"])
    n = hift["sine_noise"].shape[1]
    assert np.array_equal(golden_noise.sine_noise(n).numpy(), hift["sine_noise"])
    assert np.array_equal(golden_noise.flow_noise(flow["noise"].shape[2]).numpy(), flow["noise"])


def _reference_sequence(cond_channels: int, n_rows: int):
    """The reference's construction order with real modules on the global RNG (restored after)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        flow_noise = torch.randn([1, 80, 15000])
        nn.Embedding(6561, 80)
        nn.Linear(192, 80)
        for channels_in, kernel in [(80, 4)] + [(cond_channels, 3)] * 4:
            weight_norm(nn.Conv1d(channels_in, cond_channels, kernel))
        nn.Linear(cond_channels, 1)
        rand_ini = torch.rand(1, 9)
        rand_ini[:, 0] = 0
        sine = torch.rand(1, n_rows, 9)
    return flow_noise, rand_ini, sine


def test_released_sizes_match_module_construction():
    # The released F0 predictor (512 channels) draws far more than the golden one (32).
    noise = FixedNoise(ModelConfig())
    flow_noise, rand_ini, sine = _reference_sequence(512, 4000)
    assert torch.equal(noise.flow_noise(15000), flow_noise)
    assert torch.equal(noise.rand_ini, rand_ini)
    assert torch.equal(noise.sine_noise(4000), sine)
    assert not torch.equal(FixedNoise(load_config(GOLDEN / "model")).rand_ini, rand_ini)


def test_prefix_draws_equal_the_full_300s_buffer():
    # The property the lazy slicing relies on: rows drawn from the saved state are a prefix of
    # the reference's one 7.2 M x 9 draw (checked once against the full draw).
    _, _, full = _reference_sequence(32, 300 * 24000)
    noise = FixedNoise(load_config(GOLDEN / "model"))
    for n in (1, 481, 28800, 1_000_003, 300 * 24000):
        assert torch.equal(noise.sine_noise(n), full[:, :n])


def test_cache_growth_keeps_values():
    noise = FixedNoise(load_config(GOLDEN / "model"))
    small = noise.sine_noise(1000).clone()
    large = noise.sine_noise(50_000)
    assert large.shape == (1, 50_000, 9)
    assert torch.equal(large[:, :1000], small)
    assert torch.equal(noise.sine_noise(700), small[:, :700])
    assert noise.sine_noise(10).shape == (1, 10, 9)


def test_global_rng_untouched():
    before = torch.get_rng_state()
    noise = FixedNoise(ModelConfig())
    noise.sine_noise(20_000)
    noise.flow_noise(100)
    assert torch.equal(torch.get_rng_state(), before)


def test_flow_noise_is_a_copy_and_dtype(golden_noise):
    a = golden_noise.flow_noise(50)
    a.zero_()
    b = golden_noise.flow_noise(50)
    assert b.abs().sum() > 0
    half = golden_noise.flow_noise(50, "cpu", torch.bfloat16)
    assert half.dtype == torch.bfloat16 and torch.allclose(half.float(), b, atol=1e-2, rtol=1e-2)


def test_limits(golden_noise):
    with pytest.raises(TooLongError):
        golden_noise.flow_noise(15001)
    with pytest.raises(TooLongError):
        golden_noise.sine_noise(300 * 24000 + 1)
