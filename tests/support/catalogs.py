"""The batch job's catalog of the whole sample series, small and fast, for the dashboard's tests."""

from __future__ import annotations

from pathlib import Path

from studio.api import Studio
from studio.core.config import SAMPLE_SERIES, load_settings
from studio.core.dataset import load_series
from studio.workflows.batch import Selection, run_job
from studio.writing.cast import cast_for_job
from tests.support.fakes import FakeBackend

# The dashboard's settings for tests: the demo model at 64x64, 2 steps.
SMALL_ENV = {
    "STUDIO_IMAGE_MODEL": "demo",
    "STUDIO_STEPS": "2",
    "STUDIO_WIDTH": "64",
    "STUDIO_HEIGHT": "64",
}


def small_studio(folder: Path, cache_dir: Path, chat=None, on_status=None, **overrides) -> Studio:
    """A studio on `folder` with the demo model at 64x64 and 2 steps, and a fake LLM backend."""
    settings = load_settings(
        {
            "width": 64,
            "height": 64,
            "steps": 2,
            "data_dir": folder,
            "cache_dir": cache_dir,
            "image_model": "demo",
            "device": "cpu",
            **overrides,
        }
    )
    return Studio(settings, on_status=on_status, chat_backend=chat or FakeBackend())


def build_sample_catalog(folder: Path, cache_dir: Path) -> Path:
    """24 episode images, 2 x 5 season images and a portrait per member of the cast (15), from
    the fake LLM and the demo model."""
    series = load_series(SAMPLE_SERIES)[0]
    with small_studio(folder, cache_dir) as studio:
        summary = run_job(series, Selection(), studio.settings, studio.llm, studio.images)
        expected = 24 + 2 * 5 + len(cast_for_job(series, studio.settings.characters))
    if summary.images_rendered != expected or summary.failed:
        raise AssertionError(f"sample catalog incomplete: {summary}")
    return folder
