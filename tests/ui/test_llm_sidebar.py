"""The dashboard's sidebar names the LLM backend that make_backend picks, credentials left out."""

from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from studio.llm import client as llm_client
from studio.llm.embedded import EMBEDDED_MODEL_NAME, embedded_placement
from tests.support.catalogs import SMALL_ENV

APP = str(Path(__file__).resolve().parents[2] / "dashboard.py")


@pytest.fixture
def app_env(monkeypatch):
    for name, value in SMALL_ENV.items():
        monkeypatch.setenv(name, value)

    def no_backend(settings, on_status=None):
        raise AssertionError("the sidebar must not make a backend (or call a server)")

    monkeypatch.setattr(llm_client, "make_backend", no_backend)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()


def llm_caption(env: dict[str, str], monkeypatch) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return next(c.value for c in at.sidebar.caption if c.value.startswith("LLM: "))


def test_an_api_key_alone_shows_openai(app_env, monkeypatch):
    caption = llm_caption({"OPENAI_API_KEY": "sk-test"}, monkeypatch)
    assert (
        caption == "LLM: OpenAI-compatible server `https://api.openai.com/v1` (model gpt-4o-mini)"
    )


def test_a_server_url_is_shown_without_its_credentials(app_env, monkeypatch):
    env = {"OPENAI_BASE_URL": "http://user:SECRET@127.0.0.1:9/v1", "STUDIO_LLM_MODEL": "llama3"}
    caption = llm_caption(env, monkeypatch)
    assert caption == "LLM: OpenAI-compatible server `http://127.0.0.1:9/v1` (model llama3)"


def test_no_setting_shows_the_embedded_model(app_env, monkeypatch):
    caption = llm_caption({}, monkeypatch)
    assert caption == f"LLM: embedded ({EMBEDDED_MODEL_NAME}) {embedded_placement()}"
    assert "on this machine's CPU" in caption
