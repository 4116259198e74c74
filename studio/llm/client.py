"""Chat LLMs behind one interface, returning JSON validated against a schema.

`LLM` asks a `ChatBackend` (see `choice` for which one the settings pick): sampling is seeded,
output is constrained to the schema where the backend can, invalid answers are repaired by asking
again, and answers are cached by a key over the model, the messages, the schema and the sampling
settings. `make_llm` builds one from the settings.

Each backend call runs in a daemon thread that its caller waits for in a way Ctrl-C and
`LLM.interrupt()` can stop: a call stuck in native code (llama.cpp evaluating a prompt holds its
thread for many seconds) is then abandoned, so neither the caller nor the process waits for it.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import jsonschema

from studio.core.config import Settings, setting
from studio.core.errors import LLMError, LLMInterrupted
from studio.llm.base import ChatBackend, ChatRequest, Messages

# make_llm finds make_backend in this module by name: tests replace client.make_backend
from studio.llm.choice import default_concurrency, make_backend


class ResponseCache(Protocol):
    def get_llm_response(self, key: str) -> str | None: ...

    def put_llm_response(self, key: str, model: str, response: str) -> None: ...


@dataclass
class JSONAnswer:
    data: dict[str, Any]
    key: str  # the cache key, which also identifies the prompt record
    cached: bool
    repairs: tuple[str, ...] = ()  # what the writing layer fixed in it, for the run's report

    @property
    def text(self) -> str:
        """The answer as the cache stores it."""
        return json.dumps(self.data, ensure_ascii=False)


class _BackendCall:
    """One `backend.complete(request)`, run in a daemon thread by `start()`; `answer()` waits
    for it interruptibly, and `abandon()` makes that wait raise LLMInterrupted at once."""

    def __init__(self, backend: ChatBackend, request: ChatRequest):
        self._thread = threading.Thread(
            target=self._run, args=(backend, request), name="llm-call", daemon=True
        )
        self._settled = threading.Event()
        self._abandoned = False
        self._text = ""
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def _run(self, backend: ChatBackend, request: ChatRequest) -> None:
        try:
            self._text = backend.complete(request)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self._error = exc
        finally:
            self._settled.set()

    def abandon(self) -> None:
        self._abandoned = True
        self._settled.set()

    def answer(self) -> str:
        self._settled.wait()  # a lock wait: Ctrl-C interrupts it in the main thread
        if self._abandoned:
            raise LLMInterrupted("The LLM call was given up: the run was interrupted.")
        if self._error is not None:
            raise self._error
        return self._text


class LLM:
    """JSON answers from a backend: schema-validated, repaired by asking again, cached.

    Safe to call from several threads at once (`concurrency` of them, for the batch job): an
    answer depends only on its request, so concurrent calls give the answers serial ones do.
    Ctrl-C during a call stops it at once (see `interrupt`); the LLM stays usable afterwards.
    """

    def __init__(
        self,
        backend: ChatBackend,
        cache: ResponseCache | None = None,
        temperature: float = 0.7,
        seed: int = 1234,
        max_repairs: int = 2,
        concurrency: int = 1,
    ):
        self.backend = backend
        self.cache = cache
        self.temperature = temperature
        self.seed = seed
        self.max_repairs = max_repairs
        self.concurrency = concurrency
        self.calls = 0  # requests that reached the backend
        self.cache_hits = 0
        self._lock = threading.Lock()
        self._in_flight: set[_BackendCall] = set()
        self._interrupted = False  # between interrupt() and resume(): no new calls

    def interrupt(self) -> None:
        """Stop now: every call in flight raises LLMInterrupted in the thread waiting for it,
        the backend is told to stop working on them (where it can: the embedded model stops at
        its next token), and new calls raise LLMInterrupted too until `resume()`. For Ctrl-C in
        a thread that waits for other threads' calls (the batch job's pool)."""
        with self._lock:
            self._interrupted = True
        self._stop_calls()

    def resume(self) -> None:
        """Take calls again after `interrupt()`."""
        with self._lock:
            self._interrupted = False

    def _stop_calls(self) -> None:
        with self._lock:
            calls = list(self._in_flight)
        for call in calls:
            call.abandon()
        cancel = getattr(self.backend, "cancel", None)  # optional: see EmbeddedBackend.cancel
        if cancel is not None:
            cancel()

    def release(self) -> None:
        """Let the backend free what it holds between calls where it can (the embedded model:
        llama.cpp's threads and memory); the next call takes it up again."""
        release = getattr(self.backend, "release", None)  # optional: EmbeddedBackend.release
        if release is not None:
            release()

    def _complete(self, request: ChatRequest) -> str:
        """The backend's answer to `request`; Ctrl-C while it runs stops this call (and the
        others in flight: the run is being stopped) instead of waiting for it."""
        with self._lock:
            if self._interrupted:
                raise LLMInterrupted("The LLM takes no new calls: the run was interrupted.")
            self.calls += 1
        call = _BackendCall(self.backend, request)
        try:  # from before the thread starts: a Ctrl-C at any point stops what has started
            with self._lock:
                self._in_flight.add(call)
            call.start()
            return call.answer()
        except KeyboardInterrupt as exc:
            if not isinstance(exc, LLMInterrupted):  # Ctrl-C in this very thread
                self._stop_calls()
            raise
        finally:
            with self._lock:
                self._in_flight.discard(call)

    @property
    def model(self) -> str:
        return self.backend.identity()

    def cache_key(self, request: ChatRequest) -> str:
        payload = {"model": self.model, **asdict(request)}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def generate_json(
        self,
        messages: Messages,
        schema: dict[str, Any],
        max_tokens: int = 512,
        refresh: bool = False,
        seed: int | None = None,
    ) -> JSONAnswer:
        """The answer to `messages` as a dict valid against `schema`; `refresh` skips the cache.

        `seed` replaces the configured sampling seed: another seed asks for another answer.
        """
        request = ChatRequest(
            messages=tuple((m["role"], m["content"]) for m in messages),
            schema=schema,
            max_tokens=max_tokens,
            temperature=self.temperature,
            seed=self.seed if seed is None else seed,
        )
        key = self.cache_key(request)
        if self.cache is not None and not refresh:
            cached = self.cache.get_llm_response(key)
            if cached is not None:
                self.cache_hits += 1
                return JSONAnswer(json.loads(cached), key, cached=True)
        data = self._ask_until_valid(request)
        answer = JSONAnswer(data, key, cached=False)
        if self.cache is not None:
            self.cache.put_llm_response(key, self.model, answer.text)
        return answer

    def _ask_until_valid(self, request: ChatRequest) -> dict[str, Any]:
        attempt_request = request
        problem = ""
        for attempt in range(1 + self.max_repairs):
            text = self._complete(attempt_request)  # backends are safe to call at once
            data, problem = parse_json_answer(text, request.schema)
            if data is not None:
                return data
            # Show the model its answer and what is wrong with it; a new seed avoids a replay.
            repair = (
                ("assistant", text[:4000]),
                (
                    "user",
                    f"That answer is not valid: {problem}. Reply again with only the "
                    "corrected JSON object, following the schema.",
                ),
            )
            attempt_request = ChatRequest(
                messages=request.messages + repair,
                schema=request.schema,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                seed=request.seed + attempt + 1,
                repeat_penalty=request.repeat_penalty,
            )
        raise LLMError(
            f"The LLM ({self.model}) gave no valid answer in {1 + self.max_repairs} tries; last "
            f"problem: {problem}. Try again with another {setting('llm_seed')} or a stronger "
            f"{setting('llm_model')}."
        )


def parse_json_answer(text: str, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """(data, "") when `text` holds a JSON object valid against `schema`, else (None, why)."""
    candidate = text.strip()
    if candidate.startswith("```"):  # models love fences even when told not to
        candidate = candidate.strip("`").removeprefix("json").strip()
    start, end = candidate.find("{"), candidate.rfind("}")
    if start < 0 or end < start:
        return None, "it contains no JSON object"
    try:
        data = json.loads(candidate[start : end + 1])
    except json.JSONDecodeError as exc:
        return None, f"it is not valid JSON ({exc.msg} at character {exc.pos})"
    try:
        jsonschema.validate(data, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the object"
        return None, f"{where}: {exc.message[:300]}"
    return data, ""


def make_llm(
    settings: Settings,
    cache: ResponseCache | None,
    on_status: Callable[[str], None] | None = None,
) -> LLM:
    backend = make_backend(settings, on_status)
    return LLM(
        backend,
        cache,
        settings.llm_temperature,
        settings.llm_seed,
        concurrency=default_concurrency(settings),
    )
