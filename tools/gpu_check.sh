#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the GPU-marked tests (tests/gpu: device choice,
# float16/bfloat16 loads, sweeps, scans and attribution on the GPU against the CPU and against
# TransformerLens there) and the patching bench's 12-layer rows on the GPU.
#
#   tools/gpu_check.sh [OUT_DIR]
#
# On a machine whose Python lacks transformer_lens (and its pure-Python needs), put their wheels
# in .whl/ first; they are installed into /tmp/site for this run only.
set -o pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/lensbench-gpu}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
if ! "$py" -c "import transformer_lens" 2>/dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
"$py" -c "import torch, transformers; print('torch', torch.__version__, 'transformers',
transformers.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$out/gpu.txt"
timeout "${TEST_LIMIT:-300}" "$py" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rs 2>&1 \
    | tee "$out/gpu_tests.log"
tests=$?
timeout "${BENCH_LIMIT:-200}" "$py" bench/bench_patching.py --device cuda --only big \
    --arch gpt2,gpt_neox,llama --where first --repeats-big 3 --tl-block-max-forwards 1000 2>&1 \
    | grep -v "it/s\]" | tee "$out/gpu_bench.log"
exit $tests
