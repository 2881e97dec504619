"""CosyVoice3LM and the Qwen2 stack against the golden set (tiny random checkpoint, CPU float32)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cosyvoice3.checkpoint import read_state_dict
from cosyvoice3.config import load_config
from cosyvoice3.errors import BadInputError, CheckpointMismatchError
from cosyvoice3.nn.llm import CosyVoice3LM, load_llm

GOLDEN = Path(__file__).resolve().parent / "golden"
LLM_PT = GOLDEN / "model" / "llm.pt"


@pytest.fixture(scope="module")
def cfg():
    return load_config(GOLDEN / "model")


@pytest.fixture(scope="module")
def lm(cfg):
    return load_llm(LLM_PT, cfg.llm, cfg.qwen)


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN / "llm.npz"))


def test_state_dict_keys_and_shapes_match_official_file(cfg):
    with torch.device("meta"):
        model = CosyVoice3LM(cfg.llm, cfg.qwen)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in read_state_dict(LLM_PT).items()}
    assert ours == theirs
    assert "llm.model.lm_head.weight" in ours and ours["llm_decoder.weight"] == (6761, 16)


def test_lm_head_shares_the_embedding_parameter(lm, cfg):
    head = lm.llm.model.lm_head.weight
    assert head is lm.body.embed_tokens.weight
    moved = load_llm(LLM_PT, cfg.llm, cfg.qwen).to(torch.float64)
    assert moved.llm.model.lm_head.weight is moved.body.embed_tokens.weight
    assert sum(p.numel() for p in lm.parameters()) == sum(
        v.numel() for k, v in read_state_dict(LLM_PT).items() if k != "llm.model.lm_head.weight")


def test_first_step_matches_golden(lm, golden):
    lm_input = lm.first_step_input(golden["prompt_text"], golden["text"], golden["prompt_speech_token"])
    np.testing.assert_allclose(lm_input.numpy(), golden["lm_input"], atol=1e-6, rtol=0)
    with torch.inference_mode():
        hidden = lm.prefill(lm_input, lm.new_cache(lm_input.shape[1] + 4))
        np.testing.assert_allclose(hidden.numpy(), golden["first_step_hidden"], atol=1e-4, rtol=0)
        np.testing.assert_allclose(lm.logits(hidden)[0].numpy(), golden["first_step_logits"], atol=1e-4, rtol=0)
        logp = lm.logprobs(hidden)
    assert logp.dtype == torch.float32 and logp.shape == (1, 6761)
    np.testing.assert_allclose(logp[0].numpy(), golden["first_step_logp"], atol=1e-4, rtol=0)


def test_cached_decode_equals_full_recompute(lm, golden):
    lm_input = lm.first_step_input(golden["prompt_text"], golden["text"], golden["prompt_speech_token"])
    length = lm_input.shape[1]
    fed = torch.tensor([17, 4000, 6560])
    with torch.inference_mode():
        cache = lm.new_cache(length + 10)
        lm.prefill(lm_input, cache)
        stepped = [lm.decode_one(fed[i:i + 1], torch.tensor([length + i]), cache) for i in range(len(fed))]
        full_input = torch.cat([lm_input, lm.speech_embedding(fed)[None]], dim=1)
        for i in range(len(fed)):
            reference = lm.prefill(full_input[:, :length + i + 1], lm.new_cache(length + 10))
            torch.testing.assert_close(stepped[i], reference, atol=1e-5, rtol=0)


def test_batched_decode_rows_at_different_positions(lm, golden):
    """Two requests in one batch, at different positions, give the same result as alone."""
    first = lm.first_step_input(golden["prompt_text"], golden["text"], golden["prompt_speech_token"])
    second = lm.first_step_input(golden["prompt_text"][:, :12], golden["text"], [])
    with torch.inference_mode():
        alone = []
        for lm_input in (first, second):
            cache = lm.new_cache(120)
            lm.prefill(lm_input, cache)
            alone.append(lm.decode_one(torch.tensor([5]), torch.tensor([lm_input.shape[1]]), cache))
        batch_cache = lm.new_cache(120, batch=2)
        padded = torch.zeros(2, first.shape[1], first.shape[2])
        padded[0], padded[1, :second.shape[1]] = first[0], second[0]
        lm.prefill(padded, batch_cache)  # row 1's slots past its prompt are overwritten next
        positions = torch.tensor([first.shape[1], second.shape[1]])
        together = lm.decode_one(torch.tensor([5, 5]), positions, batch_cache)
    torch.testing.assert_close(together[0], alone[0][0], atol=1e-5, rtol=0)
    torch.testing.assert_close(together[1], alone[1][0], atol=1e-5, rtol=0)


def test_load_refuses_a_file_with_a_missing_key(cfg, tmp_path):
    state = read_state_dict(LLM_PT, mmap=False)
    del state["llm.model.model.layers.1.mlp.up_proj.weight"]
    state["extra.weight"] = torch.zeros(1)
    bad = tmp_path / "llm.pt"
    torch.save(state, bad)
    with pytest.raises(CheckpointMismatchError) as err:
        load_llm(bad, cfg.llm, cfg.qwen)
    message = str(err.value)
    assert str(bad) in message and "layers.1.mlp.up_proj.weight" in message and "extra.weight" in message


def test_load_in_bfloat16(cfg, golden):
    lm16 = load_llm(LLM_PT, cfg.llm, cfg.qwen, dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in lm16.parameters())
    lm_input = lm16.first_step_input(golden["prompt_text"], golden["text"], golden["prompt_speech_token"])
    with torch.inference_mode():
        logits = lm16.logits(lm16.prefill(lm_input, lm16.new_cache(lm_input.shape[1])))
    assert logits.dtype == torch.float32
    np.testing.assert_allclose(logits[0].numpy(), golden["first_step_logits"], atol=0.15, rtol=0)


def test_out_of_range_ids_are_refused_on_the_host(lm):
    with pytest.raises(BadInputError):
        lm.first_step_input([151646], [1, 2], [6561])
    with pytest.raises(BadInputError):
        lm.first_step_input([151646], [151936], [])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_and_sampling_capture_in_a_cuda_graph(cfg, golden):
    """The decode step + RAS draw (counter-based noise) has no host sync: it captures in a CUDA
    graph and replays exactly like eager; every SDPA backend gives the same hidden state."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from cosyvoice3.decoding.sampling import empty_recent, ras_sample

    lm = load_llm(LLM_PT, cfg.llm, cfg.qwen, device="cuda")
    lm_input = lm.first_step_input(golden["prompt_text"], golden["text"], golden["prompt_speech_token"])
    key, counter = torch.tensor([7], device="cuda"), torch.tensor([0], device="cuda")
    with torch.inference_mode():
        cache = lm.new_cache(lm_input.shape[1] + 16)
        lm.prefill(lm_input, cache)
        tokens = torch.tensor([17], device="cuda")
        positions = torch.tensor([lm_input.shape[1]], device="cuda")
        recent = empty_recent(1, 10, "cuda")

        def step():
            hidden = lm.decode_one(tokens, positions, cache)
            return hidden, ras_sample(lm.logprobs(hidden), recent, key, counter)

        by_backend = {}
        for backend in (SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION):
            with sdpa_kernel(backend):
                by_backend[backend] = step()[0]
        torch.testing.assert_close(by_backend[SDPBackend.MATH], by_backend[SDPBackend.EFFICIENT_ATTENTION],
                                   atol=1e-5, rtol=0)

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            graph_hidden, graph_token = step()
        eager_hidden, eager_token = step()
        graph.replay()
        torch.cuda.synchronize()
    assert torch.equal(graph_hidden, eager_hidden) and torch.equal(graph_token, eager_token)
