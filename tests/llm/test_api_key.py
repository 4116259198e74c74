"""OPENAI_API_KEY is found where the settings are (the environment, else `.env` in the working
folder), reaches the LLM server as a Bearer token, and is never shown; an error about the server
names the setting its URL came from, which the CLI turns into its flag.

The tests run in tmp_path (conftest chdirs there), so `.env` here is the test's own file.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from studio.cli.flags import cli_message
from studio.core.config import load_settings, openai_api_key
from studio.core.errors import LLMUnavailableError
from studio.core.remote import DEFAULT_OPENAI_BASE_URL
from studio.llm.base import ChatRequest
from studio.llm.choice import choose_backend, default_concurrency, make_backend
from studio.llm.openai_compat import OpenAIBackend
from tests.support.fakes import FakeBackend, FakeOpenAIServer
from tests.support.key_server import KeyQuotingServer

KEY = "sk-dotenv-4c1e8b-never-show-me"
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
    "additionalProperties": False,
}
REQUEST = ChatRequest(messages=(("user", "hi"),), schema=SCHEMA)


class NameBackend(FakeBackend):
    def answer(self, request):
        return {"name": "ok"}


def write_env(**values: str) -> None:
    Path(".env").write_text("".join(f"{k}={v}\n" for k, v in values.items()), encoding="utf-8")


def test_the_key_is_read_from_the_environment_then_dotenv(monkeypatch):
    assert openai_api_key() == ""
    write_env(OPENAI_API_KEY=KEY)
    assert openai_api_key() == KEY
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    assert openai_api_key() == "sk-from-the-environment"  # the environment first, as settings


def test_a_key_only_in_dotenv_picks_openai_over_the_embedded_model():
    write_env(OPENAI_API_KEY=KEY)
    settings = load_settings()
    choice = choose_backend(settings)
    assert choice.kind == "openai" and choice.base_url == DEFAULT_OPENAI_BASE_URL
    assert default_concurrency(settings) == 8  # a server's, not the embedded model's
    assert KEY not in repr(settings) and KEY not in repr(choice)


def test_the_key_and_the_url_in_dotenv_both_reach_the_server():
    with FakeOpenAIServer(NameBackend()) as server:
        write_env(OPENAI_BASE_URL=server.url, OPENAI_API_KEY=KEY)
        backend = make_backend(load_settings())
        assert isinstance(backend, OpenAIBackend) and backend.where() == server.url
        assert json.loads(backend.complete(REQUEST)) == {"name": "ok"}
    assert server.authorizations and set(server.authorizations) == {f"Bearer {KEY}"}


def test_a_refused_key_from_dotenv_is_not_quoted_back_in_the_error():
    with KeyQuotingServer() as server:
        write_env(OPENAI_BASE_URL=server.url, OPENAI_API_KEY=KEY)
        backend = make_backend(load_settings({"llm_model": "m"}))
        with pytest.raises(LLMUnavailableError) as caught:
            backend.complete(REQUEST)
    message = str(caught.value)
    assert "refused the key" in message and "Incorrect API key provided: ***" in message
    assert "OPENAI_API_KEY" in message and KEY not in message


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return listener.getsockname()[1]


@pytest.mark.parametrize(
    ("source", "named", "cli_named"),
    [
        ("flag", "llm_base_url (OPENAI_BASE_URL)", "--llm-base-url (OPENAI_BASE_URL)"),
        ("keyword", "llm_base_url (OPENAI_BASE_URL)", "--llm-base-url (OPENAI_BASE_URL)"),
        ("environment", "OPENAI_BASE_URL", "OPENAI_BASE_URL"),
        (".env", ".env OPENAI_BASE_URL", ".env OPENAI_BASE_URL"),
        ("studio.toml", "studio.toml (llm_base_url)", "studio.toml (llm_base_url)"),
    ],
)
def test_a_dead_server_names_where_its_url_was_set(monkeypatch, source, named, cli_named):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    write_env(OPENAI_BASE_URL="http://127.0.0.1:9/v1")  # below the flag, the keyword, the env var
    Path("studio.toml").write_text('llm_base_url = "http://127.0.0.1:10/v1"\n', encoding="utf-8")
    overrides: dict = {"llm_model": "m"}
    if source == "flag":  # as the CLI passes its flags
        overrides.update(llm_base_url=url, _sources={"llm_base_url": "--llm-base-url"})
    elif source == "keyword":  # open_studio(llm_base_url=...)
        overrides["llm_base_url"] = url
    elif source == "environment":
        monkeypatch.setenv("OPENAI_BASE_URL", url)
    elif source == ".env":
        write_env(OPENAI_BASE_URL=url)
    else:
        Path(".env").unlink()
        Path("studio.toml").write_text(f'llm_base_url = "{url}"\n', encoding="utf-8")
    backend = make_backend(load_settings(overrides))
    backend.backoff = 0.01
    with pytest.raises(LLMUnavailableError) as caught:
        backend.complete(REQUEST)
    message = str(caught.value)
    assert f"No LLM answered at {url}" in message
    assert f"Start the server or fix {named}; or clear it and OPENAI_API_KEY" in message
    assert f"fix {cli_named};" in cli_message(message)  # the CLI names its flag
