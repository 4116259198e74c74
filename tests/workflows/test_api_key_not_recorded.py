"""A batch job with OPENAI_API_KEY and OPENAI_BASE_URL only in `.env`: the LLM server and the
OpenAI Images server both get the key, and nothing the job writes holds it (the catalog, its PNGs,
the job log, the log lines), not even when a server refuses it and quotes it back."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from studio.api import Studio
from studio.core.config import SAMPLE_SERIES, load_settings
from studio.core.dataset import load_series
from studio.workflows.batch import Selection, run_job
from tests.support.fakes import FakeImagesAPI, FakeOpenAIServer

KEY = "sk-dotenv-batch-0a7c-never-record-me"


def test_a_key_in_dotenv_is_used_and_never_recorded(tmp_path, caplog):
    series = load_series(SAMPLE_SERIES)[0]
    with FakeOpenAIServer(images=FakeImagesAPI(key=KEY)) as server:
        Path(".env").write_text(f"OPENAI_BASE_URL={server.url}\nOPENAI_API_KEY={KEY}\n")
        settings = load_settings(
            {"image_model": "openai:gpt-image-1", "width": 1024, "height": 1024,
             "characters": "none", "data_dir": tmp_path / "data"}
        )  # fmt: skip
        with caplog.at_level(logging.DEBUG), Studio(settings) as studio:
            selection = Selection(episodes={(1, 1)})
            made = run_job(series, selection, settings, studio.llm, studio.images)
            server.images.key = "sk-another-one"  # now refused, and quoted back by the server
            refused = run_job(series, selection, settings, studio.llm, studio.images, force=True)
            jobs = studio.batch_jobs()
    assert made.images_rendered == 1 and not made.failed
    assert refused.failed and "Incorrect API key provided: ***" in " ".join(refused.failed)
    assert server.bodies  # the LLM server wrote the prompt, with the key from .env
    assert set(server.authorizations) == {f"Bearer {KEY}"}
    assert [call.authorization for call in server.images.calls] == [f"Bearer {KEY}"] * 2

    files = [path for path in (tmp_path / "data").rglob("*") if path.is_file()]
    recorded = {path: path.read_bytes() for path in files}
    assert any(path.suffix == ".png" for path in recorded)
    assert [path for path, data in recorded.items() if KEY.encode() in data] == []
    assert jobs[0].failures and KEY not in repr(jobs)
    assert KEY not in caplog.text and KEY not in repr(settings) + repr(asdict(settings))
