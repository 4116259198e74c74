"""A local server with the defaults: the calls at once follow what the server sustains (its
advertised slots, else found from latency and timeouts), a timeout behind other calls is not the
server's failure, and every answer that came back is kept for the rerun."""

from __future__ import annotations

import threading
import time

import pytest

from studio.core.errors import LLMError
from studio.llm.base import ChatRequest
from studio.llm.capacity import START, Capacity, advertised_slots
from studio.llm.openai_compat import OpenAIBackend
from studio.workflows.batch import Selection, run_job
from studio.writing.prompting import SELF_ASK_SCHEMA
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeOpenAIServer


def ask_at_once(chat: OpenAIBackend, count: int) -> list[BaseException | str]:
    """`count` different calls from `count` threads at once, as the batch job's pool makes."""
    results: list[BaseException | str] = [""] * count

    def one(number: int) -> None:
        request = ChatRequest((("user", f"season {number}"),), SELF_ASK_SCHEMA, seed=number)
        try:
            results[number] = chat.complete(request)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            results[number] = exc

    threads = [threading.Thread(target=one, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def backend(server: FakeOpenAIServer, timeout: float, **options) -> OpenAIBackend:
    return OpenAIBackend("fake-llm", server.url, api_key="x", timeout=timeout, backoff=0.05,
                         heartbeat=None, **options)  # fmt: skip


def test_the_limit_grows_while_latency_holds_and_drops_on_a_crowded_timeout():
    capacity = Capacity(START, ceiling=6)
    for _ in range(2):
        capacity.succeeded(1.0)
    assert capacity.limit == 3  # latency held at 2
    for _ in range(3):
        capacity.succeeded(2.4)  # 2.4x the best: a queue, not parallel work
    assert capacity.limit == 3
    capacity.acquire(), capacity.acquire()
    assert capacity.timed_out(time.monotonic()) and capacity.limit == 1  # one other in flight
    capacity.release()
    assert capacity.timed_out(time.monotonic() - 1)  # the server is busy with the abandoned one
    later = time.monotonic() + 60
    assert not capacity.timed_out(later)  # alone, on an idle server: its own slowness
    for _ in range(5):
        capacity.succeeded(1.0)
    assert capacity.limit == 1  # it never rises past what crowded the server again
    fixed = Capacity(4, 4, fixed=True)
    fixed.succeeded(1.0)
    assert fixed.limit == 4


def test_a_one_slot_server_with_the_defaults_answers_every_call():
    # llama-cpp-python's server: one request at a time, no /props; each answer 0.3 s, and a
    # client timeout of 0.8 s that 8 queued calls would outlive (the old behaviour: failures)
    with FakeOpenAIServer(latency=0.3, slots=1) as server:
        chat = backend(server, timeout=0.8, max_retries=0)
        results = ask_at_once(chat, 8)
        assert all(isinstance(r, str) and r for r in results), results
        assert chat.capacity.limit == 1 and not chat.capacity.fixed
        assert advertised_slots(server.url) is None


def test_without_finding_the_capacity_the_same_server_fails_calls():
    with FakeOpenAIServer(latency=0.3, slots=1) as server:
        chat = backend(server, timeout=0.8, max_retries=0, concurrency=8, fixed_concurrency=True)
        results = ask_at_once(chat, 8)
        assert any(isinstance(r, LLMError) for r in results)  # what the issue saw


def test_advertised_slots_are_the_limit():
    with FakeOpenAIServer(latency=0.2, slots=2, advertise_slots=True) as server:
        assert advertised_slots(server.url) == 2
        chat = backend(server, timeout=5)
        assert all(isinstance(r, str) for r in ask_at_once(chat, 6))
        assert chat.capacity.limit == 2 and chat.capacity.fixed
        assert server.max_in_flight == 2


def test_a_parallel_server_gets_more_calls_at_once():
    with FakeOpenAIServer(latency=0.2) as server:
        chat = backend(server, timeout=5, concurrency=6)
        ask_at_once(chat, 6)
        ask_at_once(chat, 6)
        assert chat.capacity.limit > START and server.max_in_flight > START


@pytest.mark.slow
def test_answers_that_came_back_are_kept_so_the_rerun_asks_only_for_the_rest(
    tmp_path, shared_cache
):
    selection = Selection(episodes={(1, e) for e in range(1, 7)}, targets="episodes")
    with FakeOpenAIServer() as server:
        chat = backend(server, timeout=2, max_retries=0)
        with small_studio(tmp_path, shared_cache, chat=chat) as studio:
            chat.complete(ChatRequest((("user", "hello"),), SELF_ASK_SCHEMA))  # the mode, known
            server.fail_next.extend([503] * 3)  # three calls fail, the other three come back
            summary = run_job(studio.series, selection, studio.settings, studio.llm,
                              studio.images, dry_run=True)  # fmt: skip
            assert len(summary.failed) == 3 and summary.prompts_written == 3
            asked = len(server.bodies)
            again = run_job(studio.series, selection, studio.settings, studio.llm,
                            studio.images, dry_run=True)  # fmt: skip
            assert not again.failed and again.prompts_written == 3 and again.prompts_cached == 3
            assert len(server.bodies) - asked == 3  # only the rest were asked
