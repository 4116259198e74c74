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
    assert WorkEstimate(0, 0, 0.0, "").nothing and not WorkEstimate(0, 1, 1.0, "").nothing
