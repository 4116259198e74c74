"""The scale-out benchmark's server and Ray parts run at tiny sizes and print every figure they
promise (the embedded part is the real model's minutes: run by hand, figures in the README)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.test_ray_executor import ray_or_skip

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "bench_scale.py"


def test_the_server_and_ray_parts_print_their_figures():
    ray_or_skip()
    done = subprocess.run(
        [
            sys.executable, str(SCRIPT), "--parts", "server,ray", "--latency", "0.2",
            "--llm-concurrency", "1,8", "--images", "3", "--size", "64", "--steps", "2",
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "(0.2 s per answer)" in out
    calls = re.findall(
        r"concurrency +(\d+): 28 LLM calls in ([0-9.]+) s \(at most (\d+) in flight at once\)", out
    )
    assert [(c, peak) for c, _, peak in calls] == [("1", "1"), ("8", "8")]
    serial, concurrent = (float(seconds) for _, seconds, _ in calls)
    assert serial > 28 * 0.2 and concurrent < serial  # 28 answers one by one; then 8 at a time
    assert "3 episode images, demo model, 64x64, 2 steps" in out
    rows = re.findall(r"(local|ray): 3 images, render stage [0-9.]+ s = ([0-9.]+) images/s", out)
    assert [name for name, _ in rows] == ["local", "ray"]
    assert all(float(rate) > 0 for _, rate in rows)
    assert "ray catalog equals local: yes (3 images)" in out
