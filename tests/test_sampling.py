"""RAS / nucleus sampling: the kept set, the repetition fallback, counter-based random streams."""

import pytest
import torch

from cosyvoice3.decoding.sampling import (
    EMPTY_SLOT,
    counter_uniform,
    empty_recent,
    greedy,
    nucleus_sample,
    push_recent,
    ras_sample,
    sample_categorical,
    sorted_candidates,
    top_candidates,
)


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def streams(rows: int, seed: int = 0):
    """Keys and counters of `rows` independent rows."""
    return torch.arange(rows, dtype=torch.long) * 7919 + seed, torch.zeros(rows, dtype=torch.long)


def uniform(rows: int, n: int, seed: int = 0) -> torch.Tensor:
    key, counter = streams(rows, seed)
    return counter_uniform(key, counter, 1, n)


def kept_set_by_walking(probs: torch.Tensor, top_p: float, top_k: int) -> set[int]:
    """The reference definition, one entry at a time: add sorted entries while the cumulative
    probability is below top_p and fewer than top_k are kept."""
    values, ids = probs.sort(descending=True, stable=True)
    kept, cumulative = [], 0.0
    for value, index in zip(values.tolist(), ids.tolist()):
        if cumulative < top_p and len(kept) < top_k:
            cumulative += value
            kept.append(index)
        else:
            break
    return set(kept)


@pytest.mark.parametrize("temperature", [0.5, 2.0, 6.0])
def test_nucleus_draws_only_from_the_kept_set_in_proportion(temperature):
    logits = torch.randn(400, generator=generator(1)) * temperature
    probs = logits.softmax(-1)
    kept = kept_set_by_walking(probs, 0.8, 25)
    draws = nucleus_sample(probs.expand(20000, -1), uniform(20000, 25, 2), 0.8, 25)
    assert set(draws.tolist()) <= kept
    counts = torch.bincount(draws, minlength=400).float() / len(draws)
    expected = torch.zeros(400)
    expected[list(kept)] = probs[list(kept)] / probs[list(kept)].sum()
    assert (counts - expected).abs().max() < 0.015


def test_top_k_and_top_p_limits():
    flat = torch.full((1, 100), 0.01)  # top-k binds; equal values keep index order (stable sort)
    draws = nucleus_sample(flat.expand(5000, -1), uniform(5000, 25), 0.8, 25)
    assert set(draws.tolist()) == set(range(25))
    peaked = torch.tensor([[0.05, 0.5, 0.2, 0.25]])  # sorted: 0.5, 0.25, 0.2 (crosses 0.8), 0.05
    draws = nucleus_sample(peaked.expand(5000, -1), uniform(5000, 25), 0.8, 25)
    assert set(draws.tolist()) == {1, 2, 3}


def test_repeated_choice_falls_back_to_the_full_distribution_without_it():
    logp = torch.full((1, 50), -20.0)
    logp[0, 7] = 0.0  # id 7 is almost certain
    logp = logp.log_softmax(-1).expand(4000, -1)
    fresh = ras_sample(logp, empty_recent(4000, 10, "cpu"), *streams(4000))
    assert (fresh == 7).all()
    recent = push_recent(empty_recent(4000, 10, "cpu"), torch.full((4000,), 7))
    fallback = ras_sample(logp, recent, *streams(4000))
    assert (fallback != 7).all() and len(set(fallback.tolist())) > 40  # spread over the other ids


def test_only_the_last_win_size_tokens_count():
    logp = torch.full((1, 50), -30.0)
    logp[0, 7] = 0.0
    outside = torch.tensor([[7] + [1] * 10])  # 7 is 11 tokens back: outside a window of 10
    assert ras_sample(logp, outside, *streams(1), win_size=10).item() == 7
    inside = torch.tensor([[1, 7] + [1] * 9])  # 10 tokens back: inside
    assert ras_sample(logp, inside, *streams(1), win_size=10).item() != 7


def test_masked_ids_are_never_drawn_even_in_the_fallback():
    logp = torch.zeros(1, 30)
    logp[0, 20:] = float("-inf")
    logp = logp.expand(3000, -1)
    recent = torch.randint(0, 20, (3000, 10), generator=generator(3))
    draws = ras_sample(logp, recent, *streams(3000, 4), top_p=0.8, top_k=25)
    assert draws.max() < 20


def test_a_rows_draws_depend_on_its_key_and_counter_only():
    """Batch invariance: a row draws the same numbers whatever rows share the batch, and in
    whatever order; other keys and other counters give other numbers."""
    key = torch.tensor([42, 7, 99, 2**62 + 5])
    counter = torch.tensor([0, 3, 3, 17])
    together = counter_uniform(key, counter, 1, 6761)
    for i in range(4):
        assert torch.equal(counter_uniform(key[i:i + 1], counter[i:i + 1], 1, 6761)[0], together[i])
    flipped = counter_uniform(key.flip(0), counter.flip(0), 1, 6761)
    assert torch.equal(flipped, together.flip(0))
    assert not torch.equal(counter_uniform(key, counter + 1, 1, 6761), together)
    assert not torch.equal(counter_uniform(key, counter, 2, 6761), together)  # the other draw of a step
    assert 0.0 < float(together.min()) and float(together.max()) < 1.0


def test_counter_uniform_is_uniform_and_uncorrelated():
    key, counter = streams(4, seed=3)
    u = counter_uniform(key, counter, 1, 100_000)
    z = (u.mean(dim=1) - 0.5) / (12 ** -0.5 / 100_000 ** 0.5)
    assert z.abs().max() < 5
    a, b = u[:, :-1] - 0.5, u[:, 1:] - 0.5
    neighbour_corr = (a * b).mean(dim=1) * 12
    assert neighbour_corr.abs().max() < 5 / 100_000 ** 0.5
    counts = torch.histc(u[0], bins=10, min=0, max=1)
    assert (counts / 10_000 - 1).abs().max() < 0.05


def test_same_key_and_counter_same_draws():
    logp = torch.randn(3, 6761, generator=generator(0)).log_softmax(-1)
    recent = empty_recent(3, 10, "cpu")
    key, counter = streams(3, seed=42)
    a = [ras_sample(logp, recent, key, counter + i) for i in range(5)]
    b = [ras_sample(logp, recent, key, counter + i) for i in range(5)]
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    other = [ras_sample(logp, recent, key + 1, counter + i) for i in range(5)]
    assert not all(torch.equal(x, y) for x, y in zip(a, other))


def test_sampling_never_touches_the_global_rng():
    state = torch.get_rng_state()
    ras_sample(torch.randn(2, 100, generator=generator(0)).log_softmax(-1), empty_recent(2, 10, "cpu"), *streams(2))
    sample_categorical(torch.ones(2, 5), uniform(2, 5))
    assert torch.equal(torch.get_rng_state(), state)


def test_sample_categorical_frequencies():
    weights = torch.tensor([[1.0, 0.0, 3.0, 6.0]])  # unnormalised
    draws = sample_categorical(weights.expand(20000, -1), uniform(20000, 4, 5))
    counts = torch.bincount(draws, minlength=4).float() / len(draws)
    torch.testing.assert_close(counts, torch.tensor([0.1, 0.0, 0.3, 0.6]), atol=0.015, rtol=0)


def test_greedy_and_recent_window_helpers():
    assert greedy(torch.tensor([[0.0, 2.0, 2.0, 1.0]])).tolist() == [1]
    recent = push_recent(empty_recent(1, 3, "cpu"), torch.tensor([4]))
    recent = push_recent(recent, torch.tensor([9]))
    assert recent.tolist() == [[EMPTY_SLOT, 4, 9]]


def tie_heavy_probs(rows: int, vocab: int, seed: int) -> torch.Tensor:
    """Probabilities with many exact ties, at the top and around the 25th place (logits on a
    coarse grid), some rows with fewer than 25 non-zero entries (the rest at -inf)."""
    logits = (torch.randn(rows, vocab, generator=generator(seed)) * 3).round()
    logits[: rows // 4, 20:] = float("-inf")  # only 20 candidates: zeros tie beyond them
    logits[rows // 4: rows // 2] = (logits[rows // 4: rows // 2] / 4).round()  # huge ties
    return logits.softmax(-1)


@pytest.mark.parametrize("kind", ["smooth", "ties"])
def test_top_candidates_equal_the_first_of_a_stable_sort(kind):
    rows, vocab = 64, 6761  # the model's speech vocabulary
    probs = (torch.randn(rows, vocab, generator=generator(3)) * 4).softmax(-1) if kind == "smooth" \
        else tie_heavy_probs(rows, vocab, 3)
    for k in (1, 25, 40):
        fast_probs, fast_ids = top_candidates(probs, k)
        plain_probs, plain_ids = sorted_candidates(probs, k)
        assert torch.equal(fast_ids, plain_ids), k
        assert torch.equal(fast_probs, plain_probs), k


def test_ras_with_top_candidates_draws_the_tokens_of_the_full_sort():
    rows, vocab = 256, 6761
    logp = tie_heavy_probs(rows, vocab, 5).log()
    logp[rows // 2:] = (torch.randn(rows // 2, vocab, generator=generator(6)) * 4).log_softmax(-1)
    recent = torch.randint(0, 30, (rows, 10), generator=generator(7))
    key, counter = streams(rows, 9)
    for step in range(4):
        fast = ras_sample(logp, recent, key, counter + step)
        plain = ras_sample(logp, recent, key, counter + step, candidates=sorted_candidates)
        assert torch.equal(fast, plain), step
