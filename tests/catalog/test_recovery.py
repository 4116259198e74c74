"""`--recover` rebuilds everything the PNGs carry: a denoising strip (its row is in the strip
PNG), a storyboard (its moments from the panels' provenance, so the Episodes page finds it) and a
prompt interpolation (its blended frames, found cached), with the demo model and the fake LLM."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.catalog.recovery import recover_catalog
from studio.catalog.store import CATALOG_NAME
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend

ENDS = ("a lighthouse at night", "a violin on a table")


def listed(studio, image_key: str) -> dict:
    """What the pages list of the catalog: its images, the image's strip, the storyboard."""
    strip = studio.stored_strip(image_key, 1, "vae")
    board = studio.stored_storyboard(1, 3)
    return {
        "images": sorted(
            (i.cache_key, i.path, i.target, i.season, i.episode, i.image_index, i.request)
            for i in studio.store.images()
        ),
        "strip": None
        if strip is None
        else (
            strip.cache_key,
            strip.every,
            strip.decoder,
            strip.steps,
            strip.total,
            strip.frame_size,
            strip.columns,
            strip.path,
            strip.max_difference,
            strip.png(),
        ),  # fmt: skip
        "storyboard": None
        if board is None
        else (
            board.key,
            [
                (m.key, m.target, m.spec.prompt, m.spec.negative_prompt, m.spec.rationale, m.trace)
                for m in board.moments
            ],
            [None if i is None else i.cache_key for i in board.images],
        ),  # fmt: skip
    }


@pytest.mark.slow
def test_recover_brings_back_strips_storyboards_and_interpolations(tmp_path, shared_cache):
    data = tmp_path / "data"
    with small_studio(data, shared_cache, chat=FakeBackend()) as studio:
        made = studio.generate("a red door in the fog", seed=2)
        strip = studio.denoising_strip(made.record, every=1)  # a re-render: max_difference 0
        assert strip.max_difference == 0
        board = studio.storyboard(1, 3)
        assert board.complete
        frames = studio.interpolate(*ENDS, 3, seed=5)
        before = listed(studio, made.key)
    assert before["strip"] is not None and before["storyboard"] is not None
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data / CATALOG_NAME}{suffix}").unlink(missing_ok=True)

    report = recover_catalog(data)
    assert report.strips == 1 and report.kept_aside is None and not report.unreadable
    assert report.images == len(before["images"])

    chat = FakeBackend()
    with small_studio(data, shared_cache, chat=chat) as studio:
        assert listed(studio, made.key) == before
        again = studio.interpolate(*ENDS, 3, seed=5)
        assert [r.key for r in again.results] == [r.key for r in frames.results]
        assert all(result.cached for result in again.results)  # the blended frame too
        assert again.results[1].job.request.blend == 0.5
        calls = studio.llm.calls
        assert studio.storyboard(1, 3).key == board.key and studio.llm.calls == calls  # cached
