"""Tests run offline, on the CPU, in temporary folders; nothing touches the home folder."""

from __future__ import annotations

import pytest

from tests.fakes import FakeBackend


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory):
    """One cache folder for the session: the demo model is built once (it is deterministic)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def sample_catalog(tmp_path_factory: pytest.TempPathFactory, shared_cache):
    """The batch job's catalog of the whole sample, made once for the session; tests copy it."""
    from tests.catalogs import build_sample_catalog

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
