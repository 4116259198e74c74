"""The Batch jobs page: a finished run's counts and time by stage, a killed run read as stopped,
a running one, failures with their reasons, and an empty catalog explained."""

import os
import subprocess
import sys

import pytest

from studio.catalog.store import Store
from tests.ui.test_dashboard import app_env, catalog, open_page  # noqa: F401 - fixtures

PAGE = "pages/jobs.py"


def texts(at) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [s.value for s in at.subheader] + [w.value for w in at.warning]
    return "\n".join(parts)


@pytest.mark.slow
def test_the_sample_run_shows_its_counts_and_where_the_time_went(catalog):  # noqa: F811
    at = open_page(PAGE)
    assert not at.exception and not at.error
    assert "finished" in at.subheader[0].value
    assert "the whole series" in texts(at) and "local executor" in texts(at)
    labels = [m.label for m in at.metric]
    assert {"Time: LLM", "Time: render", "Time: write"} <= set(labels)
    assert "Prompt quality" in texts(at)  # the scored check of the run's prompts
    quality = {m.label: m.value for m in at.metric}
    assert quality["Over CLIP's 77 tokens"] == "0" and quality["Non-English words"] == "0"


@pytest.mark.slow
def test_a_killed_run_reads_as_stopped_and_failures_say_why(app_env):  # noqa: F811
    store = Store(app_env)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    import socket

    old = store.start_job("local", "seasons 1", socket.gethostname(), int(dead))
    store.update_job(old, stage="images", prompts_done=13, prompts_total=13, images_total=13,
                     images_done=4, failures=["S01E03: the LLM gave no valid answer"])  # fmt: skip
    store.close()
    at = open_page(PAGE)
    assert not at.exception
    assert "stopped" in at.subheader[0].value
    assert any("resumes" in w.value for w in at.warning)
    assert any("1 failed" in e.value for e in at.error)
    (table,) = at.dataframe
    assert table.value.iloc[0, 0] == "S01E03: the LLM gave no valid answer"
    bars = [p.value for p in at.get("progress")]
    assert len(bars) == 2


def test_a_running_job_is_shown_running(app_env):  # noqa: F811
    import socket

    store = Store(app_env)
    store.start_job("ray", "S01E01", socket.gethostname(), os.getpid())  # this process: alive
    finished = store.start_job("local", "the whole series", socket.gethostname(), os.getpid())
    store.update_job(finished, status="finished", stage="done")
    server = "OpenAI-compatible server `http://127.0.0.1:8765/v1` (the model it serves)"
    running = store.start_job("ray", "seasons 2", socket.gethostname(), os.getpid(), server, 8)
    store.update_job(running, prompts_done=3, prompts_total=10, llm_calls=4, seconds={"llm": 48})
    store.close()
    at = open_page(PAGE)
    assert not at.exception
    assert "running" in at.subheader[0].value and "ray executor" in texts(at)
    assert f"LLM: {server} · 4 calls, 12.0 s a call · 8 at once" in texts(at)
    assert len(at.dataframe) == 1  # the earlier runs


@pytest.mark.slow
def test_an_empty_catalog_says_how_to_start_one(app_env):  # noqa: F811
    at = open_page(PAGE)
    assert not at.exception and not at.error
    assert "python dataprep.py" in at.info[0].value
