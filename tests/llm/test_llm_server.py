"""The OpenAI-compatible backend against servers that misbehave: silent, picky, without /v1.

Every server is on 127.0.0.1 (a bare socket or tests.support.fakes.FakeOpenAIServer); timeouts and
backoffs are fractions of a second, so each test takes well under a few seconds.
"""

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

import pytest

from studio.core.config import Settings
from studio.core.errors import LLMError, LLMUnavailableError
from studio.core.remote import redact_url
from studio.llm.base import ChatRequest
from studio.llm.choice import backend_description, choose_backend, make_backend
from studio.llm.client import LLM, make_llm
from studio.llm.embedded import EmbeddedBackend
from studio.llm.openai_compat import OpenAIBackend
from tests.support.fakes import FakeBackend, FakeOpenAIServer

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}},
    "required": ["name"],
    "additionalProperties": False,
}
HI = [{"role": "user", "content": "hi"}]
REQUEST = ChatRequest(messages=(("user", "hi"),), schema=SCHEMA)


class EchoBackend(FakeBackend):
    def answer(self, request):
        assert request.schema == SCHEMA  # the server got the schema, in whichever mode
        return {"name": "ok"}


@pytest.fixture
def silent_server():
    """A port that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


def quick(url: str, lines: list[str] | None = None, **options) -> OpenAIBackend:
    options = {"model": "m", "timeout": 0.5, "backoff": 0.02, "heartbeat": 0.2, **options}
    return OpenAIBackend(base_url=url, on_status=None if lines is None else lines.append, **options)


@pytest.mark.slow
def test_a_server_that_never_answers_is_given_up_on_within_the_deadline(silent_server):
    url = f"http://127.0.0.1:{silent_server}/v1"
    lines: list[str] = []
    settings = Settings(llm_base_url=url, llm_model="m", llm_timeout=0.5)
    llm = make_llm(settings, None, on_status=lines.append)
    assert llm.backend.client.max_retries == 0  # the openai client never retries on its own
    started = time.monotonic()
    with pytest.raises(LLMUnavailableError) as caught:
        llm.generate_json(HI, SCHEMA)
    took = time.monotonic() - started
    assert 1.0 < took < 3 * 0.5 + 0.5, took
    message = str(caught.value)
    assert url in message and "did not answer within 3 tries" in message
    assert "llm_timeout (STUDIO_LLM_TIMEOUT)" in message and "OPENAI_BASE_URL" in message
    assert any(f"waiting for {url} (try 2 of 3" in line for line in lines), lines
    assert any("try 3 of 3" in line for line in lines), lines


def test_a_pending_try_reports_a_heartbeat(silent_server):
    url = f"http://127.0.0.1:{silent_server}/v1"
    lines: list[str] = []
    with pytest.raises(LLMUnavailableError, match="did not answer within 1 try"):
        quick(url, lines, timeout=0.7, max_retries=0).complete(REQUEST)
    heartbeats = [line for line in lines if line.startswith(f"waiting for {url} (try 1 of 1, ")]
    assert len(heartbeats) >= 2, lines


def test_without_a_callback_status_goes_to_the_log(silent_server, caplog):
    url = f"http://127.0.0.1:{silent_server}/v1"
    with caplog.at_level("INFO", logger="studio.llm"), pytest.raises(LLMUnavailableError):
        quick(url, timeout=0.3).complete(REQUEST)
    assert any("try 2 of 3" in record.getMessage() for record in caplog.records)


def test_credentials_in_the_url_are_never_shown(silent_server):
    secret_url = f"http://user:SECRET@127.0.0.1:{silent_server}/v1"
    shown_url = f"http://127.0.0.1:{silent_server}/v1"
    lines: list[str] = []
    backend = quick(secret_url, lines, timeout=0.3)
    assert backend.where() == shown_url
    with pytest.raises(LLMUnavailableError) as caught:
        backend.complete(REQUEST)
    assert shown_url in str(caught.value)
    settings = Settings(llm_base_url=secret_url)
    shown = [
        str(caught.value),
        *lines,
        backend_description(settings),
        repr(choose_backend(settings)),
    ]
    assert lines and not [text for text in shown if "SECRET" in text or "user:" in text]


def test_credentials_reach_the_server_but_not_its_error_messages():
    with FakeOpenAIServer(models=["a", "b"]) as server:
        url = server.url.replace("http://", "http://user:SECRET@")
        backend = quick(url, model="missing")
        with pytest.raises(LLMUnavailableError) as caught:
            backend.complete(REQUEST)
    assert "SECRET" not in str(caught.value) and server.url in str(caught.value)
    assert server.authorizations[0].startswith("Basic ")  # httpx sends the URL's user info


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:SECRET@host:8080/v1", "http://host:8080/v1"),
        ("https://token@api.example.com/v1?x=1", "https://api.example.com/v1?x=1"),
        ("http://us:p@ss@host/v1", "http://host/v1"),
        ("http://localhost:11434/v1", "http://localhost:11434/v1"),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1/"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_json_schema_rejected_with_500_falls_back_to_json_object_once():
    lines: list[str] = []
    with FakeOpenAIServer(EchoBackend(), reject_json_schema_status=500) as server:
        backend = quick(server.url, lines, model="fake-llm")
        llm = LLM(backend)
        first = llm.generate_json(HI, SCHEMA)
        second = llm.generate_json([{"role": "user", "content": "again"}], SCHEMA)
    assert first.data == second.data == {"name": "ok"}
    assert server.modes() == ["json_schema", "json_object", "json_object"]
    assert server.bodies[1]["response_format"]["schema"] == SCHEMA
    assert backend.structured_output == "json_object"
    assert [line for line in lines if "structured output" in line] == [
        f"structured output: json_object ({server.url})"
    ]


def test_first_calls_at_once_each_find_the_mode_without_waiting_for_another():
    lines: list[str] = []
    server = FakeOpenAIServer(EchoBackend(), reject_json_schema_status=500, latency=0.2)
    with server, ThreadPoolExecutor(max_workers=4) as pool:
        backend = quick(server.url, lines, model="fake-llm", timeout=5, concurrency=4,
                        fixed_concurrency=True)  # fmt: skip
        answers = list(pool.map(lambda _: backend.complete(REQUEST), range(4)))
        later = backend.complete(REQUEST)
    assert answers == [later] * 4 and json.loads(later) == {"name": "ok"}
    assert server.max_in_flight == 4  # the first calls ran together
    assert sorted(server.modes()) == ["json_object"] * 5 + ["json_schema"] * 4
    assert server.modes()[-1] == "json_object" and backend.structured_output == "json_object"
    assert [line for line in lines if "structured output" in line] == [
        f"structured output: json_object ({server.url})"
    ]  # said once


def test_a_server_without_response_formats_gets_the_schema_in_a_system_message():
    with FakeOpenAIServer(
        EchoBackend(), reject_json_schema_status=400, reject_json_object_status=422
    ) as server:
        backend = quick(server.url, model="fake-llm")
        answer = LLM(backend).generate_json(
            [{"role": "system", "content": "You name things."}, *HI], SCHEMA
        )
    assert answer.data == {"name": "ok"}
    assert server.modes() == ["json_schema", "json_object", "plain"]
    plain = server.bodies[-1]
    assert "response_format" not in plain
    assert [m["role"] for m in plain["messages"]] == ["system", "system", "user"]
    assert '"maxLength": 10' in plain["messages"][1]["content"]
    assert backend.structured_output == "plain"


def test_a_server_that_rejects_every_mode_says_so_without_try_again_later():
    with FakeOpenAIServer(
        reject_json_schema_status=500, reject_json_object_status=500, reject_plain_status=500
    ) as server:
        started = time.monotonic()
        with pytest.raises(LLMError) as caught:
            quick(server.url, model="fake-llm", backoff=5).complete(REQUEST)
    assert time.monotonic() - started < 2  # no retries, no backoff
    message = str(caught.value)
    assert "rejected every structured-output mode" in message
    assert "HTTP 500" in message and "validation error" in message
    assert "try again later" not in message and "STUDIO_LLM_MODEL" in message
    assert len(server.bodies) == 3


def test_once_a_mode_works_a_500_is_retried_as_transient():
    lines: list[str] = []
    with FakeOpenAIServer(EchoBackend()) as server:
        backend = quick(server.url, lines, model="fake-llm")
        backend.complete(REQUEST)  # json_schema works, and is kept
        server.fail_next.extend([500, 503])
        assert backend.complete(REQUEST) == '{"name": "ok"}'
    assert server.modes() == ["json_schema"] * 4
    assert any("try 2 of 3" in line and "HTTP 500" in line for line in lines), lines
    assert any("try 3 of 3" in line and "HTTP 503" in line for line in lines), lines


def test_busy_server_gives_up_after_three_tries_and_says_try_again_later():
    with FakeOpenAIServer(fail_next=[503] * 5) as server, pytest.raises(LLMError) as caught:
        quick(server.url, model="fake-llm").complete(REQUEST)
    assert len(server.bodies) == 3
    message = str(caught.value)
    assert "HTTP 503" in message and "3 tries" in message and "try again later" in message


def test_a_url_without_v1_suggests_v1():
    with FakeOpenAIServer() as server:
        with pytest.raises(LLMUnavailableError) as caught:
            quick(server.root, model="fake-llm").complete(REQUEST)
        assert f"no OpenAI-compatible API at {server.root}" in str(caught.value)
        assert f"{server.root}/v1" in str(caught.value) and "OPENAI_BASE_URL" in str(caught.value)
        # Without a model name, the served model is asked for first: the same advice.
        with pytest.raises(LLMUnavailableError, match=f"set .* to {server.root}/v1"):
            quick(server.root, model="").complete(REQUEST)


def test_a_model_the_server_does_not_serve_lists_the_served_ones():
    served = [f"model-{i}" for i in range(12)]
    with FakeOpenAIServer(models=served) as server, pytest.raises(LLMUnavailableError) as caught:
        quick(server.url, model="llama3").complete(REQUEST)
    message = str(caught.value)
    assert "does not serve the model 'llama3'" in message
    assert "model-0, model-1" in message and "model-9" in message and "model-10," not in message
    assert "(12 in all)" in message and "llm_model (STUDIO_LLM_MODEL)" in message


def test_the_only_served_model_is_used_and_several_need_a_choice():
    with FakeOpenAIServer(models=["only-one"]) as server:
        backend = quick(server.url, model="")
        assert backend.identity() == "openai-compatible:only-one"
    several = pytest.raises(LLMUnavailableError, match="serves 2 models: a, b.*STUDIO_LLM_MODEL")
    with FakeOpenAIServer(models=["a", "b"]) as server, several:
        quick(server.url, model="").identity()


def test_an_api_key_alone_means_openai(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = Settings()
    choice = choose_backend(settings)
    assert choice.kind == "openai" and choice.model == "gpt-4o-mini"
    assert backend_description(settings) == (
        "OpenAI-compatible server `https://api.openai.com/v1` (model gpt-4o-mini)"
    )
    backend = make_backend(settings)
    assert isinstance(backend, OpenAIBackend)
    assert backend.where() == "https://api.openai.com/v1" and backend.model == "gpt-4o-mini"


def test_the_backend_choice_without_any_setting_or_with_a_server():
    assert choose_backend(Settings()).kind == "embedded"
    assert backend_description(Settings()).startswith("embedded (qwen2.5-coder")
    assert isinstance(make_backend(Settings()), EmbeddedBackend)
    local = Settings(llm_base_url="http://localhost:11434/v1")  # nothing listens: no request
    assert backend_description(local) == (
        "OpenAI-compatible server `http://localhost:11434/v1` (the model it serves)"
    )
    named = Settings(llm_base_url="http://localhost:11434/v1", llm_model="llama3.1")
    assert backend_description(named).endswith("(model llama3.1)")


def test_calls_waiting_at_once_share_one_heartbeat_line():
    """Three calls in flight to a server that is slow to answer make one "waiting" line per
    heartbeat, not one each: the longest-waiting call's, with how many more wait."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    lines: list[tuple[float, str]] = []
    backend = quick(url, timeout=30, max_retries=0, concurrency=3, fixed_concurrency=True)
    backend.on_status = lambda line: lines.append((time.monotonic(), line))
    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(backend.complete, REQUEST) for _ in range(3)]
        time.sleep(1.1)  # about five heartbeats of 0.2 s
        listener.close()  # the server goes away: each call fails at once
        for call in calls:
            with pytest.raises(LLMError):
                call.result(timeout=30)
    beats = [(at, line) for at, line in lines if line.startswith(f"waiting for {url} (try 1 of 1")]
    assert 3 <= len(beats) <= 6, lines  # one a heartbeat, not three
    assert all(later - earlier >= 0.9 * 0.2 for (earlier, _), (later, _) in pairwise(beats))
    assert any(line.endswith("; 2 more waiting)") for _, line in beats), lines
