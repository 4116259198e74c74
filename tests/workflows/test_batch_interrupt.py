"""Ctrl-C while the batch job's workers wait for the LLM: the job stops at once, even with calls
stuck in the backend, records itself as stopped, and keeps the answers that came in (a rerun asks
only for the rest)."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import load_series
from studio.core.errors import LLMInterrupted
from studio.workflows.batch import Selection, run_job
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend

EPISODES = Selection(episodes={(1, 1), (1, 2), (1, 3)}, targets="episodes")


class StuckAfterOne(FakeBackend):
    """Answers the first call; each later one holds its thread until the test ends, whatever
    `cancel()` says, as llama.cpp does while it evaluates a prompt."""

    def __init__(self, stuck_calls: int):
        super().__init__()
        self.lock = threading.Lock()
        self.calls = self.stuck = 0
        self.stuck_calls = stuck_calls
        self.all_stuck = threading.Event()
        self.cancelled = threading.Event()
        self.released = threading.Event()

    def complete(self, request):
        with self.lock:
            self.calls += 1
            if self.calls == 1:
                return super().complete(request)
            self.stuck += 1
            if self.stuck == self.stuck_calls:
                self.all_stuck.set()
        self.released.wait(60)
        raise LLMInterrupted("stopped")

    def cancel(self):
        self.cancelled.set()


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_at_once_and_keeps_the_answers_in(tmp_path, shared_cache):
    series = load_series(SAMPLE_SERIES)[0]
    chat = StuckAfterOne(stuck_calls=2)  # 2 workers: one answer, then both stuck
    fired: list[float] = []

    def ctrl_c() -> None:  # a real SIGINT, as Ctrl-C sends it
        if chat.all_stuck.wait(10):
            fired.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    try:
        with small_studio(tmp_path, shared_cache, chat=chat, llm_concurrency=2) as studio:
            threading.Thread(target=ctrl_c, daemon=True).start()
            with pytest.raises(KeyboardInterrupt):
                run_job(series, EPISODES, studio.settings, studio.llm, studio.images, dry_run=True)
            assert time.monotonic() - fired[0] < 3  # the stuck calls would hold it for 60 s
            assert chat.cancelled.is_set()
            (job,) = studio.store.jobs()
            assert job["status"] == "stopped"
            assert job["failures"] == ["stopped by the user (Ctrl-C)"]
        with small_studio(tmp_path, shared_cache) as studio:
            summary = run_job(
                series, EPISODES, studio.settings, studio.llm, studio.images, dry_run=True
            )
        assert summary.llm_calls == 2 and not summary.failed  # the first answer was kept
    finally:
        chat.released.set()
