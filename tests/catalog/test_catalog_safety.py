"""The catalog never loses images: damaged, empty and foreign files refused, recovery from PNGs,
rows and files written as one unit, orphans swept, read-only folders said plainly."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys

import pytest

from studio.catalog import store as store_module
from studio.catalog.recovery import recover_catalog
from studio.catalog.store import CATALOG_NAME, Store
from studio.cli import dataprep
from studio.core.config import PROJECT_ROOT, SAMPLE_SERIES
from studio.core.dataset import load_series
from studio.core.errors import CatalogError
from studio.core.params import RenderRequest
from studio.llm import client as llm_client
from studio.ui.generate import generate_image
from studio.workflows.batch import Selection, run_job
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend

# 2 episode + 5 season images, and the portraits of the 5 characters of the table in S01E01-02
SELECTION = Selection(seasons={1}, episodes={(1, 1), (1, 2)})
MADE = 12


def make_job(folder, cache_dir):
    studio = small_studio(folder, cache_dir)
    return studio.settings, studio.store, studio.llm, studio.images


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_cache):
    """A catalog with episode, season and Studio images, a cover and a campaign."""
    folder = tmp_path_factory.mktemp("catalog")
    settings, store, llm, images = make_job(folder, shared_cache)
    series = load_series(SAMPLE_SERIES)[0]
    summary = run_job(series, SELECTION, settings, llm, images)
    assert summary.images_rendered == MADE and not summary.failed
    request = RenderRequest("a lighthouse", width=64, height=64, steps=2, seed=3, cfg=7.25)
    generate_image(images, request)
    episode_two = store.images(target="episode", season=1, episode=2)[0]
    store.set_cover(1, 2, episode_two["cache_key"])
    store.save_campaign("c1", "Launch", {"brief": {"platforms": ["x"]}})
    store.close()
    return folder


def snapshot(folder):
    """Everything recovery must give back, without row ids and times."""
    db = sqlite3.connect(folder / CATALOG_NAME)
    db.row_factory = sqlite3.Row
    images = sorted(
        tuple((k, row[k]) for k in row.keys() if k not in {"id", "created_at"})  # noqa: SIM118
        for row in db.execute("SELECT * FROM images")
    )
    prompts = sorted(
        tuple((k, row[k]) for k in row.keys() if k != "created_at")  # noqa: SIM118
        for row in db.execute("SELECT * FROM prompts")
    )
    answers = sorted(
        (r["key"], r["model"], r["response"]) for r in db.execute("SELECT * FROM llm_cache")
    )
    order = [row["cache_key"] for row in db.execute("SELECT cache_key FROM images ORDER BY id")]
    looks = sorted(tuple(row) for row in db.execute("SELECT * FROM characters"))
    db.close()
    return images, prompts, answers, order, looks


@pytest.fixture
def catalog(built, tmp_path):
    folder = tmp_path / "data"
    shutil.copytree(built, folder)
    return folder


def rerun_does_no_model_work(folder, cache_dir):
    settings, store, llm, images = make_job(folder, cache_dir)
    series = load_series(SAMPLE_SERIES)[0]
    summary = run_job(series, SELECTION, settings, llm, images)
    store.close()
    assert (summary.llm_calls, summary.images_rendered, summary.images_cached) == (0, 0, MADE)


@pytest.mark.slow
def test_a_truncated_catalog_is_refused_then_recovered_from_the_pngs(catalog, shared_cache):
    before = snapshot(catalog)
    path = catalog / CATALOG_NAME
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CatalogError) as error:
        Store(catalog)
    assert str(path) in str(error.value) and "dataprep.py --recover" in str(error.value)

    report = recover_catalog(catalog)
    assert report.images == MADE + 1 and not report.unreadable
    # LLM answers: 2 episodes, a season's trace and its 5 styles, 5 looks
    assert report.prompts == 2 + 5 and report.llm_answers == 2 + 6 + 5 and report.characters == 5
    assert report.kept_aside is not None and report.kept_aside.is_file()
    assert snapshot(catalog) == before  # the same images (in order), prompts and LLM answers
    rerun_does_no_model_work(catalog, shared_cache)


def test_an_empty_catalog_beside_images_is_never_taken_as_new(catalog, shared_cache, capsys):
    before = snapshot(catalog)
    (catalog / CATALOG_NAME).write_bytes(b"")
    code = dataprep.main(["--out", str(catalog), "--image-model", "demo"])
    err = capsys.readouterr().err
    assert code == 2
    assert "is empty (0 bytes), but 13 images are in" in err and "--recover" in err
    assert "Traceback" not in err
    assert (catalog / CATALOG_NAME).stat().st_size == 0  # nothing was written over it

    assert dataprep.main(["--out", str(catalog), "--recover"]) == 0
    err = capsys.readouterr().err
    assert "Images recovered: 13" in err and "kept at" in err
    assert snapshot(catalog) == before


def test_recovery_salvages_covers_and_campaigns_a_readable_old_file_still_has(catalog):
    # A catalog whose images table lost its rows but whose other tables are intact.
    db = sqlite3.connect(catalog / CATALOG_NAME)
    db.execute("DELETE FROM images")
    db.commit()
    db.close()
    report = recover_catalog(catalog)
    assert report.salvaged == {"covers": 1, "campaigns": 1}
    store = Store(catalog)
    assert store.campaign("c1") == {"brief": {"platforms": ["x"]}}
    assert store.episode_covers(1)[2]["cache_key"] == store.cover_keys(1)[2]


def test_a_missing_catalog_beside_images_is_refused(catalog):
    (catalog / CATALOG_NAME).unlink()
    with pytest.raises(CatalogError, match="is missing, but 13 images are in"):
        Store(catalog)


def test_a_foreign_database_is_left_alone(tmp_path):
    path = tmp_path / CATALOG_NAME
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE notes (body TEXT)")
    db.commit()
    db.close()
    content = path.read_bytes()
    with pytest.raises(CatalogError, match="is not a series studio catalog .*notes"):
        Store(tmp_path)
    assert path.read_bytes() == content


def test_opening_adopts_orphan_pngs_and_drops_rows_without_files(catalog):
    store = Store(catalog)
    first, second = store.images()[:2]
    store.close()
    db = sqlite3.connect(catalog / CATALOG_NAME)
    db.execute("DELETE FROM images WHERE cache_key = ?", (first["cache_key"],))
    db.commit()
    db.close()
    (catalog / second["path"]).unlink()
    store = Store(catalog)
    assert (store.opened.adopted, store.opened.dropped) == (1, 1)
    assert store.find_image(first["cache_key"])["prompt"] == first["prompt"]
    assert store.find_image(second["cache_key"]) is None
    assert len(store.images()) == MADE


def test_a_failed_file_write_leaves_no_row(tmp_path, monkeypatch, built):
    store = Store(tmp_path)
    record = Store(built).images()[0]

    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module, "atomic_write", full_disk)
    with pytest.raises(OSError):
        store.add_image(record, b"png")
    assert store.images() == []


def test_image_files_get_the_same_permissions_as_the_catalog(built):
    png = next((built / "images").rglob("*.png"))
    catalog_mode = stat.S_IMODE((built / CATALOG_NAME).stat().st_mode)
    assert stat.S_IMODE(png.stat().st_mode) == catalog_mode


def test_a_read_only_data_folder_is_one_clear_line(tmp_path):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    command = [sys.executable, "dataprep.py", "--out", str(folder), "--dry-run"]
    if os.geteuid() == 0:  # root writes anywhere: drop the capability that lets it
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", *command]
    env = {**os.environ, "STUDIO_IMAGE_MODEL": "demo"}
    result = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert f"The data folder {folder} cannot be written (Permission denied)" in result.stderr
    assert "Set --out (STUDIO_DATA_DIR) to a folder you can write" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(autouse=True)
def no_llm_server(monkeypatch):
    backend = FakeBackend()
    monkeypatch.setattr(llm_client, "make_backend", lambda settings, *a, **k: backend)


def test_episode_ids_the_series_lacks_are_said(tmp_path, capsys):
    code = dataprep.main(["--out", str(tmp_path), "--episodes", "S9E9", "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Nothing to make: --episodes S09E09: no such episode in the series" in err
    assert "S01E01-S01E12" in err
    code = dataprep.main(
        [
            "--out",
            str(tmp_path),
            "--episodes",
            "S9E9,S1E1",
            "--dry-run",
            "--image-model",
            "demo",
            "--characters",
            "none",
        ]  # fmt: skip
    )
    err = capsys.readouterr().err
    assert code == 0
    assert "WARNING: --episodes S09E09: no such episode" in err
    assert "Prompts: 1 written" in err
