import pytest

from studio.catalog.store import Store
from studio.core.errors import LLMError, LLMUnavailableError
from studio.llm.client import LLM, parse_json_answer
from studio.llm.openai_compat import OpenAIBackend
from tests.support.fakes import FakeBackend, FakeOpenAIServer

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}},
    "required": ["name"],
    "additionalProperties": False,
}


class EchoBackend(FakeBackend):
    def answer(self, request):
        return {"name": "ok"}


def test_answers_are_cached_by_everything_that_shapes_them(tmp_path):
    store = Store(tmp_path)
    backend = EchoBackend()
    llm = LLM(backend, store, seed=7)
    messages = [{"role": "user", "content": "hi"}]
    first = llm.generate_json(messages, SCHEMA)
    again = llm.generate_json(messages, SCHEMA)
    assert first.data == again.data == {"name": "ok"}
    assert (first.cached, again.cached) == (False, True)
    assert llm.calls == 1
    # Another seed, template text or model is another key.
    LLM(backend, store, seed=8).generate_json(messages, SCHEMA)
    llm.generate_json([{"role": "user", "content": "hi!"}], SCHEMA)
    LLM(EchoBackend(name="other"), store, seed=7).generate_json(messages, SCHEMA)
    assert len(backend.requests) == 3
    # The cache survives a restart.
    assert LLM(EchoBackend(), Store(tmp_path), seed=7).generate_json(messages, SCHEMA).cached


def test_invalid_answers_are_repaired_by_asking_again():
    backend = EchoBackend(
        bad_answers=["Sure! Here it is: {name: ok}", '{"name": "far too long a name"}']
    )
    llm = LLM(backend, seed=1)
    answer = llm.generate_json([{"role": "user", "content": "hi"}], SCHEMA)
    assert answer.data == {"name": "ok"}
    assert llm.calls == 3
    repair = backend.requests[1]
    assert repair.messages[-2] == ("assistant", "Sure! Here it is: {name: ok}")
    assert "not valid JSON" in repair.messages[-1][1]
    assert "name: 'far too long a name' is too long" in backend.requests[2].messages[-1][1]
    assert len({r.seed for r in backend.requests}) == 3


def test_gives_up_with_a_clear_error():
    llm = LLM(EchoBackend(bad_answers=["no"] * 3), max_repairs=2)
    with pytest.raises(LLMError, match="no valid answer in 3 tries.*contains no JSON object"):
        llm.generate_json([{"role": "user", "content": "hi"}], SCHEMA)


def test_fenced_json_is_accepted():
    data, problem = parse_json_answer('```json\n{"name": "x"}\n```', SCHEMA)
    assert data == {"name": "x"} and problem == ""


def test_unreachable_server_says_what_to_do():
    backend = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1", timeout=2, max_retries=0)
    llm = LLM(backend)
    with pytest.raises(
        LLMUnavailableError, match="No LLM answered at http://127.0.0.1:9/v1.*OPENAI_BASE_URL"
    ):
        llm.generate_json([{"role": "user", "content": "hi"}], SCHEMA)


def test_openai_backend_sends_schema_seed_and_reads_the_answer(monkeypatch):
    answers = FakeBackend(bad_answers=['{"name": "served"}'])  # returned as they are, first
    with FakeOpenAIServer(answers) as server:
        llm = LLM(OpenAIBackend(model="local-model", base_url=server.url, max_retries=0), seed=99)
        answer = llm.generate_json([{"role": "user", "content": "hi"}], SCHEMA, max_tokens=50)
    seen = server.bodies
    assert answer.data == {"name": "served"}
    assert llm.model == "openai-compatible:local-model"
    request = seen[0]
    assert request["seed"] == 99 and request["max_tokens"] == 50
    assert request["response_format"]["json_schema"]["schema"] == SCHEMA
