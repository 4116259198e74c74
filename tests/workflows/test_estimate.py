"""The batch job's estimate before it starts: the LLM calls and renders it counts are the ones
the job then makes, whatever the caches and the catalog hold."""

import sqlite3
from dataclasses import replace

import pytest

from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import load_series
from studio.workflows.batch import Selection, run_job
from studio.workflows.estimate import WorkEstimate, estimate_work
from tests.support.catalogs import small_studio

pytestmark = pytest.mark.slow


def test_the_estimate_counts_what_the_job_then_does(tmp_path, shared_cache):
    series = load_series(SAMPLE_SERIES)[0]
    selection = Selection(seasons={1}, episodes={(1, 1), (1, 2)})
    with small_studio(tmp_path, shared_cache) as studio:
        settings, llm, images = studio.settings, studio.llm, studio.images

        def estimate_then_run(settings=settings, **options):
            estimate = estimate_work(series, selection, settings, llm, images, **options)
            summary = run_job(series, selection, settings, llm, images, **options)
            assert summary.failed == []
            return estimate, summary

        counts = []
        for options, settings_now in [
            ({}, settings),  # nothing cached: every prompt and image
            ({}, settings),  # all cached: nothing
            ({}, replace(settings, steps=3)),  # prompts cached, every image again
            ({"force": True}, settings),  # everything again
            ({"dry_run": True, "force": True}, settings),  # prompts only
        ]:
            estimate, summary = estimate_then_run(settings_now, **options)
            counts.append((estimate.llm_calls, estimate.images))
            assert counts[-1] == (summary.llm_calls, summary.images_rendered), options
        # 5 looks, 2 episodes and a season (6 calls); 5 portraits, 2 episode images, 5 posters
        assert counts == [(13, 12), (0, 0), (0, 12), (13, 12), (13, 0)]
        # A season whose self-ask trace is cached but not its styles: five calls to make.
        db = sqlite3.connect(tmp_path / "catalog.sqlite")
        db.execute(
            "DELETE FROM llm_cache WHERE response LIKE '%\"details\"%' "
            "AND response NOT LIKE '%rationale%'"  # the styles' answers, not the episodes'
        )
        db.commit()
        db.close()
        estimate, summary = estimate_then_run()
        assert estimate.llm_calls == summary.llm_calls == 5


def test_the_estimate_is_one_line_with_a_rough_time():
    line = WorkEstimate(7, 12, 330.0, "the embedded LLM ~13 s a call on 2 cores").line()
    assert line == (
        "To do: 7 LLM calls and 12 images, roughly 6 min (the embedded LLM ~13 s a call on 2 "
        "cores; a rough guess)."
    )
    assert "\n" not in line
    unknown = WorkEstimate(7, 12, 42.0, "the demo model ~4 s an image on cpu", unknown="why")
    assert unknown.line() == (
        "To do: 7 LLM calls and 12 images. The LLM calls' time is not known yet (why; the prompts "
        "bar shows the time left once answers come in); the images roughly 42 s (the demo model "
        "~4 s an image on cpu; a rough guess)."
    )
    assert WorkEstimate(0, 0, 0.0, "").nothing and not WorkEstimate(0, 1, 1.0, "").nothing


def test_a_server_is_timed_by_the_last_job_that_asked_it_and_never_guessed(tmp_path, shared_cache):
    """A local server's speed ranges from a second to a minute a call: with no earlier job that
    asked it, the estimate says the calls' time is unknown instead of guessing; after one, it
    times them by what that job measured."""
    series = load_series(SAMPLE_SERIES)[0]
    selection = Selection(episodes={(1, 1), (1, 2), (1, 3)}, targets="episodes")
    url = "http://127.0.0.1:8765/v1"
    with small_studio(tmp_path, shared_cache, llm_base_url=url) as studio:
        settings, llm, images = studio.settings, studio.llm, studio.images
        first = estimate_work(series, selection, settings, llm, images, dry_run=True)
        assert first.llm_calls == 3 and first.unknown
        assert first.line() == (
            "To do: 3 LLM calls and 0 images. The LLM calls' time is not known yet (no earlier "
            f"batch job in this catalog asked the LLM server `{url}`; the prompts bar shows the "
            "time left once answers come in)."
        )
        summary = run_job(series, selection, settings, llm, images, dry_run=True)
        (job,) = studio.batch_jobs(1)
        assert (job.llm_calls, summary.llm_calls) == (3, 3) and url in job.llm
        each = job.seconds["llm"] / 3
        again = estimate_work(series, selection, settings, llm, images, force=True, dry_run=True)
        assert not again.unknown and again.seconds == pytest.approx(3 * each)
        assert f"a call, as batch job {job.id} measured; a rough guess)." in again.line()
        assert job.llm_concurrency == llm.concurrency
        llm.concurrency += 4  # a run at another number at once says what it is timed by
        other = estimate_work(series, selection, settings, llm, images, force=True, dry_run=True)
        assert other.seconds == pytest.approx(again.seconds)
        assert (
            f"as batch job {job.id} measured with {job.llm_concurrency} at once, "
            f"not {llm.concurrency}; a rough guess)."
        ) in other.line()
        llm.concurrency -= 4
        with_images = estimate_work(series, selection, settings, llm, images, force=True)
        assert with_images.seconds > again.seconds and "the demo model" in with_images.line()


def test_images_drawn_while_a_server_elsewhere_writes_are_timed_as_overlapping(
    tmp_path, shared_cache
):
    series = load_series(SAMPLE_SERIES)[0]
    selection = Selection(episodes={(1, 1), (1, 2), (1, 3)}, targets="episodes")
    elsewhere = {"llm_base_url": "http://llm.example:8765/v1", "llm_concurrency": 1}
    with small_studio(tmp_path, shared_cache, **elsewhere) as studio:
        settings, llm, images = studio.settings, studio.llm, studio.images
        run_job(series, selection, settings, llm, images, dry_run=True)  # times the server
        calls = estimate_work(series, selection, settings, llm, images, force=True, dry_run=True)
        renders = estimate_work(series, selection, settings, llm, images)  # prompts cached
        both = estimate_work(series, selection, settings, llm, images, force=True)
    assert (calls.llm_calls, calls.images, renders.llm_calls, renders.images) == (3, 0, 0, 3)
    assert both.seconds == pytest.approx(max(calls.seconds, renders.seconds) + renders.seconds / 3)
    assert both.line().endswith("; the images drawn while the LLM writes; a rough guess).")
