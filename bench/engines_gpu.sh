#!/usr/bin/env bash
# The engines' GPU checks, in steps that each fit one 10-minute device command.
#
#   bash bench/engines_gpu.sh STEP [OUT_DIR]     (OUT_DIR default: $OUT, else /tmp/engines-gpu)
#
# STEP: tests | tiny | full | full-ort | bench | all. Exports and engines are cached under
# $COSYFAST_ENGINE_CACHE (/tmp/engines-cache), so on a warm machine later steps reuse what
# earlier ones built. Needs there, besides the image's torch/onnx/onnxruntime/onnxscript/pyyaml/
# tokenizers: a TensorRT package (tensorrt-rtx wheels, carried) for the TensorRT lines, and
# soundfile/soxr if cosyvoice3.demo or pytest's conftest import them.
set -uo pipefail
step=${1:?usage: engines_gpu.sh tests|tiny|full|full-ort|bench|all [OUT_DIR]}
out=${2:-${OUT:-/tmp/engines-gpu}}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 COSYFAST_ENGINE_CACHE=${COSYFAST_ENGINE_CACHE:-/tmp/engines-cache}
py=${PYTHON:-python3}
models=${MODELS:-/tmp/cosyfast-models}
full=(--model-dir "$models/full" --device cuda --modules dit,hift,llm_prefill,llm_decode)

run() {  # name, time limit, command...
    local name=$1 limit=$2
    shift 2
    echo "== $name" >&2
    timeout "$limit" "$@"
    echo "== $name: exit $?" >&2
}

want() { [ "$step" = "$1" ] || [ "$step" = all ]; }

nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv > "$out/gpu.txt"
if want tests; then
    run pytest 300 $py -m pytest -q -m gpu tests/test_engines_torch.py tests/test_engines_trt.py > "$out/pytest_gpu.txt" 2>&1
fi
if want tiny; then
    [ -f "$models/tiny/flow.pt" ] || $py -m cosyvoice3.demo "$models/tiny"
    run check-tiny 300 $py -m engines check --model-dir "$models/tiny" --device cuda > "$out/check_tiny.jsonl"
fi
if want full; then
    [ -f "$models/full/flow.pt" ] || $py -m cosyvoice3.demo "$models/full" --full-size --device cuda
    run check-full 540 $py -m engines check "${full[@]}" --backends torch-cuda,torch-graphs,tensorrt \
        > "$out/check_full.jsonl"
fi
if want full-ort; then  # ONNX Runtime has only its CPU provider there: FP32 (FP16 on a CPU takes minutes)
    run check-full-ort 540 $py -m engines check "${full[@]}" --backends onnxruntime --precisions fp32 \
        > "$out/check_full_ort.jsonl"
fi
if want bench; then
    run bench-full 540 $py bench/engines_bench.py --model-dir "$models/full" --device cuda --skip-modules \
        > "$out/bench_full.jsonl"
fi
