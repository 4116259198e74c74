"""Any OpenAI-compatible chat server (OpenAI, Ollama, vLLM, a llama.cpp server, LM Studio)
through the `openai` client: one deadline for all the tries of a call, our own retries and status
lines, and the server's structured-output mode negotiated once. URLs are shown only through
`redact_url`; the API key (OPENAI_API_KEY, from the environment or .env) goes to the client only,
and is scrubbed from whatever the server says back.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from studio.core.config import openai_api_key, setting
from studio.core.errors import LLMError, LLMUnavailableError
from studio.core.remote import (
    DEFAULT_OPENAI_BASE_URL,
    redact_text,
    redact_url,
    retry_after,
    seconds_text,
    tries_text,
)
from studio.llm.base import ChatRequest, Messages, default_model
from studio.llm.capacity import Capacity, server_capacity

log = logging.getLogger(__name__)


# How the answer is held to the schema, best first: the server's json_schema response format,
# llama-cpp-python's {"type": "json_object", "schema": ...}, or none (the schema in a system
# message). Every answer is validated by parse_json_answer whatever the mode.
STRUCTURED_OUTPUT_MODES = ("json_schema", "json_object", "plain")
_MODE_REJECTED = {400, 422, 500}  # how servers refuse a response format they cannot do
_TRANSIENT = {408, 409, 429, 502, 503, 504}  # waiting may help (and 500, once a mode works)
MAX_REQUEUES = 4  # timeouts behind other calls that one call may wait out before they count


class _TryTimeoutError(Exception):
    """A try outlived its timeout without the HTTP client noticing (a trickling server)."""


@dataclass
class _Call:
    """One deadline for all the requests and tries of one LLM call."""

    deadline: float
    started: float

    @classmethod
    def start(cls, budget: float) -> _Call:
        now = time.monotonic()
        return cls(now + budget, now)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def _server_error(exc: Any, secret: str = "") -> str:
    """The server's error, briefly: `HTTP 500 "the message"`, without `secret` (the API key,
    which a careless server may quote back)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error") or body
    else:
        message = body
    if not message:
        try:
            message = exc.response.text
        except Exception:  # noqa: BLE001 - a message is only a nicety here
            message = ""
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)
    message = _without(redact_text(" ".join(message.split())), secret)
    if len(message) > 160:
        message = message[:157] + "..."
    return f'HTTP {exc.status_code} "{message}"' if message else f"HTTP {exc.status_code}"


def _connection_problem(exc: BaseException, secret: str = "") -> str:
    cause = exc.__cause__ or exc
    text = _without(redact_text(" ".join(str(cause).split())), secret)[:160]
    return f"{cause.__class__.__name__}: {text}" if text else cause.__class__.__name__


def _without(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _with_schema_message(messages: Messages, schema: dict[str, Any]) -> Messages:
    """`messages` with one more system message, after the leading ones, stating the schema."""
    note = {
        "role": "system",
        "content": "Reply with only one JSON object, no other text, valid against this JSON "
        f"schema:\n{json.dumps(schema, ensure_ascii=False)}",
    }
    leading = 0
    while leading < len(messages) and messages[leading]["role"] == "system":
        leading += 1
    return [*messages[:leading], note, *messages[leading:]]


class OpenAIBackend:
    """Any OpenAI-compatible chat server, with one deadline per call and our own retries.

    Each `complete` has `deadline` seconds for all its requests and tries together (by default
    `timeout` x tries, tries = 1 + `max_retries`); each try waits min(`timeout`, time left).
    429s, 502-504s, connection errors and timeouts are tried again after a backoff; the openai
    client itself never retries. What the call waits for goes to `on_status` (a line when a retry
    starts, and, while tries are pending, one line every `heartbeat` seconds for all of them, from
    a calling thread), or to `logging` without one. The structured-output mode the server
    supports is found by the first call (by each of the first calls, when they run at once) and
    kept. The base URL's credentials are never shown: `where()` is redacted. `url_setting` names
    where the URL was set, for messages (`studio.core.config.source_of`; default: the
    llm_base_url setting).
    """

    def __init__(
        self,
        model: str = "",
        base_url: str = "",
        api_key: str = "",
        timeout: float = 120.0,
        max_retries: int = 2,
        *,
        deadline: float | None = None,
        backoff: float = 1.0,
        heartbeat: float | None = 10.0,
        on_status: Callable[[str], None] | None = None,
        url_setting: str = "",
        concurrency: int = 8,
        fixed_concurrency: bool = False,
    ):
        """`concurrency`: the most calls at once; with `fixed_concurrency` exactly that many,
        else as many as the server sustains (`studio.llm.capacity`: its advertised slots, or
        found from its latency and timeouts)."""
        import openai

        self._openai = openai
        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
        self.timeout = float(timeout)
        self.tries = 1 + max(0, int(max_retries))
        self.deadline = float(deadline) if deadline else self.timeout * self.tries
        self.backoff = backoff
        self.heartbeat = heartbeat
        self.on_status = on_status
        self.url_setting = url_setting or setting("llm_base_url")
        self._api_key = api_key or openai_api_key()  # for the client, and to scrub messages
        self.client = openai.OpenAI(
            base_url=self._base_url,
            api_key=self._api_key or "not-needed",  # servers of our own may want none
            timeout=self.timeout,
            max_retries=0,  # our own loop retries, under one deadline per call
        )
        self._model = model or default_model(self._base_url)
        self._model_lock = threading.Lock()
        self._mode: str | None = None  # the structured-output mode that worked
        self._negotiating = threading.Lock()
        self._concurrency = (max(1, int(concurrency)), fixed_concurrency)
        self._waiting: dict[int, tuple[_Call, int]] = {}  # tries pending: id -> (call, attempt)
        self._beat_lock = threading.Lock()
        self._last_beat = -math.inf
        self._capacity: Capacity | None = None
        self._capacity_lock = threading.Lock()

    def where(self) -> str:
        """The server's base URL, without credentials."""
        return redact_url(self._base_url)

    def identity(self) -> str:
        return f"openai-compatible:{self.model}"

    @property
    def structured_output(self) -> str | None:
        """The mode of STRUCTURED_OUTPUT_MODES that works on this server; None until known."""
        return self._mode

    @property
    def model(self) -> str:
        if not self._model:
            self._resolve_model(_Call.start(self.deadline))
        return self._model

    def _resolve_model(self, call: _Call) -> str:
        with self._model_lock:
            if not self._model:
                names = self._served_models(call)
                if len(names) != 1:
                    raise LLMUnavailableError(
                        f"The LLM server at {self.where()} serves {len(names)} models"
                        f"{': ' + _listing(names) if names else ''}; choose one with "
                        f"{setting('llm_model')}."
                    )
                self._model = names[0]
        return self._model

    def _served_models(self, call: _Call) -> list[str]:
        openai = self._openai
        try:
            page = self._request(call, self.client.models.list, _TRANSIENT | {500})
        except openai.NotFoundError as exc:
            raise self._no_api_error() from exc
        except openai.APIStatusError as exc:
            raise self._status_error(exc, call, "") from exc
        return [model.id for model in page.data]

    # Requests: one deadline, a few tries, status lines ---------------------------------------

    def _say(self, line: str, level: int = logging.INFO) -> None:
        if self.on_status is None:
            log.log(level, "%s", line)
            return
        try:
            self.on_status(line)
        except Exception:  # a broken display must not break the call
            log.exception("The LLM status callback failed on %r", line)

    def _min_try(self) -> float:
        return min(1.0, self.timeout / 4)

    def _delay(self, last: BaseException, made: int) -> float:
        wanted = self.backoff * 2 ** (made - 1)
        if isinstance(last, (self._openai.APITimeoutError, _TryTimeoutError)):
            wanted = min(wanted, self.timeout / 10)  # a try already waited its whole timeout
        asked = retry_after(last)
        return wanted if asked is None else asked

    def _request(self, call: _Call, function: Any, transient: set[int], **kwargs: Any) -> Any:
        """`function(**kwargs)` tried up to `self.tries` times within the call's deadline.

        Raises openai.APIStatusError for a status not in `transient`, LLMError when the tries
        or the time run out.
        """
        openai = self._openai
        made = requeued = 0
        last: BaseException | None = None
        while made < self.tries:
            if last is not None:
                delay = min(self._delay(last, made), call.left() - self._min_try())
                if delay < 0:
                    break
                self._say(
                    f"waiting for {self.where()} (try {made + 1} of {self.tries}, "
                    f"{seconds_text(call.elapsed())} s): try {made} {self._what_happened(last)}"
                    + (f"; trying again in {seconds_text(delay)} s" if delay >= 1 else ""),
                    logging.WARNING,
                )
                time.sleep(delay)
            try_timeout = min(self.timeout, call.left())
            if try_timeout < self._min_try():
                break
            made += 1
            left, started = call.left(), time.monotonic()
            try:
                return self._one_try(call, made, try_timeout, function, kwargs)
            except (openai.APIConnectionError, _TryTimeoutError) as exc:  # timeouts included
                if requeued < MAX_REQUEUES and self._behind_others(exc, started):
                    requeued += 1
                    made -= 1  # not the server's failure: this call asked while it was full
                    call.deadline = time.monotonic() + left  # its time starts again
                    last = None
                    continue
                last = exc
            except openai.APIStatusError as exc:
                if exc.status_code not in transient:
                    raise
                last = exc
        raise self._gave_up(last, made, call) from last

    def _behind_others(self, exc: BaseException, started: float) -> bool:
        """A try that timed out while other calls were in flight: the server was full. The
        capacity drops, and the call waits for a slot again (back in line)."""
        if not isinstance(exc, (self._openai.APITimeoutError, _TryTimeoutError)):
            return False
        capacity = self.capacity
        if not capacity.timed_out(started):
            return False
        self._say(
            f"a call to {self.where()} timed out behind others: the server takes "
            f"{capacity.limit} at once now; that call waits for its turn",
            logging.WARNING,
        )
        capacity.release()
        capacity.acquire()
        return True

    def _one_try(
        self, call: _Call, attempt: int, try_timeout: float, function: Any, kwargs: dict
    ) -> Any:
        """One request, run in a worker thread so that this thread can report what it waits for
        and give up at the try's timeout even if the HTTP client does not."""
        done = threading.Event()
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["value"] = function(timeout=try_timeout, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name="llm-request", daemon=True).start()
        give_up = time.monotonic() + try_timeout + min(5.0, 0.5 + try_timeout / 10)
        with self._beat_lock:
            self._waiting[id(box)] = (call, attempt)
        try:
            while not done.is_set():
                wait = give_up - time.monotonic()
                if wait <= 0:
                    raise _TryTimeoutError(f"no answer in {seconds_text(try_timeout)} s")
                if self.heartbeat:
                    wait = min(wait, self.heartbeat)
                if not done.wait(wait) and time.monotonic() < give_up:
                    self._beat()
        finally:
            with self._beat_lock:
                del self._waiting[id(box)]
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _beat(self) -> None:
        """One line for all the calls waiting on a pending try, at most one per `heartbeat`
        seconds however many calls are in flight: the longest-waiting call's try and time."""
        with self._beat_lock:
            now = time.monotonic()
            if not self._waiting or now - self._last_beat < 0.9 * (self.heartbeat or 0.0):
                return
            self._last_beat = now
            waiting = list(self._waiting.values())
        call, attempt = max(waiting, key=lambda entry: entry[0].elapsed())
        others = f"; {len(waiting) - 1} more waiting" if len(waiting) > 1 else ""
        self._say(
            f"waiting for {self.where()} (try {attempt} of {self.tries}, "
            f"{seconds_text(call.elapsed())} s{others})"
        )

    def _what_happened(self, exc: BaseException) -> str:
        if isinstance(exc, (self._openai.APITimeoutError, _TryTimeoutError)):
            return "timed out"
        if isinstance(exc, self._openai.APIConnectionError):
            return f"could not connect ({_connection_problem(exc, self._api_key)})"
        return f"got {_server_error(exc, self._api_key)}"

    def _gave_up(self, last: BaseException | None, made: int, call: _Call) -> LLMError:
        url, took = self.where(), seconds_text(call.elapsed())
        openai = self._openai
        if last is None or isinstance(last, (openai.APITimeoutError, _TryTimeoutError)):
            within = tries_text(made) if made else "the time this call had left"
            return LLMUnavailableError(
                f"The LLM server at {url} did not answer within {within} ({took} s); "
                f"start the server, check {self.url_setting}, or raise "
                f"{setting('llm_timeout')} (now {seconds_text(self.timeout)} s)."
            )
        if isinstance(last, openai.APIConnectionError):
            return LLMUnavailableError(
                f"No LLM answered at {url} ({_connection_problem(last, self._api_key)}; "
                f"{tries_text(made)} in {took} s). Start the server or fix {self.url_setting}; "
                "or clear it and OPENAI_API_KEY to use the embedded model."
            )
        error = _server_error(last, self._api_key)
        if last.status_code == 429:
            return LLMError(
                f"The LLM server at {url} kept refusing with {error} (too many requests) in "
                f"{tries_text(made)}; try again later, or check the limits of your OPENAI_API_KEY."
            )
        if last.status_code == 500:
            return LLMError(
                f"The LLM server at {url} kept failing with {error} in {tries_text(made)}; check "
                "the server's log (the model may have crashed or run out of memory)."
            )
        return LLMError(
            f"The LLM server at {url} is unavailable or busy ({error}, {tries_text(made)} in "
            f"{took} s); try again later."
        )

    # Errors that waiting will not fix --------------------------------------------------------

    def _status_error(self, exc: Any, call: _Call, model: str) -> LLMError:
        url = self.where()
        if exc.status_code in (401, 403):
            return LLMUnavailableError(
                f"The LLM server at {url} refused the key ({_server_error(exc, self._api_key)}): "
                "check OPENAI_API_KEY (in the environment or .env)."
            )
        if exc.status_code == 404:
            return self._not_found(call, model)
        return LLMError(
            f"The LLM server at {url} rejected the request with "
            f"{_server_error(exc, self._api_key)}; retrying will not help: fix what it names, or "
            f"choose another {setting('llm_model')}."
        )

    def _no_api_error(self) -> LLMUnavailableError:
        url = self.where().rstrip("/")
        if urlsplit(url).path.endswith("/v1"):
            hint = (
                f"check {self.url_setting}: it should be the root of the server's "
                "OpenAI API (Ollama: http://HOST:11434/v1)"
            )
        else:
            hint = f"set {self.url_setting} to {url}/v1"
        return LLMUnavailableError(
            f"There is no OpenAI-compatible API at {url} (it answered 404 Not Found); {hint}."
        )

    def _not_found(self, call: _Call, model: str) -> LLMUnavailableError:
        """A 404 for a chat request: no API at the base URL, or no such model on the server."""
        openai = self._openai
        url = self.where()
        names: list[str] | None = None
        api_missing = False
        try:
            page = self._request(call, self.client.models.list, _TRANSIENT | {500})
            names = [m.id for m in page.data]
        except openai.APIStatusError as exc:
            api_missing = exc.status_code == 404
        except LLMError:
            pass  # no time left or no answer: judge by the URL alone
        has_v1 = urlsplit(self._base_url).path.rstrip("/").endswith("/v1")
        if names is None and (api_missing or not has_v1):
            return self._no_api_error()
        fix = f"set {setting('llm_model')} to"
        if names is None:
            return LLMUnavailableError(
                f"The LLM server at {url} has no model {model!r} (404 Not Found): {fix} a model "
                "it serves."
            )
        if model in names:
            return LLMUnavailableError(
                f"The LLM server at {url} serves {model!r} but answered 404 Not Found to a chat "
                f"request: check that {self.url_setting} is the root of its OpenAI API."
            )
        served = f"it serves {_listing(names)}" if names else "it serves no models"
        return LLMUnavailableError(
            f"The LLM server at {url} does not serve the model {model!r}; {served}: {fix} "
            "one of them."
        )

    # Chat -------------------------------------------------------------------------------------

    @property
    def capacity(self) -> Capacity:
        """How many calls go to the server at once (found on first use)."""
        with self._capacity_lock:
            if self._capacity is None:
                concurrency, fixed = self._concurrency
                self._capacity = server_capacity(self._base_url, concurrency, fixed, self._api_key)
                how = "as set" if fixed else "to start with; more while the server keeps up"
                self._say(f"{self._capacity.limit} calls at once to {self.where()} ({how})")
            return self._capacity

    def complete(self, request: ChatRequest) -> str:
        """The server's answer; the call waits here for a slot first (`capacity`), and its
        deadline starts when it has one."""
        capacity = self.capacity
        capacity.acquire()
        try:
            call = _Call.start(self.deadline)
            text = self._complete(call, request)
            capacity.succeeded(call.elapsed())
            return text
        finally:
            capacity.release()

    def _complete(self, call: _Call, request: ChatRequest) -> str:
        openai = self._openai
        model = self._model or self._resolve_model(call)
        if self._mode is None:  # concurrent first calls each find it: none waits for another
            return self._negotiate(call, request, model)
        try:
            return self._chat(call, self._mode, request, model, _TRANSIENT | {500})
        except openai.APIStatusError as exc:
            raise self._status_error(exc, call, model) from exc

    def _negotiate(self, call: _Call, request: ChatRequest, model: str) -> str:
        """The answer in the best mode the server accepts; that mode is kept for later calls
        (the best of those that worked, when several first calls ran at once).

        Until a mode has worked, a 400, 422 or 500 moves on to the next mode at once.
        """
        openai = self._openai
        rank = STRUCTURED_OUTPUT_MODES.index
        rejected: list[tuple[str, Any]] = []
        for mode in STRUCTURED_OUTPUT_MODES:
            try:
                text = self._chat(call, mode, request, model, _TRANSIENT)
            except openai.APIStatusError as exc:
                if exc.status_code not in _MODE_REJECTED:
                    raise self._status_error(exc, call, model) from exc
                rejected.append((mode, exc))
                continue
            with self._negotiating:
                known = self._mode
                if known is None or rank(mode) < rank(known):
                    self._mode = mode
            if known is None:
                self._say(f"structured output: {mode} ({self.where()})")
            return text
        answers = "; ".join(
            f"{mode}: {_server_error(exc, self._api_key)}" for mode, exc in rejected
        )
        raise LLMError(
            f"The LLM server at {self.where()} rejected every structured-output mode "
            f"({answers}). Check the server's log and that it runs {model!r} as a chat model, "
            f"or choose another {setting('llm_model')} or server."
        ) from rejected[-1][1]

    def _chat(
        self, call: _Call, mode: str, request: ChatRequest, model: str, transient: set[int]
    ) -> str:
        messages = request.message_dicts()
        options: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "frequency_penalty": max(0.0, min(2.0, (request.repeat_penalty - 1.0) * 2)),
        }
        if mode == "json_schema":
            schema_format = {"name": "answer", "schema": request.schema}
            options["response_format"] = {"type": "json_schema", "json_schema": schema_format}
        elif mode == "json_object":
            options["response_format"] = {"type": "json_object", "schema": request.schema}
        else:
            messages = _with_schema_message(messages, request.schema)
        response = self._request(
            call, self.client.chat.completions.create, transient, messages=messages, **options
        )
        if not response.choices:
            raise LLMError(
                f"The LLM server at {self.where()} answered with no choices; check its log."
            )
        return response.choices[0].message.content or ""


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:10])
    return shown if len(names) <= 10 else f"{shown}, ... ({len(names)} in all)"
