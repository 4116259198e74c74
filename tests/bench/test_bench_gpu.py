"""The GPU benchmark runs on the CPU with the demo model's small config and prints every figure
it promises: per dtype, path and batch, and the interactive first-image latency."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.compile

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_gpu.py"


def test_small_cpu_run_prints_every_figure(tmp_path):
    done = subprocess.run(
        [
            sys.executable, str(SCRIPT), "--small", "--device", "cpu", "--dtypes", "fp32",
            "--batches", "1,2", "--steps", "2", "--size", "64", "--repeats", "1",
            "--compile-backend", "eager", "--cache", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "Device: CPU (cpu)" in out and "64x64, 2 steps, CFG 7.5" in out
    assert re.search(r"Versions: torch \S+ .*diffusers \S+", out)
    assert "mode default, scope whole" in out
    assert re.search(r"counted [0-9.e-]+ TFLOP per UNet pass with CFG", out)
    rows = re.findall(
        r"fp32 (eager|fast) +batch +(\d+): ([0-9.]+) images/s, ([0-9.]+) s/image, UNet "
        r"([0-9.]+) it/s, VAE (\d+)%, peak [0-9.]+ GiB, [0-9.e+-]+% of 790 TFLOP/s"
        r"(?:, compile [0-9.]+ s cold)?\n",
        out,
    )
    assert [(path, batch) for path, batch, *_ in rows] == [
        ("eager", "1"), ("eager", "2"), ("fast", "1"), ("fast", "2")
    ]  # fmt: skip
    assert all(float(images) > 0 and 0 <= int(vae) <= 100 for _, _, images, _, _, vae in rows)
    assert re.search(
        r"fast vs eager: max difference \d+ levels \(mean [0-9.]+\), within the tolerance", out
    )
    assert re.search(r"interactive first image: cold [0-9.]+ s \((eager|eager, then compiled)\), "
                     r"warm [0-9.]+ s \(compiled\)", out)  # fmt: skip
    for batch in (1, 2):  # the second process compiles again on the first one's cache
        assert re.search(rf"compile fp32 batch +{batch}: [0-9.]+ s cold, [0-9.]+ s in a second "
                         r"process with the cache", out)  # fmt: skip
