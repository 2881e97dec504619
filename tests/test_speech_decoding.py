"""The per-request token loop: golden greedy decoding, length rules, stop ids, forced length,
silent-token trimming, per-request seeds.

Besides the golden checkpoint, the tests use a "scripted" CosyVoice3LM: real modules whose
weights are set so that the logits are a chosen vector at every step (attention and MLP
outputs zeroed, all embeddings equal, llm_decoder rows aligned with the constant hidden state).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from cosyvoice3.config import LLMConfig, Qwen2Config, load_config
from cosyvoice3.decoding.token_loop import SilenceTrimmer, SpeechTokenDecoder
from cosyvoice3.errors import BadInputError, EmptyTextError
from cosyvoice3.nn.llm import CosyVoice3LM, load_llm

GOLDEN = Path(__file__).resolve().parent / "golden"
EOP = 151646  # <|endofprompt|>
SPEECH_VOCAB = 6761


@pytest.fixture(scope="module")
def golden_lm():
    cfg = load_config(GOLDEN / "model")
    return load_llm(GOLDEN / "model" / "llm.pt", cfg.llm, cfg.qwen), cfg.llm


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN / "llm.npz"))


def scripted_lm(scores: torch.Tensor) -> CosyVoice3LM:
    """A real CosyVoice3LM whose logits equal `scores` (6761,) at every step."""
    qwen = Qwen2Config(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=16)
    torch.manual_seed(0)
    lm = CosyVoice3LM(LLMConfig(input_size=8, output_size=8), qwen).eval().requires_grad_(False)
    layer = lm.body.layers[0]
    layer.self_attn.o_proj.weight.zero_()
    layer.mlp.down_proj.weight.zero_()
    direction = torch.linspace(-1.0, 1.0, 8)
    lm.body.embed_tokens.weight.copy_(direction)
    lm.speech_embedding.weight.copy_(direction)
    hidden = lm.body.norm(direction)
    lm.llm_decoder.weight.copy_(scores[:, None] * hidden[None, :] / hidden.dot(hidden))
    return lm


def scores_with(**ids) -> torch.Tensor:
    scores = torch.zeros(SPEECH_VOCAB)
    for name, value in ids.items():
        scores[int(name.lstrip("_"))] = value
    return scores


def test_scripted_lm_gives_the_chosen_logits():
    scores = torch.randn(SPEECH_VOCAB)
    lm = scripted_lm(scores)
    with torch.inference_mode():
        x = lm.first_step_input([EOP], [3, 4], [])
        logits = lm.logits(lm.prefill(x, lm.new_cache(8)))
    torch.testing.assert_close(logits[0], scores, atol=1e-4, rtol=0)


def test_golden_greedy_decoding_official_rule(golden_lm, golden):
    lm, llm_cfg = golden_lm
    decoder = SpeechTokenDecoder(lm, golden["text"][0], golden["prompt_text"][0], golden["prompt_speech_token"][0],
                                 config=llm_cfg, greedy=True, min_len_rule="official", trace=True)
    assert (decoder.min_len, decoder.max_len) == (int(golden["min_len"]), int(golden["max_len"]))
    assert decoder.cache.max_len == golden["lm_input"].shape[1] + int(golden["max_len"])
    first = decoder.step()
    assert first == [int(golden["out_tokens"][0])]
    tokens = decoder.run()
    assert tokens == golden["out_tokens"].tolist()
    assert decoder.n_steps == int(golden["n_steps"]) and decoder.stop_reason == "stop_token"
    assert decoder.trace[-1].token == int(golden["final_step_argmax"])

    hidden = np.stack([t.hidden.numpy() for t in decoder.trace])
    np.testing.assert_allclose(hidden, golden["step_hidden"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(decoder.trace[0].logits.numpy(), golden["first_step_logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(decoder.trace[1].logits.numpy(), golden["step2_logits"], atol=1e-4, rtol=0)
    top_logp, top_ids = torch.stack([t.logits for t in decoder.trace]).log_softmax(-1).topk(10, dim=-1)
    np.testing.assert_array_equal(top_ids.numpy(), golden["step_top10_ids"])
    np.testing.assert_allclose(top_logp.numpy(), golden["step_top10_logp"], atol=1e-4, rtol=0)
    assert decoder.step() == [] and decoder.n_steps == int(golden["n_steps"])


def test_min_len_rules_differ_only_in_which_stop_ids_are_masked():
    lm = scripted_lm(scores_with(_6562=40.0))  # eos wins whenever it is allowed
    text = [EOP, 10, 11]  # n_text = 3 -> min_len 6
    official = SpeechTokenDecoder(lm, text, greedy=True, min_len_rule="official")
    assert official.run() == [] and official.stop_reason == "stop_token"
    for greedy in (True, False):
        fixed = SpeechTokenDecoder(lm, text, greedy=greedy, seed=1)
        tokens = fixed.run()
        assert len(tokens) == fixed.min_len == 6 and fixed.stop_reason == "stop_token"
        assert all(t < 6561 for t in tokens)


def test_max_len_bounds_a_model_that_never_stops():
    scores = torch.zeros(SPEECH_VOCAB)
    scores[6561:] = -40.0
    lm = scripted_lm(scores)
    decoder = SpeechTokenDecoder(lm, [EOP, 7], seed=3)  # n_text 2 -> max_len 40
    steps = 0
    while not decoder.finished:
        assert len(decoder.step()) <= 1
        steps += 1
        assert steps <= 40
    assert len(decoder.tokens) == decoder.max_len == 40 and decoder.stop_reason == "max_len"
    assert decoder.cache.max_len == decoder.prompt_len + 40


@pytest.mark.parametrize("forced", [0, 7, 25])
def test_forced_tokens_emit_exactly_n(forced):
    lm = scripted_lm(scores_with(_6562=40.0, _1=20.0))  # wants to stop; otherwise silent token 1
    decoder = SpeechTokenDecoder(lm, [EOP], greedy=True, forced_tokens=forced)  # max_len would be 20
    tokens = decoder.run()
    assert len(tokens) == forced and decoder.n_steps == forced
    assert decoder.stop_reason == "forced" and tokens == [1] * forced  # no silence trimming when forced


def test_silent_tokens_beyond_five_in_a_row_are_not_emitted():
    lm = scripted_lm(scores_with(_1=30.0))  # greedy: silent token 1 at every step
    decoder = SpeechTokenDecoder(lm, [EOP, 5], greedy=True)
    emitted_per_step = [decoder.step() for _ in range(8)]
    assert emitted_per_step == [[1]] * 5 + [[]] * 3
    decoder.run()
    assert decoder.tokens == [1] * 5 and decoder.generated == [1] * 40


def test_silence_trimmer_counts_only_consecutive_runs():
    trimmer = SilenceTrimmer()
    sequence = [1, 2, 28, 29, 55, 248, 494, 7, 2241, 2242, 2322, 2323, 1, 2, 3]
    kept = [t for t in sequence if trimmer.keep(t)]
    assert kept == [1, 2, 28, 29, 55, 7, 2241, 2242, 2322, 2323, 1, 3]


def test_same_seed_same_tokens_and_decoders_are_independent(golden_lm, golden):
    lm, llm_cfg = golden_lm
    args = (golden["text"][0], golden["prompt_text"][0], golden["prompt_speech_token"][0])

    def make(seed):
        return SpeechTokenDecoder(lm, *args, config=llm_cfg, seed=seed, forced_tokens=30)

    rng_before = torch.get_rng_state()
    alone_a, alone_b = make(11).run(), make(12).run()
    assert alone_a == make(11).run() and alone_a != alone_b
    a, b = make(11), make(12)
    while not (a.finished and b.finished):  # interleaved like the scheduler does
        a.step()
        torch.rand(100)  # draws from the global RNG do not disturb a request
        b.step()
    assert a.tokens == alone_a and b.tokens == alone_b
    torch.manual_seed(123)
    assert make(11).run() == alone_a
    torch.set_rng_state(rng_before)


def test_decoder_leaves_the_global_rng_alone(golden_lm, golden):
    lm, llm_cfg = golden_lm
    state = torch.get_rng_state()
    SpeechTokenDecoder(lm, golden["text"][0], golden["prompt_text"][0], config=llm_cfg, seed=5,
                       forced_tokens=5).run()
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_inputs_are_refused():
    lm = scripted_lm(torch.zeros(SPEECH_VOCAB))
    with pytest.raises(BadInputError, match="endofprompt"):
        SpeechTokenDecoder(lm, [10, 11])
    with pytest.raises(EmptyTextError):
        SpeechTokenDecoder(lm, [], [EOP])
    with pytest.raises(ValueError):
        SpeechTokenDecoder(lm, [EOP], min_len_rule="sometimes")
