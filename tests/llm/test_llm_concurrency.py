"""The batch job's plan and its concurrent LLM calls: the plan is pure and stable, concurrent
calls give the serial prompts and images, a server's 429s and 500s are retried while the other
calls go on, and a missing LLM stops the job."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import replace

import pytest
from PIL import Image

from studio.core.config import SAMPLE_SERIES, load_settings
from studio.core.dataset import load_series
from studio.core.errors import LLMUnavailableError
from studio.llm.base import ChatRequest
from studio.llm.choice import default_concurrency
from studio.llm.openai_compat import OpenAIBackend
from studio.workflows.batch import Selection, plan_prompts, run_job
from studio.writing.prompting import SELF_ASK_SCHEMA
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend, FakeOpenAIServer

SEASON_ONE = Selection(seasons={1})


@pytest.fixture(scope="module")
def series():
    return load_series(SAMPLE_SERIES)[0]


class JitteryFake(FakeBackend):
    """FakeBackend's answers, each after a random few milliseconds, counting calls in flight."""

    def __init__(self, seed: int):
        super().__init__()
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0

    def complete(self, request):
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            pause = self.random.uniform(0, 0.03)
        time.sleep(pause)
        try:
            return super().complete(request)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_the_plan_is_pure_and_keyed_by_its_content(series):
    settings = load_settings({"characters": "cast"})
    first = plan_prompts(series, SEASON_ONE, settings)
    assert first == plan_prompts(series, SEASON_ONE, settings)  # same input, same keys
    kinds = [task.kind for task in first]
    assert kinds == sorted(kinds, key=["character", "episode", "season"].index)
    assert len({task.key for task in first}) == len(first)
    assert [t.name for t in first if t.kind == "season"] == ["S01"]
    # A changed summary changes that episode's key only; another LLM seed changes them all.
    episode = series.episodes_of(1)[0]
    edited = replace(series, episodes=[
        replace(e, summary=e.summary + " It rains.") if e is episode else e
        for e in series.episodes
    ])  # fmt: skip
    before = {t.name: t.key for t in first}
    after = {t.name: t.key for t in plan_prompts(edited, SEASON_ONE, settings)}
    assert after.keys() == before.keys()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {episode.id}
    reseeded = plan_prompts(series, SEASON_ONE, replace(settings, llm_seed=9))
    assert not {t.key for t in reseeded} & {t.key for t in first}


def catalog_of(studio):
    """Prompts and images by key, with the images' pixels (the PNGs also hold timestamps)."""
    prompts = sorted((p.key, p.spec) for p in studio.store.prompts())
    images = []
    for row in studio.store.images():
        with Image.open(studio.store.image_path(row)) as image:
            images.append((row.cache_key, row.prompt, image.convert("RGB").tobytes()))
    return prompts, sorted(images)


@pytest.mark.slow
def test_concurrent_calls_give_the_serial_prompts_and_images(tmp_path, shared_cache, series):
    results = []
    for concurrency in (1, 8):
        chat = JitteryFake(seed=concurrency)
        with small_studio(
            tmp_path / str(concurrency), shared_cache, chat=chat, llm_concurrency=concurrency
        ) as studio:
            assert studio.llm.concurrency == concurrency
            summary = run_job(series, SEASON_ONE, studio.settings, studio.llm, studio.images)
            assert not summary.failed and summary.llm_calls == len(chat.requests)
            results.append((catalog_of(studio), summary.prompts, chat.max_in_flight))
    (serial, serial_prompts, serial_peak), (concurrent, concurrent_prompts, peak) = results
    assert serial_peak == 1 and peak >= 4  # the calls did overlap
    assert concurrent == serial
    assert concurrent_prompts == serial_prompts  # and in the same order


@pytest.mark.slow
def test_a_server_that_refuses_some_calls_is_retried_while_the_rest_go_on(
    tmp_path, shared_cache, series
):
    selection = Selection(episodes={(1, e) for e in range(1, 7)}, targets="episodes")
    with FakeOpenAIServer(latency=0.05) as server:
        chat = OpenAIBackend("fake-llm", server.url, api_key="x", backoff=0.05, heartbeat=None,
                             concurrency=6, fixed_concurrency=True)  # fmt: skip
        # One call first, so the server's structured-output mode is known: until then a 500
        # means "not this mode"; after, it is a failure to retry.
        chat.complete(ChatRequest((("user", "hello"),), SELF_ASK_SCHEMA))
        with small_studio(tmp_path, shared_cache, chat=chat, llm_concurrency=6) as studio:
            server.fail_next.extend([429, 500, 429, 500])
            summary = run_job(series, selection, studio.settings, studio.llm, studio.images)
    assert not summary.failed and summary.prompts_written == 6 and summary.images_rendered == 6
    assert len(server.bodies) == 1 + 6 + 4  # each refusal was one more try
    assert server.max_in_flight >= 3


def test_no_llm_stops_the_job_with_the_reason(tmp_path, shared_cache, series):
    class Down(FakeBackend):
        def complete(self, request):
            raise LLMUnavailableError("No LLM answered at http://127.0.0.1:9/v1.")

    with small_studio(tmp_path, shared_cache, chat=Down(), llm_concurrency=4) as studio:
        with pytest.raises(LLMUnavailableError, match="No LLM answered"):
            run_job(series, SEASON_ONE, studio.settings, studio.llm, studio.images)
        (job,) = studio.store.jobs()
        assert job["status"] == "failed" and "No LLM answered" in job["failures"][-1]
        assert studio.store.images() == []


def test_the_default_concurrency_follows_the_backend(monkeypatch):
    assert default_concurrency(load_settings({})) == 1  # the embedded model: one slot
    assert default_concurrency(load_settings({"llm_base_url": "http://localhost:8000/v1"})) == 8
    assert default_concurrency(load_settings({"llm_concurrency": 3})) == 3
    monkeypatch.setenv("STUDIO_LLM_CONCURRENCY", "65")
    with pytest.raises(Exception, match="STUDIO_LLM_CONCURRENCY"):
        load_settings({})
