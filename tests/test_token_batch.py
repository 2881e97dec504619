"""The token batch: golden greedy decoding, length rules, stop ids, forced length, silent-token
trimming, per-segment random streams; segments joining and leaving a batch mid-way; a segment
decoded alone and in a batch with others gives the same tokens; several steps read back once
give the tokens of single steps; a join that continues a stored prompt prefix gives the logits
and tokens of a full prefill.

Besides the golden checkpoint, the tests use a "scripted" CosyVoice3LM: real modules whose
weights are set so that the logits are a chosen vector at every step (attention and MLP
outputs zeroed, all embeddings equal, llm_decoder rows aligned with the constant hidden state).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from cosyvoice3.config import LLMConfig, Qwen2Config, load_config
from cosyvoice3.decoding.prefix_store import PrefixStore
from cosyvoice3.decoding.token_batch import SegmentSpec, SilenceTrimmer, TokenBatch, TorchDecodeSteps, decode_alone
from cosyvoice3.errors import BadInputError, EmptyTextError, TooLongError
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


def spec(text_ids, prompt_ids=(), speech=(), **kw) -> SegmentSpec:
    return SegmentSpec(list(map(int, prompt_ids)), list(map(int, text_ids)), list(map(int, speech)), **kw)


def test_scripted_lm_gives_the_chosen_logits():
    scores = torch.randn(SPEECH_VOCAB)
    lm = scripted_lm(scores)
    with torch.inference_mode():
        x = lm.first_step_input([EOP], [3, 4], [])
        logits = lm.logits(lm.prefill(x, lm.new_cache(8)))
    torch.testing.assert_close(logits[0], scores, atol=1e-4, rtol=0)


def test_golden_greedy_decoding_official_rule(golden_lm, golden):
    lm, llm_cfg = golden_lm
    s = spec(golden["text"][0], golden["prompt_text"][0], golden["prompt_speech_token"][0], greedy=True,
             min_len_rule="official")
    rules, trace = decode_alone(lm, llm_cfg, s, trace=True)
    assert (rules.min_len, rules.max_len) == (int(golden["min_len"]), int(golden["max_len"]))
    assert rules.tokens == golden["out_tokens"].tolist()
    assert len(trace) == int(golden["n_steps"]) and rules.stop_reason == "stop_token"
    assert trace[-1].token == int(golden["final_step_argmax"])

    hidden = np.stack([t.hidden.numpy() for t in trace])
    np.testing.assert_allclose(hidden, golden["step_hidden"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(trace[0].logits.numpy(), golden["first_step_logits"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(trace[1].logits.numpy(), golden["step2_logits"], atol=1e-4, rtol=0)
    top_logp, top_ids = torch.stack([t.logits for t in trace]).log_softmax(-1).topk(10, dim=-1)
    np.testing.assert_array_equal(top_ids.numpy(), golden["step_top10_ids"])
    np.testing.assert_allclose(top_logp.numpy(), golden["step_top10_logp"], atol=1e-4, rtol=0)


def test_golden_greedy_in_a_batch_with_others(golden_lm, golden):
    """The golden segment joins a batch in which other segments already decode, and gives the
    golden tokens; the others leave before it and after it."""
    lm, llm_cfg = golden_lm
    golden_spec = spec(golden["text"][0], golden["prompt_text"][0], golden["prompt_speech_token"][0], greedy=True,
                       min_len_rule="official")
    batch = TokenBatch(lm, llm_cfg, rows=4, max_len=256, initial_rows=1)
    batch.join([("short", spec([EOP, 5, 6], key=1, forced_tokens=4)), ("long", spec([EOP, 9], key=2, forced_tokens=60))])
    batch.step()
    tokens = []
    for ev in batch.join([("golden", golden_spec)]):
        tokens += ev.emitted if ev.owner == "golden" else []
    while "golden" in batch:
        for ev in batch.step():
            if ev.owner == "golden":
                tokens += ev.emitted
    assert tokens == golden["out_tokens"].tolist()
    assert "short" not in batch and "long" in batch  # left at its own end; the other still decodes


def test_min_len_rules_differ_only_in_which_stop_ids_are_masked():
    lm = scripted_lm(scores_with(_6562=40.0))  # eos wins whenever it is allowed
    text = [EOP, 10, 11]  # n_text = 3 -> min_len 6
    official, _ = decode_alone(lm, LLMConfig(), spec(text, greedy=True, min_len_rule="official"))
    assert official.tokens == [] and official.stop_reason == "stop_token"
    for greedy in (True, False):
        fixed, _ = decode_alone(lm, LLMConfig(), spec(text, greedy=greedy, key=1))
        assert len(fixed.tokens) == fixed.min_len == 6 and fixed.stop_reason == "stop_token"
        assert all(t < 6561 for t in fixed.tokens)


def test_max_len_bounds_a_model_that_never_stops():
    scores = torch.zeros(SPEECH_VOCAB)
    scores[6561:] = -40.0
    lm = scripted_lm(scores)
    batch = TokenBatch(lm, LLMConfig(), rows=1, max_len=512)
    events = batch.join([("a", spec([EOP, 7], key=3))])  # n_text 2 -> max_len 40
    steps = 1
    while "a" in batch:
        events = batch.step()
        assert len(events[0].emitted) <= 1
        steps += 1
        assert steps <= 40
    rules = events[0].rules
    assert len(rules.tokens) == rules.max_len == 40 and rules.stop_reason == "max_len"


def test_a_row_too_short_for_max_len_caps_the_segment_instead_of_failing():
    scores = torch.zeros(SPEECH_VOCAB)
    scores[6561:] = -40.0
    batch = TokenBatch(scripted_lm(scores), LLMConfig(), rows=1, max_len=30)
    rules = batch.join([("a", spec([EOP, 7, 8, 9]))])[0].rules  # max_len 80 > the 30 - 6 positions left
    while "a" in batch:
        batch.step()
    assert rules.max_len == 30 - TokenBatch.prompt_length(spec([EOP, 7, 8, 9])) and len(rules.tokens) == rules.max_len
    with pytest.raises(TooLongError):
        batch.check(spec([EOP] + list(range(40))))  # the prompt alone does not fit


@pytest.mark.parametrize("forced", [0, 7, 25])
def test_forced_tokens_emit_exactly_n(forced):
    lm = scripted_lm(scores_with(_6562=40.0, _1=20.0))  # wants to stop; otherwise silent token 1
    rules, _ = decode_alone(lm, LLMConfig(), spec([EOP], greedy=True, forced_tokens=forced))  # max_len would be 20
    assert len(rules.tokens) == forced and len(rules.generated) == forced
    assert rules.stop_reason == "forced" and rules.tokens == [1] * forced  # no silence trimming when forced


def test_silent_tokens_beyond_five_in_a_row_are_not_emitted():
    lm = scripted_lm(scores_with(_1=30.0))  # greedy: silent token 1 at every step
    batch = TokenBatch(lm, LLMConfig(), rows=1, max_len=256)
    emitted = [batch.join([("a", spec([EOP, 5], greedy=True))])[0].emitted]
    emitted += [batch.step()[0].emitted for _ in range(7)]
    assert emitted == [[1]] * 5 + [[]] * 3
    while "a" in batch:
        rules = batch.step()[0].rules
    assert rules.tokens == [1] * 5 and rules.generated == [1] * 40


def test_silence_trimmer_counts_only_consecutive_runs():
    trimmer = SilenceTrimmer()
    sequence = [1, 2, 28, 29, 55, 248, 494, 7, 2241, 2242, 2322, 2323, 1, 2, 3]
    kept = [t for t in sequence if trimmer.keep(t)]
    assert kept == [1, 2, 28, 29, 55, 7, 2241, 2242, 2322, 2323, 1, 3]


def sampled(golden, key, forced=30):
    return spec(golden["text"][0], golden["prompt_text"][0], golden["prompt_speech_token"][0], key=key,
                forced_tokens=forced)


def test_same_key_same_tokens_other_key_other_tokens(golden_lm, golden):
    lm, llm_cfg = golden_lm
    a = decode_alone(lm, llm_cfg, sampled(golden, 11))[0].tokens
    assert a == decode_alone(lm, llm_cfg, sampled(golden, 11))[0].tokens
    assert a != decode_alone(lm, llm_cfg, sampled(golden, 12))[0].tokens


def test_a_segment_alone_and_batched_with_seven_others_gives_identical_tokens(golden_lm, golden):
    """Seed invariance: the batch is joined at different steps, rows leave mid-way (the rows
    behind them move), and every segment's tokens equal those it gets alone (FP32, CPU)."""
    lm, llm_cfg = golden_lm
    specs = {f"s{i}": sampled(golden, key=100 + i, forced=12 + 5 * i) for i in range(8)}
    alone = {name: decode_alone(lm, llm_cfg, s)[0].tokens for name, s in specs.items()}
    batch = TokenBatch(lm, llm_cfg, rows=8, max_len=256, initial_rows=2)
    got = {name: [] for name in specs}
    arrivals = [["s0", "s1", "s2"], [], ["s3"], ["s4", "s5", "s6", "s7"]]
    step = 0
    while step < len(arrivals) or batch.active:
        events = batch.join([(n, specs[n]) for n in arrivals[step]]) if step < len(arrivals) else []
        events += batch.step() if batch.active else []
        for ev in events:
            got[ev.owner] += ev.emitted
        step += 1
    assert got == alone
    assert batch.capacity == 8  # grew from 2 as segments joined


def test_a_cancelled_segment_leaves_at_once_and_the_others_are_unaffected(golden_lm, golden):
    lm, llm_cfg = golden_lm
    specs = {n: sampled(golden, key=k, forced=25) for n, k in (("a", 1), ("b", 2), ("c", 3))}
    alone = {n: decode_alone(lm, llm_cfg, s)[0].tokens for n, s in specs.items()}
    batch = TokenBatch(lm, llm_cfg, rows=3, max_len=256)
    got = {n: [] for n in specs}
    for ev in batch.join(list(specs.items())):
        got[ev.owner] += ev.emitted
    for _ in range(5):
        for ev in batch.step():
            got[ev.owner] += ev.emitted
    batch.leave("a")  # row 0 is freed; row 2 ("c") moves into it
    assert batch.active == 2 and "a" not in batch and batch.owners == ["c", "b"]
    while batch.active:
        for ev in batch.step():
            got[ev.owner] += ev.emitted
    assert got["b"] == alone["b"] and got["c"] == alone["c"] and got["a"] == alone["a"][:6]


def test_decoding_leaves_the_global_rng_alone(golden_lm, golden):
    lm, llm_cfg = golden_lm
    state = torch.get_rng_state()
    decode_alone(lm, llm_cfg, sampled(golden, 5, forced=5))
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_inputs_are_refused():
    lm = scripted_lm(torch.zeros(SPEECH_VOCAB))
    batch = TokenBatch(lm, LLMConfig(), rows=1, max_len=64)
    with pytest.raises(BadInputError, match="endofprompt"):
        batch.join([("a", spec([10, 11]))])
    with pytest.raises(EmptyTextError):
        batch.join([("a", spec([], [EOP]))])
    with pytest.raises(ValueError):
        batch.join([("a", spec([EOP], min_len_rule="sometimes"))])
    assert batch.active == 0


class CountingSteps(TorchDecodeSteps):
    """The eager backend, counting its decode calls; the call numbered `fail_at` runs out of memory."""

    def __init__(self, lm, fail_at: int | None = None):
        super().__init__(lm)
        self.calls, self.fail_at = 0, fail_at

    def decode(self, *args):
        self.calls += 1
        if self.calls == self.fail_at:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return super().decode(*args)


def test_several_steps_read_back_once_give_the_tokens_of_single_steps(golden_lm, golden):
    """`step(4)`: four steps go to the backend before their tokens are read; segments that end
    within them (forced lengths, a natural stop, max_len) drop the steps after their end and
    leave; segments join between calls. Every segment's tokens equal those it gets alone."""
    lm, llm_cfg = golden_lm
    specs = {f"s{i}": sampled(golden, key=200 + i, forced=3 + 7 * i) for i in range(6)}
    specs["free"] = spec(golden["text"][0], golden["prompt_text"][0], golden["prompt_speech_token"][0], key=9)
    alone = {name: decode_alone(lm, llm_cfg, s)[0].tokens for name, s in specs.items()}

    steps = CountingSteps(lm)
    batch = TokenBatch(lm, llm_cfg, rows=8, max_len=512, steps=steps, initial_rows=2)  # room for "free"'s max_len
    got = {name: [] for name in specs}
    arrivals = [["s0", "s1", "free"], [], ["s2", "s3"], [], [], ["s4", "s5"]]
    rounds = 0
    while rounds < len(arrivals) or batch.active:
        events = batch.join([(n, specs[n]) for n in arrivals[rounds]]) if rounds < len(arrivals) else []
        events += batch.step(4) if batch.active else []
        for ev in events:
            got[ev.owner] += ev.emitted
        rounds += 1
    assert got == alone
    assert steps.calls == batch.steps_run == 4 * rounds  # one read back per round


def test_a_step_that_fails_keeps_the_steps_before_it(golden_lm, golden):
    """Out of memory at the third of four steps: the two before it are returned, the failed one
    changed nothing, and the next call runs it: the tokens equal an undisturbed run."""
    lm, llm_cfg = golden_lm
    specs = {n: sampled(golden, key=k, forced=20) for n, k in (("a", 31), ("b", 32))}
    alone = {n: decode_alone(lm, llm_cfg, s)[0].tokens for n, s in specs.items()}

    batch = TokenBatch(lm, llm_cfg, rows=2, max_len=256, steps=CountingSteps(lm, fail_at=7))  # 3rd step, 2nd call
    got = {n: [] for n in specs}
    for ev in batch.join(list(specs.items())):
        got[ev.owner] += ev.emitted
    sizes = []
    while batch.active:
        events = batch.step(4)
        sizes.append(len(events[0].emitted))
        for ev in events:
            got[ev.owner] += ev.emitted
    assert sizes[:3] == [4, 2, 4] and got == alone
    batch.join(list(specs.items()))
    batch.steps.calls = 6
    with pytest.raises(torch.OutOfMemoryError):  # a first step that fails raises
        batch.step(4)
    assert batch.steps_run == 4 + 2 + 4 + 4 + 4 + 4  # the join chose the first of 20; failed steps count nothing


# ------------------------------------------------------------------ prompt prefixes (prefix_store)

PREFIX_ATOL = 1e-5


def segment(golden, key, text=None, prompt=None, forced=None, speech=True) -> SegmentSpec:
    return SegmentSpec([int(i) for i in (golden["prompt_text"][0] if prompt is None else prompt)],
                       [int(i) for i in (golden["text"][0] if text is None else text)],
                       [int(i) for i in golden["prompt_speech_token"][0]] if speech else [], key=key,
                       forced_tokens=forced)


def test_a_prefill_after_a_prefix_equals_the_full_prefill(golden_lm, golden):
    lm, _ = golden_lm
    s = segment(golden, 0)
    with torch.inference_mode():
        x = lm.first_step_input(s.prompt_ids, s.text_ids, s.speech_tokens)  # (1, L, D)
        full_cache, part_cache = lm.new_cache(x.shape[1] + 4), lm.new_cache(x.shape[1] + 4)
        full = lm.prefill(x, full_cache)
        n = 1 + len(s.prompt_ids)
        lm.prefill(x[:, :n], part_cache)  # the prefix alone
        rest = lm.prefill(x[:, n:], part_cache, start=torch.tensor([n]))
    torch.testing.assert_close(rest, full, atol=PREFIX_ATOL, rtol=0)
    torch.testing.assert_close(part_cache.k[..., :x.shape[1], :], full_cache.k[..., :x.shape[1], :], atol=PREFIX_ATOL, rtol=0)
    torch.testing.assert_close(part_cache.v[..., :x.shape[1], :], full_cache.v[..., :x.shape[1], :], atol=PREFIX_ATOL, rtol=0)
    torch.testing.assert_close(lm.logprobs(rest), lm.logprobs(full), atol=PREFIX_ATOL, rtol=0)


def run_arrivals(batch: TokenBatch, arrivals: list[list[tuple[str, SegmentSpec]]]) -> dict[str, list[int]]:
    """Join each list of arrivals at its step; decode to the end. Returns every segment's tokens."""
    got: dict[str, list[int]] = {}
    step = 0
    while step < len(arrivals) or batch.active:
        if step < len(arrivals) and arrivals[step]:
            for name, _ in arrivals[step]:
                got[name] = []
            events = batch.join(arrivals[step])
        else:
            events = batch.step()
        for ev in events:
            got[ev.owner] += ev.emitted
        step += 1
    return got


def test_segments_that_find_their_prefix_decode_the_same_tokens(golden_lm, golden):
    """Voice A's first segment stores its prefix; later ones (another text, joining alone and
    together with a new voice's and with each other, the rows of different lengths) find it.
    Every segment's tokens equal those of a batch that keeps no prefix."""
    lm, cfg = golden_lm
    other_prompt = [int(i) for i in golden["prompt_text"][0][:-6]] + [int(golden["prompt_text"][0][-1])]
    texts = [golden["text"][0], golden["text"][0][:5], golden["text"][0][3:]]
    arrivals = [[("a0", segment(golden, 1, forced=20))], [],
                [("a1", segment(golden, 2, text=texts[1], forced=9)), ("b0", segment(golden, 3, prompt=other_prompt))],
                [], [],
                [("a2", segment(golden, 4, text=texts[2], speech=False)), ("b1", segment(golden, 5, prompt=other_prompt,
                                                                                          forced=15)),
                 ("a3", segment(golden, 6, forced=3))]]
    plain = run_arrivals(TokenBatch(lm, cfg, rows=8, max_len=256, initial_rows=2), arrivals)
    store = PrefixStore(1 << 20)
    kept = run_arrivals(TokenBatch(lm, cfg, rows=8, max_len=256, initial_rows=2, prefixes=store), arrivals)
    assert kept == plain and all(kept.values())
    assert (store.hits, store.misses, len(store)) == (4, 2, 2)  # a0 and b0 miss; a1 a2 b1 a3 hit


def test_the_first_token_after_a_stored_prefix_has_the_full_prefills_logits(golden_lm, golden):
    lm, cfg = golden_lm
    s = segment(golden, 7)
    plain = TokenBatch(lm, cfg, rows=2, max_len=256, trace=True)
    plain.join([("x", s)])
    store = PrefixStore(1 << 20)
    cached = TokenBatch(lm, cfg, rows=2, max_len=256, trace=True, prefixes=store)
    cached.join([("warm", segment(golden, 8, text=golden["text"][0][:4]))])
    cached.join([("x", s)])
    assert store.hits == 1
    torch.testing.assert_close(cached.traces["x"][0].logits, plain.traces["x"][0].logits, atol=PREFIX_ATOL, rtol=0)
    torch.testing.assert_close(cached.traces["x"][0].hidden, plain.traces["x"][0].hidden, atol=PREFIX_ATOL, rtol=0)


def test_padding_of_a_short_row_past_the_cache_end_harms_nothing(golden_lm, golden):
    """A row that continues a long prefix joins with a row whose input is longer than its rest:
    the padding's positions would pass the cache's end; they are kept inside it."""
    lm, cfg = golden_lm
    long_prompt = [int(i) for i in golden["prompt_text"][0]] * 3
    short = segment(golden, 9, prompt=long_prompt, text=golden["text"][0][:3], speech=False, forced=6)
    wide = segment(golden, 10, prompt=[int(i) for i in golden["prompt_text"][0][:8]], forced=6)  # system prompt
    max_len = max(TokenBatch.prompt_length(short), TokenBatch.prompt_length(wide)) + 8
    arrivals = [[("warm", segment(golden, 11, prompt=long_prompt, text=golden["text"][0][:2], speech=False,
                                   forced=2))], [], [], [("short", short), ("wide", wide)]]
    assert 1 + len(long_prompt) + TokenBatch.prompt_length(wide) > max_len  # the short row's padding would pass it
    plain = run_arrivals(TokenBatch(lm, cfg, rows=4, max_len=max_len), arrivals)
    store = PrefixStore(1 << 20)
    kept = run_arrivals(TokenBatch(lm, cfg, rows=4, max_len=max_len, prefixes=store), arrivals)
    assert kept == plain and store.hits == 1
