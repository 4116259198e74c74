"""The batch job's flows against the fake LLM and the demo model, at a small size."""

import hashlib

import pytest

from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import load_series
from studio.core.metadata import parse_parameters, read_png_metadata
from studio.workflows.batch import Selection, run_job
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend

SMALL = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture(scope="module")
def series():
    return load_series(SAMPLE_SERIES)[0]


def make(tmp_path, shared_cache, **overrides):
    """Without the characters step unless asked: these tests count episode and season work."""
    studio = small_studio(tmp_path, shared_cache, **{"characters": "none", **overrides})
    return studio.settings, studio.store, studio.llm, studio.images


@pytest.mark.slow
def test_one_season_end_to_end_then_all_cached(tmp_path, shared_cache, series):
    settings, store, llm, images = make(tmp_path, shared_cache, characters="cast")
    selection = Selection(seasons={2})
    first = run_job(series, selection, settings, llm, images)
    episodes = series.episodes_of(2)
    cast = selection.pick_characters(series, "cast")
    assert "Mycroft Holmes" in cast and "Brunton" not in cast  # in the table / in one episode
    assert first.failed == []
    assert first.prompts_written == len(cast) + len(episodes) + 1
    assert first.images_rendered == len(cast) + len(episodes) + 5
    assert first.llm_calls == len(cast) + len(episodes) + 6  # the season: self-ask, 5 styles
    assert {r.style for r in store.images(target="character")} == set(cast)
    for episode in episodes:
        (row,) = store.images(target="episode", season=2, episode=episode.episode)
        png = store.image_path(row).read_bytes()
        assert hashlib.sha256(png).hexdigest() == row["sha256"]
        parameters, provenance = read_png_metadata(png)
        parsed = parse_parameters(parameters)
        assert parsed["Prompt"] == row["prompt"]
        assert parsed["Steps"] == "2" and parsed["Sampler"] == "DPM++ 2M"  # A1111 1.9's way
        assert parsed["Schedule type"] == "Karras" and len(parsed["Model hash"]) == 10
        assert parsed["Seed"] == str(row["seed"]) and parsed["Size-1"] == "64"
        assert parsed["Model"] == "demo-v2 (placeholder)"
        assert provenance["placeholder"] is True
        assert provenance["episode"] == episode.episode and provenance["llm_model"] == "fake-llm"
        assert provenance["template_hash"]
    styles = [r["style"] for r in store.images(target="season", season=2)]
    assert sorted(styles) == sorted(
        ["oil_painting", "film_noir", "watercolor", "art_deco", "anime"]
    )
    (trace_row, *_) = store.prompts(target="season", season=2)
    assert "key events" in trace_row.trace[0]["question"]

    second = run_job(series, selection, settings, llm, images)
    assert (second.llm_calls, second.images_rendered) == (0, 0)
    assert second.prompts_cached == first.prompts_written
    assert second.images_cached == first.images_rendered
    assert second.nothing_done
    assert len(store.images()) == first.images_rendered


@pytest.mark.slow
def test_changed_settings_render_again_and_force_redoes_everything(tmp_path, shared_cache, series):
    settings, store, llm, images = make(tmp_path, shared_cache)
    selection = Selection(episodes={(1, 1)})
    run_job(series, selection, settings, llm, images)
    euler, *_ = make(tmp_path, shared_cache, sampler="Euler")
    changed = run_job(series, selection, euler, llm, images)
    assert (changed.llm_calls, changed.images_rendered) == (0, 1)
    forced = run_job(series, selection, euler, llm, images, force=True)
    assert (forced.llm_calls, forced.images_rendered) == (1, 1)
    assert len(store.images()) == 2  # the forced render replaced its own row


def test_dry_run_writes_prompts_only(tmp_path, shared_cache, series):
    settings, store, llm, images = make(tmp_path, shared_cache)
    summary = run_job(series, Selection(episodes={(1, 2)}), settings, llm, images, dry_run=True)
    assert summary.prompts_written == 1 and summary.images_rendered == 0
    assert store.images() == [] and len(store.prompts()) == 1
    assert summary.prompts[0][0] == "S01E02"


@pytest.mark.slow
def test_images_per_episode_have_their_own_recorded_seeds(tmp_path, shared_cache, series):
    settings, store, llm, images = make(tmp_path, shared_cache, images_per_episode=3)
    run_job(series, Selection(episodes={(1, 3)}), settings, llm, images)
    rows = store.images(target="episode")
    assert [r["image_index"] for r in rows] == [0, 1, 2]
    assert len({r["seed"] for r in rows}) == 3
    assert len({r["sha256"] for r in rows}) == 3


def test_one_failing_episode_does_not_stop_the_job(tmp_path, shared_cache, series):
    settings, store, llm, images = make(tmp_path, shared_cache)
    llm.backend = FakeBackend(bad_answers=["nonsense"] * 3)
    llm.max_repairs = 2
    summary = run_job(
        series,
        Selection(episodes={(1, 4), (1, 5)}, targets="episodes"),
        settings,
        llm,
        images,
        dry_run=True,
    )
    assert len(summary.failed) == 1 and summary.failed[0].startswith("S01E04: ")
    assert summary.prompts_written == 1


@pytest.mark.slow
def test_same_inputs_same_prompts_and_pixels_in_two_folders(tmp_path, shared_cache, series):
    rows = []
    for name in ("a", "b"):
        settings, store, llm, images = make(tmp_path / name, shared_cache)
        run_job(series, Selection(episodes={(2, 1)}), settings, llm, images)
        rows.append(store.images()[0])
    assert rows[0]["prompt"] == rows[1]["prompt"]
    assert rows[0]["sha256"] == rows[1]["sha256"]
