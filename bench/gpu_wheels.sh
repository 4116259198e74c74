#!/usr/bin/env bash
# Download, here, the wheels bench/bench_gpu.py needs on a GPU machine whose image has torch and
# transformers but not diffusers, compel, python-dotenv or torchao (for --fp8): into .whl/, for
# CPython 3.12 on x86-64 Linux, at the versions requirements.txt and the fast path pin.
# Then, on the GPU machine (with .whl carried there): bash bench/on_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -oE "^$1==[^ ]+" requirements.txt; }
torchao=$(grep -oE 'torchao==[0-9.]+' studio/images/backends/diffusers/fast_path.py | head -1)
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    "$(pin diffusers)" "$(pin compel)" "$(pin python-dotenv)" importlib_metadata "$torchao"
ls .whl
