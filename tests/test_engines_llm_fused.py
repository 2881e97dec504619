"""The fused LLM decode step (engines/llm_fused.py) and its Triton kernels (engines/llm_triton.py):
each kernel equals its PyTorch twin (engines/llm_ops.py), the fused step equals the module's own
`decode_one` (hidden state and cache), its weights share the module's storage, the kernels compile
for Hopper (tests/triton_hopper.py), and on a GPU its CUDA graphs give the tokens of the same step
run eagerly. Without a GPU the kernels run in Triton's interpreter (tests/conftest.py sets
TRITON_INTERPRET)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cosyvoice3.config import LLMConfig, Qwen2Config
from cosyvoice3.decoding.token_batch import SegmentSpec, TokenBatch, decode_rows
from cosyvoice3.nn.llm import CosyVoice3LM
from engines import llm_ops
from engines.llm_fused import FusedDecodeLM, fused_decoder

triton_ops = pytest.importorskip("engines.llm_triton", reason="Triton is a test dependency (requirements-dev.txt)")

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# (query heads, kv heads, head dim): the released model's grouping, and the demo model's
HEADS = [(14, 2, 64), (2, 1, 16)]


def close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to float rounding: float32 to 1e-5; bfloat16 to a couple of its own steps."""
    tol = 1e-5 if want.dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def cache_layer(rows: int, kv_heads: int, slots: int, head_dim: int, dtype):
    """Layer 1 of rows 1..rows of a bigger cache: the strided view a decode step gets."""
    big = torch.randn(2, rows + 2, kv_heads, slots, head_dim, dtype=dtype, device=DEVICE)
    return big[1, 1:rows + 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads", HEADS)
def test_each_kernel_equals_its_twin(dtype, heads):
    torch.manual_seed(0)
    n_heads, n_kv, head_dim = heads
    rows, slots, dim = 4, 320, n_heads * head_dim
    positions = torch.tensor([0, 127, 128, 319], device=DEVICE)  # one slot, a split's edge, the last slot

    x, residual = (torch.randn(rows, dim, dtype=dtype, device=DEVICE) for _ in range(2))
    weight = torch.randn(dim, dtype=dtype, device=DEVICE)
    for res in (None, residual):
        for got, want in zip(triton_ops.add_rms_norm(x, res, weight, 1e-6), llm_ops.add_rms_norm(x, res, weight, 1e-6)):
            close(got, want)

    qkv = torch.randn(rows, (n_heads + 2 * n_kv) * head_dim, dtype=dtype, device=DEVICE)
    k_got, v_got = cache_layer(rows, n_kv, slots, head_dim, dtype), cache_layer(rows, n_kv, slots, head_dim, dtype)
    k_want, v_want = k_got.clone(), v_got.clone()
    q_got = triton_ops.rotary_write(qkv, positions, k_got, v_got, n_heads, n_kv, 1e6)
    q_want = llm_ops.rotary_write(qkv, positions, k_want, v_want, n_heads, n_kv, 1e6)
    close(q_got, q_want)
    close(k_got, k_want)  # the written slots, and every other slot left as it was
    assert torch.equal(v_got, v_want)

    q = torch.randn(rows, n_heads, head_dim, dtype=dtype, device=DEVICE)
    close(triton_ops.decode_attention(q, k_got, v_got, positions), llm_ops.decode_attention(q, k_got, v_got, positions))

    gate_up = torch.randn(rows, 2 * 1100, dtype=dtype, device=DEVICE)  # not a multiple of the block
    close(triton_ops.silu_gate(gate_up), llm_ops.silu_gate(gate_up))


def test_attention_reads_each_rows_own_length():
    """Slots past a row's position never count, whatever they hold."""
    torch.manual_seed(1)
    k, v = cache_layer(2, 2, 200, 64, torch.float32), cache_layer(2, 2, 200, 64, torch.float32)
    q = torch.randn(2, 14, 64, device=DEVICE)
    positions = torch.tensor([10, 130], device=DEVICE)
    before = triton_ops.decode_attention(q, k, v, positions)
    k[0, :, 11:], v[0, :, 11:], k[1, :, 131:] = 1e4, 1e4, -1e4
    assert torch.equal(triton_ops.decode_attention(q, k, v, positions), before)


def small_lm(n_heads: int, n_kv: int, head_dim: int) -> CosyVoice3LM:
    torch.manual_seed(2)
    dim = n_heads * head_dim
    qwen = Qwen2Config(hidden_size=dim, num_hidden_layers=2, num_attention_heads=n_heads, num_key_value_heads=n_kv,
                       intermediate_size=96)
    lm = CosyVoice3LM(LLMConfig(input_size=dim, output_size=dim), qwen).to(DEVICE).eval()
    with torch.no_grad():
        for p in lm.parameters():
            p.normal_(std=0.2)
    return lm


@pytest.mark.parametrize("kernels", ["twins", "triton"])
@pytest.mark.parametrize("heads", HEADS)
def test_the_fused_step_equals_the_module_step(kernels, heads):
    """Three rows prefilled to different lengths, then decode steps by the module and by the fused
    step, each on its own copy of the cache: the same hidden states and caches."""
    lm = small_lm(*heads)
    fused = fused_decoder(lm, kernels)
    assert fused.ops is (triton_ops if kernels == "triton" else llm_ops)
    lengths = torch.tensor([5, 70, 12], device=DEVICE)
    module_cache = lm.new_cache(128, batch=3)
    with torch.inference_mode():
        embeds = torch.randn(3, 70, lm.config.input_size, device=DEVICE)
        lm.prefill(embeds, module_cache, lengths)
        fused_cache = lm.new_cache(128, batch=3)
        fused_cache.k.copy_(module_cache.k)
        fused_cache.v.copy_(module_cache.v)
        positions, tokens = lengths.clone(), torch.tensor([3, 6560, 6561], device=DEVICE)
        for _ in range(3):
            want = lm.decode_one(tokens, positions, module_cache)
            got = fused.decode_one(tokens, positions, fused_cache)
            close(got, want)
            close(fused_cache.k, module_cache.k)
            close(fused_cache.v, module_cache.v)
            close(fused.logprobs(got), lm.logprobs(want))
            tokens, positions = want.argmax(dim=-1) % 6561, positions + 1


def test_fused_weights_are_the_modules_own_storage():
    lm = small_lm(14, 2, 16)
    before = sum(p.numel() for p in lm.parameters())
    fused = FusedDecodeLM(lm, llm_ops)
    attn, mlp, layer = lm.body.layers[1].self_attn, lm.body.layers[1].mlp, fused.layers[1]
    assert attn.q_proj.weight.data_ptr() == layer.qkv_weight.data_ptr()
    assert attn.k_proj.bias.data_ptr() == layer.qkv_bias.data_ptr() + attn.q_proj.bias.numel() * 4
    assert mlp.up_proj.weight.data_ptr() == layer.gate_up_weight.data_ptr() + mlp.gate_proj.weight.numel() * 4
    assert sum(p.numel() for p in lm.parameters()) == before
    assert torch.equal(layer.qkv_weight[: attn.q_proj.weight.shape[0]], attn.q_proj.weight)


def test_unknown_or_unfit_kernels_are_refused():
    with pytest.raises(ValueError, match="unknown decode kernels"):
        fused_decoder(small_lm(2, 1, 16), "cuda")
    with pytest.raises(ValueError, match="do not fit"):
        fused_decoder(small_lm(2, 1, 8), "triton")  # head dim 8: below a tile


class FusedEagerSteps:
    """Decode steps (cosyvoice3.decoding.token_batch.TorchDecodeSteps' face) running the fused step
    eagerly: no CUDA graph."""

    def __init__(self, lm, fused):
        self.lm, self.fused = lm, fused

    def prefill(self, embeds, lengths, cache):
        return self.lm.prefill(embeds, cache, lengths)

    def decode(self, cache, state, n, n_slots, sampling):
        return decode_rows(self.fused, cache, state, 0, n, n_slots, sampling)

    def warm(self, cache, state, sampling):
        pass


def arrivals(tokens: int, more: int) -> list[list]:
    """Six segments (forcing `tokens`, `tokens + more`, ... speech tokens) arriving over six steps."""
    specs = {f"r{i}": SegmentSpec([151646], [324, 267, 256, 13], [5, 6, 7][: i % 4], key=i,
                                  forced_tokens=tokens + more * i) for i in range(6)}
    return [[("r0", specs["r0"])], [], [(n, specs[n]) for n in ("r1", "r2", "r3")], [], [],
            [(n, specs[n]) for n in ("r4", "r5")]]


def run(batch, arriving: list[list]) -> dict:
    """The segments joining a token batch step by step, until every row is done -> owner: tokens."""
    got, step = {}, 0
    while step < len(arriving) or batch.active:
        events = batch.join(arriving[step]) if step < len(arriving) and arriving[step] else []
        events += batch.step() if batch.active else []
        for ev in events:
            got.setdefault(ev.owner, []).extend(ev.emitted)
        step += 1
    return got


def test_the_fused_step_and_its_sampling_give_the_module_tokens_in_a_changing_batch():
    """Rows joining and leaving, every row sampled (RAS): the fused step with the Triton kernels
    (interpreted without a GPU) chooses the tokens the module's step and `choose` choose, float32."""
    lm = small_lm(14, 2, 16)
    arriving = arrivals(4, 2)
    plain = run(TokenBatch(lm, lm.config, rows=8, max_len=256, initial_rows=2), arriving)
    fused = run(TokenBatch(lm, lm.config, rows=8, max_len=256, initial_rows=2,
                           steps=FusedEagerSteps(lm, fused_decoder(lm, "triton"))), arriving)
    assert fused == plain and sum(len(t) for t in plain.values()) == sum(4 + 2 * i for i in range(6))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_graphed_fused_steps_give_the_eager_fused_tokens_in_a_changing_batch(dtype):
    """CUDA graphs of the fused step (one per row bucket) give the tokens of the same step run
    eagerly, while rows join and leave."""
    from engines.step_graphs import GraphDecodeSteps

    lm = small_lm(14, 2, 64).to(dtype)
    fused = fused_decoder(lm, "triton")
    arriving = arrivals(20, 9)
    eager = run(TokenBatch(lm, lm.config, rows=8, max_len=512, steps=FusedEagerSteps(lm, fused), initial_rows=2),
                arriving)
    steps = GraphDecodeSteps(lm, step_lm=fused)
    graphed_batch = TokenBatch(lm, lm.config, rows=8, max_len=512, steps=steps, initial_rows=2)
    graphed_batch.warm()
    assert run(graphed_batch, arriving) == eager
    assert {slots for _, slots in steps.graphs} == {512} and "Triton kernels" in steps.describe()


def test_the_kernels_compile_for_hopper(tmp_path):
    """What the interpreter cannot show: each kernel goes through Triton's compiler to an sm_90
    cubin (a fresh Triton cache, so nothing is read back), in a process of its own."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "triton")
    run = subprocess.run([sys.executable, "-m", "tests.triton_hopper"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    built = json.loads(run.stdout)
    assert sorted(built) == ["bf16", "fp16", "fp32", "sampling"]
    assert built.pop("sampling")["choose_tokens"] > 1000
    for sizes in built.values():
        assert sorted(sizes) == ["add_rms_norm", "attention_combine", "attention_split", "rotary_write", "silu_gate"]
        assert all(size > 1000 for size in sizes.values()), sizes


def test_triton_compiles_into_the_engine_cache_unless_told_otherwise(tmp_path, monkeypatch):
    from engines.compiled import TRITON_ENV, use_triton_cache

    monkeypatch.delenv(TRITON_ENV, raising=False)
    assert use_triton_cache(tmp_path / "engines") == tmp_path / "engines" / "triton"
    assert os.environ[TRITON_ENV] == str(tmp_path / "engines" / "triton") and (tmp_path / "engines" / "triton").is_dir()
    monkeypatch.setenv(TRITON_ENV, str(tmp_path / "mine"))
    assert use_triton_cache(tmp_path / "engines") == tmp_path / "mine"
