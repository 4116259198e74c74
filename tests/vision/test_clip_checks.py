"""CLIP checks (studio.clip_checks) with the tiny random CLIP model, loaded by the real code:
scores against the prompt kept in the catalog, candidates ranked by them, zero-shot labels, the
failure-mode flag, a CLIP model that fails to load, and the Gallery's CLIP tab."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.cli import dataprep
from studio.core.config import SAMPLE_SERIES, load_settings
from studio.core.dataset import load_series
from studio.core.errors import ConfigError, ParameterError
from studio.vision.checks import (
    FAILURE_LABELS,
    FLAG_MARGIN,
    NEUTRAL_LABEL,
    ClipChecks,
    check_labels,
    failure_check,
    softmax,
)
from studio.vision.clip import build_demo_clip, open_clip
from studio.workflows.batch import Selection, derive_seed, run_job
from tests.support.apptests import errors, run
from tests.support.catalogs import small_studio
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

EPISODE = (1, 1)
CANDIDATES = 3


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    return build_demo_clip(tmp_path_factory.mktemp("clip") / "demo-clip")


@pytest.fixture(scope="module")
def ranked(tmp_path_factory, shared_cache, clip_folder):
    """One episode rendered with 3 candidates and the CLIP model set: (studio, summary)."""
    series = load_series(SAMPLE_SERIES)[0]
    folder = tmp_path_factory.mktemp("ranked")
    with small_studio(
        folder / "data", shared_cache, clip_model=str(clip_folder), candidates=CANDIDATES,
        characters="none",
    ) as studio:  # fmt: skip
        summary = run_job(series, Selection(episodes={EPISODE}), studio.settings, studio.llm,
                          studio.images)  # fmt: skip
        yield studio, summary


def episode_rows(studio):
    return studio.store.images(target="episode", season=EPISODE[0], episode=EPISODE[1])


@pytest.mark.slow
def test_every_candidate_is_kept_scored_and_the_best_is_the_cover(ranked, clip_folder):
    studio, summary = ranked
    assert summary.failed == [] and summary.images_rendered == CANDIDATES
    rows = episode_rows(studio)
    assert [row.image_index for row in rows] == list(range(CANDIDATES))
    seed = studio.settings.seed
    assert [row.seed for row in rows] == [derive_seed(seed, "S01E01", i) for i in range(3)]
    stored = studio.store.scores([row.cache_key for row in rows], str(clip_folder), "prompt")
    cosines = [stored[row.cache_key][("prompt", row.prompt)] for row in rows]
    # the stored scores are CLIP's cosines, as a fresh copy of the model computes them
    fresh = open_clip(str(clip_folder))
    pictures = [Image.open(studio.store.image_path(row)) for row in rows]
    expected = fresh.images(pictures) @ fresh.texts([rows[0].prompt])[0]
    np.testing.assert_allclose(cosines, expected, atol=1e-5)
    assert len(set(np.round(cosines, 6))) == CANDIDATES  # distinct: the ranking means something
    # the cover is the argmax of the stored scores
    cover = studio.store.cover_keys(EPISODE[0])[EPISODE[1]]
    assert cover == rows[int(np.argmax(cosines))].cache_key
    assert studio.store.episode_covers(EPISODE[0])[EPISODE[1]].cache_key == cover
    assert any("best of each episode's 3 candidates by CLIP score" in n for n in summary.notes)
    report = studio.clip_scores(cover)
    assert report.score == pytest.approx(100 * max(cosines))
    assert set(stored) == {row.cache_key for row in rows}


def test_scores_are_kept_once_per_image_and_model(ranked, clip_folder, monkeypatch):
    studio, _ = ranked
    rows = episode_rows(studio)
    fresh = ClipChecks(studio.store, str(clip_folder))
    reports = fresh.stored_reports(rows)
    assert len(reports) == CANDIDATES and "model" not in fresh.__dict__  # read, not loaded
    assert reports == studio.clip_checks.reports(rows)

    def no_model_work(*args, **kwargs):
        raise AssertionError("a kept score was computed again")

    monkeypatch.setattr(studio.clip_checks.model, "images", no_model_work)
    assert studio.clip_scores(rows[0].cache_key) == reports[rows[0].cache_key]
    # another CLIP model is another vector space: its scores are its own
    assert ClipChecks(studio.store, "other/clip").stored_reports(rows) == {}


def test_an_old_image_is_scored_on_demand(tmp_path, shared_cache, clip_folder):
    with small_studio(tmp_path / "data", shared_cache) as plain:
        made = plain.generate("a lighthouse at dusk", seed=3)
    with small_studio(tmp_path / "data", shared_cache, clip_model=str(clip_folder)) as studio:
        checks = studio.clip_checks
        record = studio.store.find_image(made.key)
        assert checks.stored_reports([record]) == {}
        assert studio.score_catalog() == 1
        assert studio.score_catalog() == 0
        report = checks.stored_reports([record])[made.key]
        picture = Image.open(made.path)
        expected = checks.model.images([picture])[0] @ checks.model.texts([record.prompt])[0]
        assert report.cosine == pytest.approx(float(expected), abs=1e-5)


def test_zero_shot_labels_are_probabilities_that_follow_the_cosines(ranked, clip_folder):
    studio, _ = ranked
    row = episode_rows(studio)[0]
    labels = ["a chihuahua", "a muffin", "a detective in the fog"]
    scores = studio.zero_shot(row.cache_key, labels)
    assert [s.label for s in scores] == labels
    probabilities = np.array([s.probability for s in scores])
    assert probabilities.sum() == pytest.approx(1.0) and (probabilities > 0).all()
    model = studio.clip_checks.model
    cosines = model.texts(labels) @ model.images([Image.open(studio.store.image_path(row))])[0]
    np.testing.assert_allclose([s.cosine for s in scores], cosines, atol=1e-5)
    np.testing.assert_allclose(probabilities, softmax(model.logit_scale * cosines), atol=1e-6)
    kept = studio.store.scores([row.cache_key], str(clip_folder), "label")[row.cache_key]
    assert set(kept) == {("label", label) for label in labels}
    # deterministic: a fresh model gives the same numbers, for a picture outside the catalog too
    again = ClipChecks(studio.store, str(clip_folder)).zero_shot(row, labels)
    np.testing.assert_allclose([s.probability for s in again], probabilities, atol=1e-6)
    picture = Image.open(studio.store.image_path(row))
    outside = studio.zero_shot(picture, ["  a muffin ", "", "a chihuahua", "a muffin"])
    assert [s.label for s in outside] == ["a muffin", "a chihuahua"]
    assert outside[1].probability == pytest.approx(
        float(softmax(model.logit_scale * cosines[:2])[0]), abs=1e-6
    )


@pytest.mark.parametrize(
    ("labels", "count"), [(["a muffin"], 1), (["", "  "], 0), ([f"l{i}" for i in range(21)], 21)]
)
def test_zero_shot_needs_two_to_twenty_labels(labels, count):
    with pytest.raises(ParameterError, match=f"give 2 to 20 different labels .* not {count}"):
        check_labels(labels)


def cosines_with(neutral: float, **failures: float) -> dict[str, float]:
    values = {label: 0.0 for label in FAILURE_LABELS}
    values.update({FAILURE_LABELS[int(index[1:])]: value for index, value in failures.items()})
    return {**values, NEUTRAL_LABEL: neutral}


def test_the_failure_flag_needs_a_failure_label_to_win_by_the_margin():
    flagged = failure_check(cosines_with(0.20, f0=0.20 + FLAG_MARGIN + 0.001, f1=0.21))
    assert flagged.flagged and flagged.label == FAILURE_LABELS[0]
    assert flagged.margin == pytest.approx(FLAG_MARGIN + 0.001)
    close = failure_check(cosines_with(0.20, f2=0.20 + FLAG_MARGIN - 0.001))
    assert not close.flagged and close.label == FAILURE_LABELS[2]
    neutral_wins = failure_check(cosines_with(0.30, f1=0.25))
    assert not neutral_wins.flagged and neutral_wins.margin == pytest.approx(-0.05)
    with pytest.raises(ValueError, match="no cosine"):
        failure_check({NEUTRAL_LABEL: 0.2})


def test_stored_failure_scores_flag_an_image_card(ranked, clip_folder):
    studio, _ = ranked
    row = studio.generate("a detective with a pipe", seed=11)
    key, name = row.key, str(clip_folder)
    store = studio.store
    store._db.execute("DELETE FROM image_scores WHERE cache_key = ?", (key,))
    rows = [(key, "failure", label, cosine) for label, cosine in
            cosines_with(0.1, f3=0.1 + 2 * FLAG_MARGIN).items()]  # fmt: skip
    store.add_scores(name, [*rows, (key, "prompt", row.record.prompt, 0.31)])
    report = studio.clip_scores(key)
    assert report.failure.flagged and report.failure.label == FAILURE_LABELS[3]
    assert report.score == pytest.approx(31.0)


def broken_clip(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_a_clip_model_that_fails_to_load_leaves_the_images_made(tmp_path, shared_cache):
    broken = broken_clip(tmp_path / "not-clip")
    series = load_series(SAMPLE_SERIES)[0]
    with small_studio(
        tmp_path / "data", shared_cache, clip_model=str(broken), candidates=2, characters="none"
    ) as studio:  # fmt: skip
        made = studio.generate("a lighthouse at dusk", seed=1)
        assert made.path.is_file() and studio.store.find_image(made.key) is not None
        assert "STUDIO_CLIP_MODEL" in studio.clip_checks.problem
        with pytest.raises(ConfigError, match=r"clip_model \(STUDIO_CLIP_MODEL\)"):
            studio.clip_scores(made.key)
        summary = run_job(series, Selection(episodes={EPISODE}), studio.settings, studio.llm,
                          studio.images)  # fmt: skip
        assert summary.images_rendered == 2 and len(episode_rows(studio)) == 2
        (failure,) = summary.failed
        assert failure.startswith("covers not ranked") and "STUDIO_CLIP_MODEL" in failure
        assert studio.store.cover_keys(EPISODE[0]) == {}
        assert studio.store.scores([made.key], str(broken)) == {}


def test_candidates_without_a_clip_model_are_refused(tmp_path, capsys, monkeypatch):
    with pytest.raises(ConfigError, match=r"`candidates` 3 .* clip_model \(STUDIO_CLIP_MODEL\)"):
        load_settings({"candidates": 3})
    for bad in (0, 17):
        with pytest.raises(ConfigError, match=f"between 1 and 16 but is {bad}"):
            load_settings({"candidates": bad, "clip_model": "x"})
    monkeypatch.setenv("STUDIO_CANDIDATES", "4")
    monkeypatch.setenv("STUDIO_CLIP_MODEL", "some/clip")
    assert load_settings().candidates == 4
    monkeypatch.delenv("STUDIO_CLIP_MODEL")
    assert dataprep.main(["--candidates", "2", "--out", str(tmp_path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "Set by --candidates" in err and "--clip-model (STUDIO_CLIP_MODEL)" in err


# The Gallery's CLIP tab ------------------------------------------------------------------------


@pytest.mark.slow
def test_the_gallery_scores_typed_labels_and_shows_clip_scores(
    ranked,
    clip_folder,
    app_env,  # noqa: F811
    monkeypatch,
):
    studio, _ = ranked
    shutil.copytree(studio.store.data_dir, app_env)
    monkeypatch.setenv("STUDIO_CLIP_MODEL", str(clip_folder))
    at = open_page("pages/gallery.py")
    assert not at.error, errors(at)
    assert any(c.value.startswith("CLIP score ") for c in at.caption)  # on the image cards
    (metric,) = [m for m in at.metric if m.label == "CLIP score against its prompt"]
    newest = studio.store.images()[-1]
    assert float(metric.value) == pytest.approx(studio.clip_scores(newest).score, abs=0.05)
    at.text_area(key="ga_clip_labels").set_value("a chihuahua\na muffin\na lighthouse")
    at.button(key="ga_clip_score").click()
    run(at)
    assert not at.error, errors(at)
    frame = at.dataframe[0].value
    assert list(frame.index) == ["a chihuahua", "a muffin", "a lighthouse"]
    assert frame["probability"].sum() == pytest.approx(1.0)
    expected = studio.zero_shot(newest, ["a chihuahua", "a muffin", "a lighthouse"])
    np.testing.assert_allclose(frame["probability"], [s.probability for s in expected], atol=1e-6)


def test_the_gallery_says_which_setting_when_clip_fails_to_load(
    ranked,
    app_env,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    studio, _ = ranked
    shutil.copytree(studio.store.data_dir, app_env)
    monkeypatch.setenv("STUDIO_CLIP_MODEL", str(broken_clip(tmp_path / "not-clip")))
    at = open_page("pages/gallery.py")
    (error,) = errors(at)
    assert error.startswith("CLIP checks failed") and "STUDIO_CLIP_MODEL" in error
    assert len(at.get("image")) >= CANDIDATES  # the catalog's cards are still there
