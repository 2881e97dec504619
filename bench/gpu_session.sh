#!/usr/bin/env bash
# The GPU measurements of this project, as steps that fit the lent GPU machine's 10-minute
# commands (see bench/engines_gpu.sh for the engine checks). Results go to $OUT (or /tmp/gpu-out).
#
#   bash bench/gpu_session.sh STEP...
#
# STEP: wheels     install the carried wheels (.whl/*.whl) into /tmp/site; keep TensorRT-RTX library
#                  parts (.whl/trtlibs.part.*) in /tmp/trtparts and install the library wheel once all
#                  parts are there
#       golden     the golden checker on CUDA (FP32) and the GPU-marked tests
#       full       build the full-size random model (real hyperparameters) in /tmp/cosyfast-models/full
#       precision  FP16/BF16 vs FP32 per stage on the full-size model
#       profile    time per stage (LLM loop, flow, vocoder) on the full-size model with the engines
#       bench      end-to-end speed on the full-size model: plain PyTorch, then the engines (auto)
#       bench-auto end-to-end speed with the engines only
#       compiled   bench-auto (fp32 model) with the LLM step compiled by torch.compile (COSYFAST_COMPILE_LLM=1)
#       worker     the serving stack (supervisor + worker process + engines): 1, 16 and 64 streams of 10 s,
#                  then mixed lengths (2-20 s) with Poisson arrivals
#       official   the official implementation (.gpu-anchor, copied from shared/anchors/official-cv3) and
#                  bench_synthesis in the same call: both sides and the ratio
#       boot       the serving stack again, 1 and 16 streams (run after `worker`: a warm start, kernels cached)
#       invariance the same segments decoded alone and batched (share of identical tokens, BF16)
#       shapes     the DiT as serving runs it on shapes it was not warmed on: first call vs later calls
#       variants   one LLM decode step: eager, CUDA graph, torch.compile + CUDA graph
#       sampling   the RAS sampling step alone in a CUDA graph, batch 1 and 64: top-k candidates vs the full sort
#       takes      1 and 3 takes of one text through the serving stack (issue 20: 3 takes <= 1.5x one)
#       kernels    the fused decode step on Triton kernels (issue 19): its tests on the GPU (every kernel against its twin), the step variants at batch
#                  1 and 64 with their kernel tables, then the LLM loop through the engines with the module's
#                  step and with the fused one, each with 1 and 4 decode steps per host read, and the prefill
#                  with and without a stored prompt prefix (issue 19 items 4, 5)
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out" /tmp/site /tmp/trtparts
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
export COSYFAST_ENGINE_CACHE=${COSYFAST_ENGINE_CACHE:-/tmp/engines-cache}
py=${PYTHON:-python3}
full=/tmp/cosyfast-models/full

step() {  # name, time limit, command... (output appended to $out/<name>.txt)
    local name=$1 limit=$2
    shift 2
    echo "== $name ($(date +%T))" | tee -a "$out/$name.txt" >&2
    timeout "$limit" "$@" >> "$out/$name.txt" 2>&1
    echo "== $name: exit $? ($(date +%T))" | tee -a "$out/$name.txt" >&2
}

for s in "$@"; do
    case $s in
    wheels)
        cp .whl/trtlibs.part.* /tmp/trtparts/ 2>/dev/null
        ls .whl/*.whl >/dev/null 2>&1 && $py -m pip install -q --no-index --no-deps --no-compile --upgrade \
            --target /tmp/site .whl/*.whl
        if [ "$(ls /tmp/trtparts | wc -l)" = 3 ] && ! $py -c "import tensorrt_rtx_libs" 2>/dev/null; then
            cat /tmp/trtparts/trtlibs.part.* > /tmp/tensorrt_rtx_cu13_libs-1.7.1.116-py3-none-manylinux_2_28_x86_64.whl
            $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
                /tmp/tensorrt_rtx_cu13_libs-1.7.1.116-py3-none-manylinux_2_28_x86_64.whl
        fi
        ls /tmp/site /tmp/trtparts >&2
        ;;
    golden)
        nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv > "$out/gpu.txt"
        step golden_cuda 120 $py -m cosyvoice3.golden tests/golden --device cuda
        step pytest_gpu 300 $py -m pytest -q -m gpu -p no:cacheprovider tests/test_llm.py tests/test_engines_torch.py tests/test_engines_trt.py tests/test_engines_step_graphs.py
        ;;
    full)
        [ -f $full/flow.pt ] || step build_full 300 $py -m cosyvoice3.demo $full --full-size --device cuda
        ;;
    precision)
        step precision 300 $py bench/precision_report.py --model-dir $full --device cuda
        ;;
    profile)
        step profile 300 $py bench/profile_stages.py --model-dir $full --dtype bf16 --backend auto --batches 1,4,16,64
        ;;
    profile-compiled)
        step profile_compiled 300 $py bench/profile_stages.py --model-dir $full --dtype bf16 --backend auto \
            --batches 1,64 --compile-llm
        ;;
    variants)
        step llm_variants 240 $py bench/llm_step_variants.py --compile-modes ''
        ;;
    bench-auto)
        step bench_auto 420 $py bench/bench_synthesis.py --model-dir $full --dtype bf16 --backend auto --runs 3
        step bench_auto_fp32 420 $py bench/bench_synthesis.py --model-dir $full --dtype fp32 --backend auto --runs 3
        ;;
    compiled)
        step bench_compiled 420 env COSYFAST_COMPILE_LLM=1 $py bench/bench_synthesis.py --model-dir $full \
            --dtype fp32 --backend auto --runs 3
        ;;
    worker)
        step bench_worker 420 $py bench/bench_worker.py --model-dir $full --device cuda --dtype bfloat16 \
            --concurrency 1,16,64,16,64 --tokens 250
        ;;
    dit)
        step dit_variants 300 $py bench/dit_variants.py --model-dir $full --compile
        ;;
    boot)
        step bench_worker_boot 300 $py bench/bench_worker.py --model-dir $full --device cuda --dtype bfloat16 \
            --concurrency 1,16,64 --tokens 250 --log
        ;;
    invariance)
        step batch_invariance 300 $py bench/batch_invariance.py --model-dir $full --dtype bf16 --segments 16
        ;;
    shapes)
        step compile_shapes 300 $py bench/compile_shapes.py --model-dir $full --dtype bf16
        ;;
    worker-policy)
        step bench_worker_policy 300 $py bench/bench_worker.py --model-dir $full --device cuda --dtype bfloat16 \
            --concurrency 16,64,64 --tokens 250 --audio-works 64 --audio-slack 1.0
        ;;
    worker-mixed)
        step bench_worker_mixed 300 $py bench/bench_worker.py --model-dir $full --device cuda --dtype bfloat16 \
            --concurrency 1 --mixed 50,500 --poisson 6 --duration 15
        ;;
    official)
        $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu-anchor/wheels/*.whl
        step official 300 env PRECISIONS=fp32 OUT=$out $py .gpu-anchor/official_bench.py
        step bench_synthesis 420 $py bench/bench_synthesis.py --model-dir $full --dtype bf16 --backend auto \
            --runs 3 --official $out/official_bench.json
        ;;
    gputests)
        step pytest_gpu 300 $py -m pytest -q -m gpu -p no:cacheprovider -x tests/test_engines_step_graphs.py \
            tests/test_llm.py tests/test_engines_torch.py
        step golden_cuda 120 $py -m cosyvoice3.golden tests/golden --device cuda
        ;;
    sampling)
        step sampling_step 120 $py bench/sampling_step.py --device cuda --batches 1,64 --iters 500
        ;;
    takes)
        step takes 300 $py bench/takes.py --model-dir $full --device cuda --dtype bfloat16 --takes 1,3 \
            --tokens 250 --repeats 3
        ;;
    kernels)
        step pytest_kernels 300 $py -m pytest -q -p no:cacheprovider tests/test_engines_llm_fused.py \
            tests/test_engines_sampling_triton.py
        step llm_variants_kernels 300 $py bench/llm_step_variants.py --compile-modes '' --batches 1,64 --profile
        step profile_kernels_torch 240 $py bench/profile_stages.py --model-dir $full --dtype bf16 --backend auto \
            --batches 1,64 --llm-kernels torch --decode-steps 1,4
        step profile_kernels_triton 240 $py bench/profile_stages.py --model-dir $full --dtype bf16 --backend auto \
            --batches 1,64 --llm-kernels triton --decode-steps 1,4
        ;;
    bench)
        step bench_torch 300 $py bench/bench_synthesis.py --model-dir $full --dtype bf16 --backend torch --runs 2
        step bench_auto 420 $py bench/bench_synthesis.py --model-dir $full --dtype bf16 --backend auto --runs 3
        ;;
    *) echo "unknown step $s" >&2 ;;
    esac
done
