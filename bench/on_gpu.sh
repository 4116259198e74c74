#!/usr/bin/env bash
# On a GPU machine: install the carried wheels (bench/gpu_wheels.sh made them) and run the quick
# GPU bench, its log in $OUT (else ./bench-out). `bash bench/on_gpu.sh [ARGS]` passes ARGS on,
# e.g. `--compile-scope regional` or `--fp8`; each run is sized to under 6 minutes on an H100/H200.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-out}
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
name=quick$(printf '%s' "$*" | tr -cs 'A-Za-z0-9' '_')
PYTHONUNBUFFERED=1 python3 bench/bench_gpu.py --quick "$@" 2>&1 | tee "$out/$name.log"
