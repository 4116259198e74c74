"""The batch job on a data folder that cannot take a write: the reason names the file and the
fix, goes into the job's record, and what was finished stays."""

import sqlite3

import pytest

from studio.catalog.job_log import JobLog, recent_jobs
from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import load_series
from studio.core.errors import CatalogError
from studio.workflows.batch import Selection, run_job
from tests.support.catalogs import small_studio


@pytest.mark.slow
def test_a_full_catalog_names_it_and_the_job_says_why(tmp_path, shared_cache, monkeypatch):
    series = load_series(SAMPLE_SERIES)[0]
    with small_studio(tmp_path, shared_cache, characters="none") as studio:

        def disk_full(*args, **kwargs):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(studio.store, "add_prompt", disk_full)
        with pytest.raises(CatalogError) as raised:
            run_job(series, Selection(episodes={(1, 1)}), studio.settings, studio.llm,
                    studio.images)  # fmt: skip
        (job,) = recent_jobs(studio.store)
    message = str(raised.value)
    assert message.startswith(
        f"Could not write {tmp_path.resolve() / 'catalog.sqlite'} (database or disk is full): "
        "the disk is full; free some space there, or set data_dir (STUDIO_DATA_DIR)"
    )
    assert job.state == "failed" and job.failures == [message]


def test_the_jobs_last_write_on_a_full_disk_does_not_hide_the_jobs_error(tmp_path):
    from studio.catalog.store import Store

    store = Store(tmp_path)
    log = JobLog(store, "local", "S01E01")

    def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    store.update_job = disk_full
    assert log.finish("failed", failures=["why"]) is False
    store.close()
