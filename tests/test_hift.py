"""CausalHiFT: golden F0/source/speech, streaming (finalize=False) rules, causality, loading, dtypes."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cosyvoice3.checkpoint import read_state_dict, unfold_weight_norm
from cosyvoice3.config import load_config
from cosyvoice3.errors import BadInputError, CheckpointMismatchError
from cosyvoice3.nn.hift import CausalHiFT, load_hift
from cosyvoice3.nn.noise import FixedNoise

GOLDEN = Path(__file__).resolve().parent / "golden"
HIFT_PT = GOLDEN / "model" / "hift.pt"


@pytest.fixture(scope="module")
def config():
    return load_config(GOLDEN / "model")


@pytest.fixture(scope="module")
def noise(config):
    return FixedNoise(config)


@pytest.fixture(scope="module")
def hift(config, noise):
    return load_hift(HIFT_PT, config.hift, noise=noise)


@pytest.fixture(scope="module")
def golden():
    return np.load(GOLDEN / "hift.npz")


def test_weight_norm_layer_names_match_the_file(hift):
    stored = {k.split(".parametrizations.")[0] for k in read_state_dict(HIFT_PT) if ".parametrizations." in k}
    names = hift.weight_norm_layer_names()
    assert len(names) == len(set(names)) and set(names) == stored
    assert not any(n.startswith("source_downs") for n in names)


def test_golden(hift, golden):
    mel = torch.from_numpy(golden["mel"])
    with torch.no_grad():
        f0 = hift.predict_f0(mel)
    np.testing.assert_allclose(f0.numpy(), golden["f0"], rtol=1e-4, atol=1e-3)
    assert (golden["f0"] < 10).any() and (golden["f0"] > 10).any()  # voiced and unvoiced frames
    speech, source = hift.inference(mel, finalize=True)
    assert speech.shape == golden["speech"].shape and source.shape == golden["source"].shape
    assert speech.dtype == source.dtype == torch.float32
    np.testing.assert_allclose(source.numpy(), golden["source"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(speech.numpy(), golden["speech"], rtol=0, atol=1e-3)


def test_golden_finalize_false(hift, golden):
    speech, source = hift.inference(torch.from_numpy(golden["mel"]), finalize=False)
    assert speech.shape == golden["speech_finalize_false"].shape  # 480 (T - 8)
    assert source.shape == golden["source_finalize_false"].shape  # 480 (T - 3)
    np.testing.assert_allclose(source.numpy(), golden["source_finalize_false"], rtol=0, atol=1e-3)
    np.testing.assert_allclose(speech.numpy(), golden["speech_finalize_false"], rtol=0, atol=1e-3)


def test_golden_e2e_vocoder(hift):
    e2e = np.load(GOLDEN / "e2e.npz")
    mel = torch.from_numpy(e2e["mel"])
    with torch.no_grad():
        np.testing.assert_allclose(hift.predict_f0(mel).numpy(), e2e["f0"], rtol=1e-4, atol=1e-3)
    speech, _ = hift.inference(mel, finalize=True)
    np.testing.assert_allclose(speech.numpy(), e2e["tts_speech"], rtol=0, atol=1e-3)


def test_causal_prefixes_reproduce_earlier_samples(hift, golden):
    mel = torch.from_numpy(golden["mel"])
    full, _ = hift.inference(mel, finalize=True)
    previous = None
    for n_frames in (9, 17, 30, 44, 52):
        part, source = hift.inference(mel[:, :, :n_frames], finalize=False)
        assert part.shape == (1, 480 * (n_frames - 8)) and source.shape == (1, 1, 480 * (n_frames - 3))
        torch.testing.assert_close(part, full[:, :part.shape[1]], rtol=0, atol=1e-5)
        if previous is not None:
            torch.testing.assert_close(part[:, :previous.shape[1]], previous, rtol=0, atol=1e-5)
        previous = part
    assert hift.inference(mel[:, :, :8], finalize=False)[0].shape == (1, 0)
    with pytest.raises(BadInputError):
        hift.inference(mel[:, :, :7], finalize=False)
    last, _ = hift.inference(mel[:, :, :30], finalize=True)  # a final call on a prefix: 480 T samples
    assert last.shape == (1, 480 * 30)
    torch.testing.assert_close(last[:, :480 * 22], full[:, :480 * 22], rtol=0, atol=1e-5)


def test_reload_official_format_and_generator_prefix(config, hift, noise, golden, tmp_path):
    # The demo writer's path: our state dict -> official weight-norm pairs (+ GAN-wrapper prefix) -> load.
    state = unfold_weight_norm(hift.state_dict(), hift.weight_norm_layer_names())
    path = tmp_path / "hift.pt"
    torch.save({"generator." + k: v for k, v in state.items()}, path)
    reloaded = load_hift(path, config.hift, noise=noise)
    mel = torch.from_numpy(golden["mel"])
    torch.testing.assert_close(reloaded.inference(mel)[0], hift.inference(mel)[0], rtol=0, atol=1e-5)


def test_strict_loading_reports_mismatch(config, tmp_path):
    state = read_state_dict(HIFT_PT)
    state.pop("conv_post.parametrizations.weight.original1")
    path = tmp_path / "hift.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError) as err:
        load_hift(path, config.hift)
    assert "conv_post" in str(err.value)


def test_f0_predictor_stays_float64(config, noise, hift, golden):
    half = load_hift(HIFT_PT, config.hift, dtype=torch.bfloat16, noise=noise)
    assert half.conv_pre.weight.dtype == torch.bfloat16
    assert half.f0_predictor.classifier.weight.dtype == torch.float64
    mel = torch.from_numpy(golden["mel"])
    with torch.no_grad():
        assert torch.equal(half.predict_f0(mel), hift.predict_f0(mel))
    speech, _ = half.inference(mel)
    assert speech.dtype == torch.float32 and torch.isfinite(speech).all()
    err = np.abs(speech.numpy() - golden["speech"]).max() / np.abs(golden["speech"]).max()
    assert err < 0.1, err


def test_default_noise_matches_shared_noise(config, noise, golden):
    # Built without a noise object, the vocoder makes the same fixed noise for the released flow sizes.
    own = CausalHiFT(config.hift).noise
    assert torch.equal(own.sine_noise(4800), noise.sine_noise(4800))




def test_batched_parts_equal_their_row_by_row_twins(hift, golden):
    # rows of different lengths and windows: the source, its spectrum and the iSTFT of each row in
    # a padded batch equal that row computed alone
    mel = torch.from_numpy(golden["mel"])
    lengths, starts = [mel.shape[2], 17, mel.shape[2] - 5], [3, 0, 11]
    padded = torch.nn.utils.rnn.pad_sequence([mel[0, :, :n].T for n in lengths], batch_first=True).transpose(1, 2)
    with torch.inference_mode():
        f0 = hift.predict_f0(padded)
        for i, n in enumerate(lengths):
            f0[i, n:] = 0
        source = hift.m_source.windows(f0, lengths, starts, hift.noise)
        hop = hift.m_source.hop
        samples = [(n - w) * hop for n, w in zip(lengths, starts)]
        spec = hift.source_spectra(source, samples)
        for i, (n, w) in enumerate(zip(lengths, starts)):
            alone = hift.m_source(f0[i:i + 1, :n], hift.noise, start=w)
            torch.testing.assert_close(source[i:i + 1, :, :samples[i]], alone, rtol=0, atol=1e-6)
            assert not source[i, :, samples[i]:].any()
            frames = samples[i] // hift.hop_len + 1
            torch.testing.assert_close(spec[i:i + 1, :, :frames], hift.source_spectrum(alone), rtol=1e-5, atol=1e-5)
            assert not spec[i, :, frames:].any()
        logits = torch.randn(3, hift.n_fft + 2, 400, generator=torch.Generator().manual_seed(3)) * 0.5
        frames, finalize = [400, 121, 241], [True, False, True]
        waves = hift.istft_rows(logits, frames, finalize)
        for i, (f, fin) in enumerate(zip(frames, finalize)):
            torch.testing.assert_close(waves[i], hift.istft(logits[i:i + 1, :, :f], fin)[0], rtol=1e-5, atol=1e-6)


def test_vocode_of_a_batch_equals_each_row_alone(hift, golden):
    mel = torch.from_numpy(golden["mel"])[0]
    frame = hift.upsample_factor * hift.hop_len
    mels = [mel, mel[:, :20], mel[:, :mel.shape[1] - 3], mel[:, :9]]
    finalize = [False, True, False, False]
    starts = [frame * 12, 0, frame * 40, 0]
    with torch.inference_mode():
        together, sources = hift.vocode(mels, finalize, starts=starts)
        for m, fin, start, wav, src in zip(mels, finalize, starts, together, sources):
            alone, alone_src = hift.vocode([m], [fin], starts=[start])
            assert wav.shape == alone[0].shape
            torch.testing.assert_close(wav, alone[0], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(src, alone_src[0], rtol=1e-5, atol=1e-6)
