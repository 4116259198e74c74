"""The library benchmark runs end to end at tiny sizes and prints every figure it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_library.py"


def run_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow
def test_tiny_run_prints_latency_and_recall():
    done = run_bench("--sizes", "500", "--real", "50", "--queries", "20", "--real-queries", "25")
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "Synthetic vectors: 384-d, clustered" in out
    assert "N = 500" in out
    for label in ("build:", "index file:", "process RSS after build:", "exact (numpy float32"):
        assert label in out, label
    recalls = [float(r) for r in re.findall(r"recall@10 ([0-9.]+)", out)]
    assert len(recalls) == 4  # synthetic search, its exact check, filtered; real search
    assert all(0 <= r <= 1 for r in recalls)
    assert re.search(r"search ef=\d+: p50 [0-9.]+ ms, p95 [0-9.]+ ms", out)
    assert re.search(r"filtered, 50 allowed ids", out)
    assert re.search(r"embedding: [0-9,]+ passages/s", out)
    assert "Real prompts: 50 " in out
    assert "25 queries, 20 in Portuguese/Spanish" in out
    assert "Goal" not in out  # only judged when 1M was run


def test_bad_sizes_are_refused_with_the_value():
    done = run_bench("--sizes", "5", "--real", "0")
    assert done.returncode == 2
    assert "--sizes must be at least 10 (k), got 5" in done.stderr
