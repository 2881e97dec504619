"""The recogniser's network, loader and front end: released key layout, strict loading, LFR, CMVN,
the queries, masking and recognition on the tiny random recogniser."""

import math
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from asr import config as asr_config
from asr.decoding import Tokenizer
from asr.encoder import SenseVoiceSmall, sinusoid_positions
from asr.features import CMVN, compute_features, fbank, stack_frames
from asr.prompt import transcribe_prompt
from asr.recognizer import MAX_SECONDS, Recognizer
from cosyvoice3.errors import CheckpointMismatchError, ModelLoadError, SilentPromptError, TooLongError
from cosyvoice3.features.prepare import validate_prompt_audio
from tests.conftest import GOLDEN

# Facts of the released model.pt (FunAudioLLM/SenseVoiceSmall).
RELEASED_KEYS = 917
RELEASED_ELEMENTS = 233_999_167


def speech_16k(seconds=3.0):
    audio, rate = sf.read(GOLDEN / "prompt_24k.wav", dtype="float32")
    from cosyvoice3.frontend.audio import resample

    return resample(audio[: int(seconds * rate)], rate, 16000, method="reference")


def test_the_full_size_network_has_the_released_keys_and_shapes():
    with torch.device("meta"):
        model = SenseVoiceSmall(asr_config.SenseVoiceConfig(), vocab_size=25055)
    state = model.state_dict()
    assert len(state) == RELEASED_KEYS
    assert sum(v.numel() for v in state.values()) == RELEASED_ELEMENTS
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["embed.weight"] == (16, 560)
    assert shapes["encoder.encoders0.0.self_attn.linear_q_k_v.weight"] == (1536, 560)
    assert shapes["encoder.encoders0.0.norm1.weight"] == (560,)
    assert shapes["encoder.encoders.48.norm1.weight"] == (512,)
    assert shapes["encoder.tp_encoders.19.self_attn.fsmn_block.weight"] == (512, 1, 11)
    assert shapes["ctc.ctc_lo.weight"] == (25055, 512)
    assert "encoder.encoders.49.norm1.weight" not in shapes and "encoder.tp_encoders.20.norm1.weight" not in shapes


def test_the_demo_recogniser_loads_strictly_and_recognises(demo_asr_dir):
    recognizer = Recognizer.from_pretrained(demo_asr_dir)
    assert recognizer.demo and recognizer.info()["vocab_size"] == recognizer.tokenizer.vocab_size
    wav = speech_16k()
    first = recognizer.recognize(wav)
    again = recognizer.recognize(wav)
    assert first == again.__class__(**{**again.__dict__, "elapsed_s": first.elapsed_s})  # deterministic
    assert first.audio_s == pytest.approx(3.0, abs=0.01) and first.elapsed_s > 0
    assert "<|" not in first.text and first.raw  # tags parsed out of the raw text
    assert first.language in ("", "zh", "en", "yue", "ja", "ko", "nospeech")


def test_a_checkpoint_with_a_missing_or_misshaped_tensor_is_refused(demo_asr_dir, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(demo_asr_dir, broken)
    state = torch.load(broken / "model.pt", weights_only=True)
    del state["encoder.tp_norm.bias"]
    state["ctc.ctc_lo.bias"] = torch.zeros(3)
    torch.save(state, broken / "model.pt")
    with pytest.raises(CheckpointMismatchError) as caught:
        Recognizer.from_pretrained(broken)
    assert "encoder.tp_norm.bias" in caught.value.missing
    assert any("ctc.ctc_lo.bias" in e for e in caught.value.shape_errors)


def test_a_pickled_object_in_the_checkpoint_is_never_unpickled(demo_asr_dir, tmp_path):
    hostile = tmp_path / "hostile"
    shutil.copytree(demo_asr_dir, hostile)
    torch.save({"encoder.tp_norm.bias": Exception("not a tensor")}, hostile / "model.pt")
    with pytest.raises(ModelLoadError, match="cannot read checkpoint"):
        Recognizer.from_pretrained(hostile)


def test_a_config_of_another_model_is_refused(demo_asr_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(demo_asr_dir, other)
    text = (other / "config.yaml").read_text().replace("SenseVoiceSmall", "Paraformer")
    (other / "config.yaml").write_text(text)
    with pytest.raises(ModelLoadError, match="expected SenseVoiceSmall"):
        Recognizer.from_pretrained(other)


def test_the_config_round_trips_and_reads_the_released_spelling():
    cfg = asr_config.SenseVoiceConfig(num_blocks=3, tp_blocks=2, sanm_shift=1)
    text = asr_config.render_config(cfg, "test")
    assert "sanm_shfit: 1" in text
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "config.yaml").write_text(text)
        assert asr_config.load_config(d) == cfg


def test_cmvn_reads_the_kaldi_nnet_format_and_normalises(tmp_path):
    shift, scale = torch.tensor([-1.0, -2.5, 3.0]), torch.tensor([0.5, 2.0, 1.0])
    CMVN(shift, scale).write(tmp_path / "am.mvn")
    text = (tmp_path / "am.mvn").read_text()
    assert text.startswith("<Nnet>") and "<AddShift> 3 3" in text and "<Rescale> 3 3" in text
    cmvn = CMVN.from_file(tmp_path / "am.mvn")
    torch.testing.assert_close(cmvn(torch.ones(2, 3)), torch.tensor([[0.0, -3.0, 4.0]] * 2))
    (tmp_path / "bad.mvn").write_text("<Nnet>\n<AddShift> 3 3\n<LearnRateCoef> 0 [ 1 2 x ]\n")
    with pytest.raises(ModelLoadError, match="AddShift"):
        CMVN.from_file(tmp_path / "bad.mvn")


def test_lfr_stacks_seven_frames_every_six_with_edge_frames_repeated():
    feats = torch.arange(20.0)[:, None].repeat(1, 2)                       # frame i holds (i, i)
    out = stack_frames(feats, 7, 6)
    assert out.shape == (math.ceil(20 / 6), 14)
    frames = out.reshape(4, 7, 2)[:, :, 0]
    assert frames[0].tolist() == [0, 0, 0, 0, 1, 2, 3]                      # 3 copies of frame 0 on the left
    assert frames[1].tolist() == [3, 4, 5, 6, 7, 8, 9]
    assert frames[3].tolist() == [15, 16, 17, 18, 19, 19, 19]               # the last frame repeated


def test_fbank_uses_a_hamming_window_at_int16_scale():
    cfg = asr_config.SenseVoiceConfig()
    wav = speech_16k(1.0)
    feats = fbank(wav, cfg)
    assert feats.shape == (1 + (len(wav) - 400) // 160, 80)
    from cosyvoice3.features.mel import kaldi_fbank

    float_scale = kaldi_fbank(wav, window="hamming")
    loud = float_scale > -10  # away from the floor, scaling by 2^15 adds ln(2^30) to every bin
    torch.testing.assert_close((feats - float_scale)[loud], torch.full_like(feats[loud], 30 * math.log(2)),
                               atol=1e-3, rtol=0)
    assert not torch.allclose(float_scale, kaldi_fbank(wav, window="povey"))
    with pytest.raises(ValueError, match="window"):
        kaldi_fbank(wav, window="blackman")


def test_features_have_the_lfr_width_and_length(demo_asr_dir):
    recognizer = Recognizer.from_pretrained(demo_asr_dir)
    wav = speech_16k(2.0)
    feats = compute_features(wav, recognizer.config, recognizer.cmvn)
    assert feats.shape == (math.ceil((1 + (len(wav) - 400) // 160) / 6), 560)


def test_position_encoding_starts_at_one_over_the_input_width():
    pe = sinusoid_positions(3, 8, "cpu", torch.float32)[0]
    rates = torch.exp(torch.arange(4) * -(math.log(10000.0) / 3))
    torch.testing.assert_close(pe[0], torch.cat([torch.sin(rates), torch.cos(rates)]))
    torch.testing.assert_close(pe[2, :4], torch.sin(3 * rates))


def test_a_padded_batch_gives_each_utterance_its_own_logits(demo_asr_dir):
    recognizer = Recognizer.from_pretrained(demo_asr_dir)
    model, cfg, cmvn = recognizer.model, recognizer.config, recognizer.cmvn
    long = compute_features(speech_16k(3.0), cfg, cmvn)
    short = compute_features(speech_16k(1.5), cfg, cmvn)
    batch = torch.zeros(2, long.shape[0], long.shape[1])
    batch[0], batch[1, : short.shape[0]] = long, short
    queries = torch.tensor([[0, 1, 2, 14]] * 2)
    with torch.inference_mode():
        together = model(batch, queries, torch.tensor([long.shape[0], short.shape[0]]))
        alone = model(short[None], queries[:1])
    torch.testing.assert_close(together[1, : 4 + short.shape[0]], alone[0], atol=1e-4, rtol=1e-4)


def test_too_long_audio_is_refused_before_any_work(demo_asr_dir):
    recognizer = Recognizer.from_pretrained(demo_asr_dir)
    with pytest.raises(TooLongError, match="at most"):
        recognizer.recognize(np.zeros(int((MAX_SECONDS + 1) * 16000), np.float32))


def test_a_tokenizer_that_does_not_fit_the_checkpoint_is_a_load_error(demo_asr_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(demo_asr_dir, other)
    state = torch.load(other / "model.pt", weights_only=True)
    vocab = Tokenizer.from_file(other / asr_config.BPE_NAME).vocab_size
    for key in ("ctc.ctc_lo.weight", "ctc.ctc_lo.bias"):
        state[key] = state[key][: vocab - 5]
    torch.save(state, other / "model.pt")
    with pytest.raises(CheckpointMismatchError, match="ctc.ctc_lo"):
        Recognizer.from_pretrained(other)


def test_a_prompt_gets_the_synthesis_checks_then_a_transcript(demo_asr_dir):
    recognizer = Recognizer.from_pretrained(demo_asr_dir)
    audio, rate = sf.read(GOLDEN / "prompt_24k.wav", dtype="float32")
    result = transcribe_prompt(recognizer, audio[: 3 * rate], rate)
    assert result.raw and result.audio_s > 1.0
    silent = np.zeros(3 * rate, np.float32)
    with pytest.raises(SilentPromptError) as from_asr:
        transcribe_prompt(recognizer, silent, rate)
    with pytest.raises(SilentPromptError) as from_synthesis:
        validate_prompt_audio(silent, rate)
    assert str(from_asr.value) == str(from_synthesis.value)
