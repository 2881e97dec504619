"""Triton kernels for the fused LLM decode step: the operations of `engines/llm_ops.py` (their
plain twins, same signatures and meaning), each one kernel launch instead of several.

- `add_rms_norm`: the residual sum and its RMSNorm in one pass over each row (float32 inside; the
  sum is rounded to the activation dtype once, as the model's residual is);
- `rotary_write`: one program per (row, head) of q and k: the rotation (angles in float32 from the
  row's position, computed here, not read from a table) and, for the kv heads, the cache write of
  k and v at that position;
- `decode_attention` (flash decoding): one program per (row, kv head, split of `SPLIT_SLOTS`
  cache slots) with the query heads of its group as the rows of one tile; it reads the row's
  position from memory and walks its split's visible slots in blocks with an online softmax
  (float32), so a row costs its own length (splits past it return at once) and the launch does not
  depend on the lengths (a CUDA graph replays it for any); a second kernel weighs the splits'
  partial results into the output;
- `silu_gate`: SiLU(gate) * up in float32, rounded once;
- `choose_tokens`: the sampling of the next token (engines/sampling_triton.py).

Head dims must be powers of two (the model's 64; the demo's 16): `supported(cfg)` says whether a
config fits. Importing this module imports Triton; on a machine without a GPU the kernels run in
Triton's interpreter (`TRITON_INTERPRET=1`, set before the import), which is how the CPU tests
check them against their twins. The interpreter multiplies bfloat16 tiles wrongly, so there the
attention's products take their operands widened to float32 (exact for bfloat16 values; the GPU
multiplies them as they are and accumulates in float32 too).
"""

from __future__ import annotations

import math
import os

import torch
import triton
import triton.language as tl

from engines.sampling_triton import choose_tokens  # noqa: F401 - the fifth operation, in a module of its own

GROUP_ROWS = 16  # tl.dot tiles need at least 16 rows: the query heads of a group, padded
SLOT_BLOCK = 64  # cache slots per step of the attention loop
SPLIT_SLOTS = 128  # cache slots per program of the attention (flash-decoding split)
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
KIND = "Triton kernels"


def supported(cfg) -> bool:
    """Whether a `Qwen2Config` fits these kernels (power-of-two head dim, groups of at most 16 heads)."""
    hd = cfg.head_dim
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    return hd >= 16 and hd & (hd - 1) == 0 and group <= GROUP_ROWS


@triton.jit
def _add_rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, sum_ptr, dim, eps,
                         HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    inside = cols < dim
    x = tl.load(x_ptr + row * dim + cols, mask=inside, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(res_ptr + row * dim + cols, mask=inside, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(sum_ptr.dtype.element_ty)
        tl.store(sum_ptr + row * dim + cols, x, mask=inside)
    xf = x.to(tl.float32)
    scale = tl.rsqrt(tl.sum(xf * xf, axis=0) / dim + eps)
    w = tl.load(w_ptr + cols, mask=inside, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * dim + cols, (xf * scale * w).to(out_ptr.dtype.element_ty), mask=inside)


def add_rms_norm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.contiguous()
    rows, dim = x.shape
    out = torch.empty_like(x)
    first = residual is None  # the sum is x itself: the kernel reads no residual and writes no sum
    summed = x if first else torch.empty_like(x)
    _add_rms_norm_kernel[(rows,)](x, x if first else residual.contiguous(), weight, out, summed, dim, eps,
                                  HAS_RESIDUAL=not first, BLOCK=triton.next_power_of_2(dim))
    return out, summed


@triton.jit
def _rotary_write_kernel(qkv_ptr, pos_ptr, q_ptr, k_ptr, v_ptr, qkv_row, k_row, k_head, k_slot, v_row, v_head,
                         v_slot, n_heads, n_kv_heads, log2_theta, HEAD_DIM: tl.constexpr, HALF: tl.constexpr):
    row = tl.program_id(0)
    head = tl.program_id(1)  # 0..n_heads-1: q heads, then n_kv_heads k heads
    pos = tl.load(pos_ptr + row)
    i = tl.arange(0, HALF)
    inv_freq = tl.exp2(-(i.to(tl.float32) * 2.0 / HEAD_DIM) * log2_theta)
    angle = pos.to(tl.float32) * inv_freq
    cos, sin = tl.cos(angle), tl.sin(angle)
    src = qkv_ptr + row * qkv_row + head * HEAD_DIM
    first = tl.load(src + i).to(tl.float32)
    second = tl.load(src + HALF + i).to(tl.float32)
    out_first = first * cos - second * sin
    out_second = second * cos + first * sin
    if head < n_heads:
        dst = q_ptr + (row * n_heads + head) * HEAD_DIM
        tl.store(dst + i, out_first.to(q_ptr.dtype.element_ty))
        tl.store(dst + HALF + i, out_second.to(q_ptr.dtype.element_ty))
    else:
        kv = head - n_heads
        dst = k_ptr + row * k_row + kv * k_head + pos * k_slot
        tl.store(dst + i, out_first.to(k_ptr.dtype.element_ty))
        tl.store(dst + HALF + i, out_second.to(k_ptr.dtype.element_ty))
        d = tl.arange(0, HEAD_DIM)
        value = tl.load(qkv_ptr + row * qkv_row + (n_heads + n_kv_heads + kv) * HEAD_DIM + d)
        tl.store(v_ptr + row * v_row + kv * v_head + pos * v_slot + d, value.to(v_ptr.dtype.element_ty))


def rotary_write(qkv: torch.Tensor, positions: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                 n_heads: int, n_kv_heads: int, theta: float) -> torch.Tensor:
    qkv = qkv.contiguous()
    rows, head_dim = qkv.shape[0], k_cache.shape[-1]
    q = torch.empty(rows, n_heads, head_dim, device=qkv.device, dtype=qkv.dtype)
    _rotary_write_kernel[(rows, n_heads + n_kv_heads)](
        qkv, positions, q, k_cache, v_cache, qkv.stride(0), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), n_heads, n_kv_heads, math.log2(theta),
        HEAD_DIM=head_dim, HALF=head_dim // 2)
    return q


@triton.jit
def _dot(a, b, WIDEN: tl.constexpr):
    if WIDEN:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if a.dtype == tl.float32:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


@triton.jit
def _attention_split_kernel(q_ptr, k_ptr, v_ptr, pos_ptr, acc_ptr, best_ptr, total_ptr, k_row, k_head, k_slot,
                            v_row, v_head, v_slot, scale, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                            GROUP_PAD: tl.constexpr, BLOCK: tl.constexpr, SPLIT: tl.constexpr, WIDEN: tl.constexpr):
    """Program (row, kv head, split): the group's query heads over slots [split * SPLIT, its end)
    of the row's visible slots -> unnormalised output, running max and sum (float32)."""
    row = tl.program_id(0)
    kv = tl.program_id(1)
    split = tl.program_id(2)
    n_heads = tl.num_programs(1) * GROUP
    n_splits = tl.num_programs(2)
    length = tl.load(pos_ptr + row) + 1
    start = split * SPLIT
    end = tl.minimum(start + SPLIT, length)
    g = tl.arange(0, GROUP_PAD)
    d = tl.arange(0, HEAD_DIM)
    in_group = g < GROUP
    heads = kv * GROUP + g
    q = tl.load(q_ptr + (row * n_heads + heads)[:, None] * HEAD_DIM + d[None, :], mask=in_group[:, None], other=0.0)
    best = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    total = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, HEAD_DIM], tl.float32)
    k_base = k_ptr + row * k_row + kv * k_head
    v_base = v_ptr + row * v_row + kv * v_head
    while start < end:  # (a while, not a range: Triton's interpreter cannot range to a loaded bound)
        slots = start + tl.arange(0, BLOCK)
        visible = slots < end
        k = tl.load(k_base + slots[:, None] * k_slot + d[None, :], mask=visible[:, None], other=0.0)
        scores = _dot(q, tl.trans(k), WIDEN) * scale  # (GROUP_PAD, BLOCK) float32
        scores = tl.where(visible[None, :], scores, float("-inf"))
        new_best = tl.maximum(best, tl.max(scores, axis=1))
        p = tl.exp(scores - new_best[:, None])
        fade = tl.exp(best - new_best)
        total = total * fade + tl.sum(p, axis=1)
        v = tl.load(v_base + slots[:, None] * v_slot + d[None, :], mask=visible[:, None], other=0.0)
        acc = acc * fade[:, None] + _dot(p.to(v.dtype), v, WIDEN)
        best = new_best
        start += BLOCK
    part = (row * n_heads + heads) * n_splits + split  # (B, H, splits) layout
    tl.store(acc_ptr + part[:, None] * HEAD_DIM + d[None, :], acc, mask=in_group[:, None])
    tl.store(best_ptr + part, best, mask=in_group)
    tl.store(total_ptr + part, total, mask=in_group)


@triton.jit
def _attention_combine_kernel(acc_ptr, best_ptr, total_ptr, out_ptr, n_splits, HEAD_DIM: tl.constexpr,
                              SPLITS_PAD: tl.constexpr):
    """Program (row, head): the splits' partial results weighed by their maxima -> the output."""
    row_head = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
    s = tl.arange(0, SPLITS_PAD)
    d = tl.arange(0, HEAD_DIM)
    present = s < n_splits
    best = tl.load(best_ptr + row_head * n_splits + s, mask=present, other=float("-inf"))
    total = tl.load(total_ptr + row_head * n_splits + s, mask=present, other=0.0)
    acc = tl.load(acc_ptr + (row_head * n_splits + s)[:, None] * HEAD_DIM + d[None, :], mask=present[:, None],
                  other=0.0)
    weight = tl.exp(best - tl.max(best, axis=0))  # 0 for an empty split (its max is -inf)
    out = tl.sum(acc * weight[:, None], axis=0) / tl.sum(total * weight, axis=0)
    tl.store(out_ptr + row_head * HEAD_DIM + d, out.to(out_ptr.dtype.element_ty))


def decode_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                     positions: torch.Tensor) -> torch.Tensor:
    q = q.contiguous()
    rows, n_heads, head_dim = q.shape
    n_kv_heads, slots = k_cache.shape[1], k_cache.shape[2]
    splits = triton.cdiv(slots, SPLIT_SLOTS)  # fixed by the cache, not the lengths: graph-safe
    acc = torch.empty(rows, n_heads, splits, head_dim, device=q.device, dtype=torch.float32)
    best = torch.empty(rows, n_heads, splits, device=q.device, dtype=torch.float32)
    total = torch.empty_like(best)
    _attention_split_kernel[(rows, n_kv_heads, splits)](
        q, k_cache, v_cache, positions, acc, best, total, k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        v_cache.stride(0), v_cache.stride(1), v_cache.stride(2), head_dim ** -0.5,
        GROUP=n_heads // n_kv_heads, HEAD_DIM=head_dim, GROUP_PAD=GROUP_ROWS, BLOCK=SLOT_BLOCK, SPLIT=SPLIT_SLOTS,
        WIDEN=INTERPRETED)
    out = torch.empty(rows, n_heads * head_dim, device=q.device, dtype=q.dtype)
    _attention_combine_kernel[(rows, n_heads)](acc, best, total, out, splits, HEAD_DIM=head_dim,
                                               SPLITS_PAD=triton.next_power_of_2(splits))
    return out


@triton.jit
def _silu_gate_kernel(gate_up_ptr, out_ptr, width, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = cols < width
    gate = tl.load(gate_up_ptr + row * 2 * width + cols, mask=inside, other=0.0).to(tl.float32)
    up = tl.load(gate_up_ptr + row * 2 * width + width + cols, mask=inside, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + row * width + cols, out.to(out_ptr.dtype.element_ty), mask=inside)


def silu_gate(gate_up: torch.Tensor) -> torch.Tensor:
    gate_up = gate_up.contiguous()
    rows, width = gate_up.shape[0], gate_up.shape[1] // 2
    out = torch.empty(rows, width, device=gate_up.device, dtype=gate_up.dtype)
    block = 1024
    _silu_gate_kernel[(rows, triton.cdiv(width, block))](gate_up, out, width, BLOCK=block)
    return out
