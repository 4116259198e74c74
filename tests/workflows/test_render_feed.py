"""The batch job draws each prompt's images while an LLM server elsewhere is still writing the
others (studio.workflows.render_feed): the first images come before the last answer, with the
same prompts and pixels as a run that drew them all afterwards, as it does where the embedded LLM
and the renders would share this CPU; Ctrl-C or a failed write ends the renders too, and what
was stored stays."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest
from PIL import Image

from studio.catalog.job_log import recent_jobs
from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import load_series
from studio.core.errors import CatalogError
from studio.workflows.batch import Selection, run_job
from studio.workflows.render_feed import draws_alongside
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend

TWO_EPISODES = Selection(episodes={(1, 1), (1, 2)})
# An LLM server on another machine (the fake answers for it): the renders go alongside its calls.
ELSEWHERE = {"llm_base_url": "http://llm.example:8000/v1", "llm_concurrency": 1}


class WaitsForAnImage(FakeBackend):
    """Answers like FakeBackend, but its episode calls after the first wait (up to 30 s) for
    `drawn`: only a job that draws images while it asks gets them answered at once."""

    def __init__(self, drawn: threading.Event):
        super().__init__()
        self.drawn = drawn
        self.episode_calls = 0
        self.waited: list[float] = []
        self.released = 0

    def release(self):  # what the embedded model frees before renders on its CPU
        self.released += 1

    def complete(self, request):
        if "rationale" in request.schema.get("properties", {}):  # an episode's prompt
            self.episode_calls += 1
            if self.episode_calls > 1:
                started = time.monotonic()
                self.drawn.wait(30)
                self.waited.append(time.monotonic() - started)
        return super().complete(request)


def _watch_images(studio, on_image):
    """Call `on_image(record)` after each image the catalog stores."""
    add_image = studio.store.add_image

    def watched(record, *args, **kwargs):
        stored = add_image(record, *args, **kwargs)
        on_image(record)
        return stored

    studio.store.add_image = watched


def test_an_episodes_images_are_drawn_while_a_server_llm_writes_the_next(tmp_path, shared_cache):
    series = load_series(SAMPLE_SERIES)[0]
    episode_drawn = threading.Event()
    chat = WaitsForAnImage(episode_drawn)
    with small_studio(tmp_path / "a", shared_cache, chat=chat, **ELSEWHERE) as studio:
        assert draws_alongside(studio.settings, studio.images)
        _watch_images(studio, lambda record: record.target == "episode" and episode_drawn.set())
        summary = run_job(series, TWO_EPISODES, studio.settings, studio.llm, studio.images)
        drawn = {r.job.request.seed: Image.open(r.path).tobytes() for r in summary.results}
    assert chat.episode_calls == 2 and chat.waited and chat.waited[0] < 20
    assert not summary.failed and summary.images_rendered == len(summary.results) == 7
    assert summary.alongside  # and the CLI says its stages overlapped
    assert chat.released == 0  # the LLM is elsewhere: nothing of it to free here
    kinds = [result.job.target.kind for result in summary.results]
    portraits = kinds.count("character")
    assert portraits and set(kinds[:portraits]) == {"character"}  # portraits first

    # The embedded LLM and the renders on this CPU: every image after the last answer, the LLM
    # freed in between (its idle threads would slow the renders), and the same prompts and pixels.
    calls: list[float] = []
    released: list[float] = []
    images: list[float] = []

    class Timed(FakeBackend):
        def complete(self, request):
            calls.append(time.monotonic())
            return super().complete(request)

        def release(self):
            released.append(time.monotonic())

    with small_studio(tmp_path / "b", shared_cache, chat=Timed(), llm_concurrency=1) as studio:
        assert not draws_alongside(studio.settings, studio.images)
        _watch_images(studio, lambda record: images.append(time.monotonic()))
        after = run_job(series, TWO_EPISODES, studio.settings, studio.llm, studio.images)
        redrawn = {r.job.request.seed: Image.open(r.path).tobytes() for r in after.results}
    assert len(calls) == after.llm_calls > 0 and min(images) > max(calls)
    assert len(released) == 1 and max(calls) <= released[0] <= min(images)
    assert not after.alongside
    assert after.prompts == summary.prompts
    assert redrawn == drawn


def test_images_go_alongside_the_llm_unless_both_would_use_this_cpu(tmp_path, shared_cache):
    with small_studio(tmp_path, shared_cache) as studio:
        settings, images = studio.settings, studio.images
        assert images.backend.device == "cpu"
        on_gpu = SimpleNamespace(backend=SimpleNamespace(device="cuda"))
        ray = SimpleNamespace(name="ray")

        def alongside(base_url: str, **where) -> bool:
            return draws_alongside(replace(settings, llm_base_url=base_url), **where)

        assert not alongside("", images=images)  # the embedded model on the CPU (this build)
        assert not alongside("http://127.0.0.1:8080/v1", images=images)
        assert not alongside("http://localhost:11434/v1", images=images)
        assert not alongside("http://[::1]:8000/v1", images=images)
        assert alongside("http://llm.example:8000/v1", images=images)
        assert alongside("https://api.openai.com/v1", images=images)
        assert alongside("", images=on_gpu)
        assert alongside("http://127.0.0.1:8080/v1", images=images, executor=ray)


@pytest.mark.slow
def test_ctrl_c_while_images_are_drawn_stops_the_render_and_keeps_the_images(
    tmp_path, shared_cache
):
    series = load_series(SAMPLE_SERIES)[0]
    first_image = threading.Event()
    fired: list[float] = []

    def ctrl_c() -> None:  # a real SIGINT, as Ctrl-C sends it
        if first_image.wait(60):
            fired.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

    selection = Selection(seasons={1}, targets="episodes")  # 12 episodes, 12 images
    slow = {"steps": 40, "width": 128, "height": 128}  # about a second an image
    with small_studio(tmp_path, shared_cache, characters="none", **slow) as studio:
        _watch_images(studio, lambda record: first_image.set())
        threading.Thread(target=ctrl_c, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run_job(series, selection, studio.settings, studio.llm, studio.images)
        stopped_in = time.monotonic() - fired[0]
        (job,) = recent_jobs(studio.store)
        kept = len(studio.store.images())
    assert stopped_in < 3  # the render in progress ends at its next step
    assert job.state == "stopped" and job.failures == ["stopped by the user (Ctrl-C)"]
    assert 1 <= kept < 12 and job.images_done == kept
    with small_studio(tmp_path, shared_cache, characters="none", **slow) as studio:
        rerun = run_job(series, selection, studio.settings, studio.llm, studio.images)
    assert rerun.images_cached == kept and rerun.images_rendered == 12 - kept
    assert rerun.llm_calls == 0 and not rerun.failed


def test_a_catalog_that_cannot_take_an_image_fails_the_job_and_stops_the_llm(
    tmp_path, shared_cache
):
    series = load_series(SAMPLE_SERIES)[0]
    selection = Selection(seasons={1}, targets="episodes")
    tried = threading.Event()
    chat = WaitsForAnImage(tried)
    with small_studio(tmp_path, shared_cache, chat=chat, characters="none", **ELSEWHERE) as studio:

        def disk_full(*args, **kwargs):
            tried.set()
            raise sqlite3.OperationalError("database or disk is full")

        studio.store.add_image = disk_full
        with pytest.raises(CatalogError) as raised:
            run_job(series, selection, studio.settings, studio.llm, studio.images)
        (job,) = recent_jobs(studio.store)
        asked = studio.llm.calls
    assert "(database or disk is full): the disk is full" in str(raised.value)
    assert job.state == "failed" and job.failures == [str(raised.value)]
    assert asked < 12  # the job stopped asking once a write failed
