"""The scale-out benchmark's server part runs at a tiny latency and prints every figure it
promises. Its Ray part starts a Ray cluster (about a minute on 2 cores) for what
tests/images/test_ray_executor.py already checks, and the embedded part is the real model's
minutes: both are run by hand, their figures in docs/benchmarks.md."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_scale.py"


def test_the_server_part_prints_its_figures():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--parts", "server", "--latency", "0.2",
         "--llm-concurrency", "1,8"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "(0.2 s per answer)" in out
    calls = re.findall(
        r"concurrency +(\d+): 36 LLM calls in ([0-9.]+) s \(at most (\d+) in flight at once\)", out
    )
    assert [(c, peak) for c, _, peak in calls] == [("1", "1"), ("8", "8")]
    serial, concurrent = (float(seconds) for _, seconds, _ in calls)
    assert serial > 36 * 0.2 and concurrent < serial  # 36 answers one by one; then 8 at a time
