"""Tests run offline, on the CPU, in temporary folders; nothing touches the home folder.

The quick tier is `python -m pytest -m "not slow"`: a test is slow when it carries `slow` or a
resource marker (`llm_model`, `ray`, `browser`, `postgres`, `compile`, `e2e`; registered in
pytest.ini), or when it uses the sample catalog (a whole batch job, made once per session).
"""

from __future__ import annotations

import pytest

from tests.support.fakes import FakeBackend

RESOURCE_MARKERS = ("llm_model", "ray", "browser", "postgres", "compile", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "sample_catalog" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
        if any(item.get_closest_marker(name) for name in RESOURCE_MARKERS):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory):
    """One cache folder for the session: the demo model is built once (it is deterministic)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory: pytest.TempPathFactory, shared_cache):
    """The batch job's catalog of the whole sample, made once for the session; tests copy it."""
    from tests.support.catalogs import build_sample_catalog

    return build_sample_catalog(tmp_path_factory.mktemp("catalog"), shared_cache)


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path, shared_cache):
    for name in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "STUDIO_LLM_MODEL",
        "STUDIO_IMAGE_MODEL",
        "STUDIO_SERIES",
        "STUDIO_CONFIG",
        "STUDIO_STEPS",
        "STUDIO_SEED",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("STUDIO_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(shared_cache))
    monkeypatch.chdir(tmp_path)  # no studio.toml or .env of the developer's is read
    yield


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()
