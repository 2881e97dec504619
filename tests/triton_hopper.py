"""Compile every Triton kernel of the fused LLM step (engines/llm_triton.py, sampling_triton.py) for Hopper (sm_90,
the GPU machine's cards) the whole way to a cubin, on any machine: Triton's own front end, its
LLVM and the ptxas its wheel ships, no GPU needed. Run as `python -m tests.triton_hopper` in a
process without TRITON_INTERPRET (the kernels must be compiled, not interpreted); prints one JSON
object: kernel -> cubin bytes, per activation dtype, in the shapes of the released model."""

from __future__ import annotations

import json
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from engines import llm_triton as kernels
from engines import sampling_triton

HOPPER = GPUTarget("cuda", 90, 32)
HEADS, KV_HEADS, HEAD_DIM, DIM = 14, 2, 64, 896


def cubin(kernel, signature: dict[str, str], constexprs: dict, num_warps: int = 4) -> int:
    source = ASTSource(kernel, {**signature, **{name: "constexpr" for name in constexprs}}, constexprs=constexprs)
    return len(triton.compile(source, target=HOPPER, options={"num_warps": num_warps}).asm["cubin"])


def strides(*names: str) -> dict[str, str]:
    return {name: "i32" for name in names}


def compile_all(dtype: str) -> dict[str, int]:
    act = f"*{dtype}"
    cache = strides("k_row", "k_head", "k_slot", "v_row", "v_head", "v_slot")
    return {
        "add_rms_norm": cubin(kernels._add_rms_norm_kernel,
                              {"x_ptr": act, "res_ptr": act, "w_ptr": act, "out_ptr": act, "sum_ptr": act,
                               "dim": "i32", "eps": "fp32"},
                              {"HAS_RESIDUAL": True, "BLOCK": triton.next_power_of_2(DIM)}),
        "rotary_write": cubin(kernels._rotary_write_kernel,
                              {"qkv_ptr": act, "pos_ptr": "*i64", "q_ptr": act, "k_ptr": act, "v_ptr": act,
                               "qkv_row": "i32", **cache, "n_heads": "i32", "n_kv_heads": "i32", "log2_theta": "fp32"},
                              {"HEAD_DIM": HEAD_DIM, "HALF": HEAD_DIM // 2}),
        "attention_split": cubin(kernels._attention_split_kernel,
                                 {"q_ptr": act, "k_ptr": act, "v_ptr": act, "pos_ptr": "*i64", "acc_ptr": "*fp32",
                                  "best_ptr": "*fp32", "total_ptr": "*fp32", **cache, "scale": "fp32"},
                                 {"GROUP": HEADS // KV_HEADS, "HEAD_DIM": HEAD_DIM, "GROUP_PAD": kernels.GROUP_ROWS,
                                  "BLOCK": kernels.SLOT_BLOCK, "SPLIT": kernels.SPLIT_SLOTS, "WIDEN": False}),
        "attention_combine": cubin(kernels._attention_combine_kernel,
                                   {"acc_ptr": "*fp32", "best_ptr": "*fp32", "total_ptr": "*fp32", "out_ptr": act,
                                    "n_splits": "i32"},
                                   {"HEAD_DIM": HEAD_DIM, "SPLITS_PAD": 32}),
        "silu_gate": cubin(kernels._silu_gate_kernel, {"gate_up_ptr": act, "out_ptr": act, "width": "i32"},
                           {"BLOCK": 1024}),
    }


def compile_sampling() -> int:
    """The token choice (float32 logits, the released vocabulary and RAS settings), as launched."""
    state = {"ban_ptr": "*i1", "ban_until_ptr": "*i64", "count_ptr": "*i64", "key_ptr": "*i64", "greedy_ptr": "*i1",
             "recent_ptr": "*i64", "token_ptr": "*i64", "out_ptr": "*i64"}
    return cubin(sampling_triton._choose_kernel,
                 {"logits_ptr": "*fp32", **state, "vocab": "i32", "logits_row": "i32", "ban_row": "i32",
                  "recent_row": "i32", "top_p": "fp32", "repeat_limit": "fp32", "nucleus_salt": "i64",
                  "fallback_salt": "i32"},
                 {"TOP_K": 25, "K_PAD": sampling_triton.CANDIDATES_PAD, "WINDOW": 10, "WINDOW_PAD": 16, "WIN_SIZE": 10,
                  "BLOCK": 8192}, num_warps=8)


def main() -> int:
    if os.environ.get("TRITON_INTERPRET") == "1":
        print("run without TRITON_INTERPRET: the kernels are compiled here", file=sys.stderr)
        return 2
    built = {dtype: compile_all(dtype) for dtype in ("bf16", "fp16", "fp32")}
    built["sampling"] = {"choose_tokens": compile_sampling()}
    print(json.dumps(built))
    return 0


if __name__ == "__main__":
    sys.exit(main())
