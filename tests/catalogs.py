"""The batch job's catalog of the whole sample series, small and fast, for the dashboard's tests."""

from __future__ import annotations

from pathlib import Path

from studio.batch import Selection, run_job
from studio.config import SAMPLE_SERIES, load_settings
from studio.dataset import load_series
from studio.llm import LLM
from studio.render import Renderer, resolve_image_model
from studio.store import Store
from tests.fakes import FakeBackend

# The dashboard's settings for tests: the demo model at 64x64, 2 steps.
SMALL_ENV = {
    "STUDIO_IMAGE_MODEL": "demo",
    "STUDIO_STEPS": "2",
    "STUDIO_WIDTH": "64",
    "STUDIO_HEIGHT": "64",
}


def build_sample_catalog(folder: Path, cache_dir: Path) -> Path:
    """24 episode images and 2 x 5 season images from the fake LLM and the demo model."""
    settings = load_settings({"width": 64, "height": 64, "steps": 2, "data_dir": folder})
    store = Store(folder)
    llm = LLM(FakeBackend(), store, settings.llm_temperature, settings.llm_seed)
    renderer = Renderer(resolve_image_model("demo", cache_dir), "cpu")
    series = load_series(SAMPLE_SERIES)[0]
    summary = run_job(series, Selection(), settings, llm, renderer, store)
    store.close()
    if summary.images_rendered != 34 or summary.failed:
        raise AssertionError(f"sample catalog incomplete: {summary}")
    return folder
