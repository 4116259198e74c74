"""The HTTP API benchmark runs end to end at a tiny size and prints every figure it promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_api.py"


@pytest.mark.slow
def test_a_tiny_run_prints_latency_throughput_and_the_overhead(shared_cache):
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--concurrency", "1,2", "--rounds", "1", "--size", "64",
         "--steps", "2", "--hits", "5", "--cache-dir", str(shared_cache)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "torch " in out and "fastapi " in out  # the versions it ran with
    for clients in (1, 2):
        assert re.search(
            rf"{clients} clients: {clients} images in [0-9.]+ s = [0-9.]+ images/s; latency p50 "
            r"[0-9.]+ s, p95 [0-9.]+ s",
            out,
        ), out
    assert re.search(r"Cache hit over HTTP \(5x.*p50 [0-9.]+ ms, p95 [0-9.]+ ms", out)
    assert re.search(r"open_studio\(\)\.generate\(\): p50 [0-9.]+ ms", out)
    assert re.search(r"HTTP layer overhead on a cache hit: -?[0-9.]+ ms at p50 \(goal < 10 ms", out)


def test_bad_counts_are_refused_with_the_value():
    done = subprocess.run([sys.executable, str(SCRIPT), "--concurrency", "1,x"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "'1,x'" in done.stderr
