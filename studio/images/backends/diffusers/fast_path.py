"""The fast CUDA path: what is done to a loaded pipeline, and to each batch, to render faster.

    fast = fast_path_for(settings, device)                # None: eager, as loaded
    info = apply_fast_path(pipe, fast, compile_cache)     # once, on the shared components
    size = fast.padded(len(batch))                        # the batch is padded to a bucket
    with fast.serving() as served: pipe(...)              # served(): "compiled", "eager", ...

On by default on CUDA (`fast_path` = auto), `off` turns it off, `on` forces it elsewhere (the
tests run it on the CPU with the tiny model). What it does:

- attention through PyTorch's SDPA (diffusers' default processor on torch 2; recorded);
- fused QKV projections in the UNet's and VAE's attention (not with an IP-Adapter, whose own
  attention processors would be replaced); channels_last only when asked (`channels_last`): on
  an H200 it made eager SD 1.5 slower (issue 28's measurements);
- `torch.compile` of the UNet (`compile_mode`, `default` unless set: max-autotune spent minutes
  per shape autotuning on an H200), the whole UNet as one graph (`compile_scope` = whole, what
  was measured at 8.4 images/s) or only its repeated transformer blocks (`regional`, diffusers'
  `_repeated_blocks`: a fraction of the compile time). The VAE decoder stays eager. The whole
  UNet is compiled with static shapes, a graph per batch bucket (torch would otherwise turn the
  second bucket's graph into a dynamic-shape one serving all); the regional blocks keep torch's
  automatic dynamic shapes, as SD 1.5's repeat at four sizes (channels, tokens) per batch, which
  static graphs would spend torch's limit of 8 recompiles on within two buckets.
- **nobody waits for a compile**: the compiled forward is a twin of the eager one
  (`CompileGate`, the module's weights shared). A call whose input shapes were not compiled yet
  runs eager, and a copy of its inputs goes to a background thread that compiles that shape and
  runs it once; calls of that shape take the compiled forward from then on (the next denoising
  step, even within one image). `background=False` compiles in line instead (the bench's
  throughput runs). A shape whose compile fails, and any shape past `max_shapes`, stays eager;
- the compiled code is cached on disk (inductor's FX graph and AOTAutograd caches in
  `TORCHINDUCTOR_CACHE_DIR`, under the studio's cache folder unless set), so a second process
  loads kernels instead of compiling them;
- batches are padded to one of `BATCH_BUCKETS` (the extra images are dropped), so a few shapes
  serve every batch size;
- the VAE decodes one image at a time from `vae_slicing_from` images a batch and in tiles above
  `vae_tiling_from` pixels, so the decode never holds the memory of a whole big batch;
- `fp8` (an experiment, off by default): the UNet's linear layers in float8 through torchao, on
  a GPU of compute capability 8.9 or newer (Ada, Hopper).

The fast path's output equals the eager path's within a tolerance
(tests/images/test_fast_path.py: the same seed, the same image up to a few levels); the cache
keys do not change with it, and the PNG's provenance says which path made an image.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import inspect
import os
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from studio.core.config import FAST_PATH_CHOICES, setting
from studio.core.errors import ConfigError

if TYPE_CHECKING:
    from studio.core.config import Settings

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
MAX_SHAPES = 8  # input shapes compiled per module per process: dynamo's recompile limit
FP8_CAPABILITY = (8, 9)  # float8 matmuls: Ada (8.9) and Hopper (9.0) or newer
TORCHAO_PIN = "torchao==0.18.0"

# Inductor's on-disk caches (torch's documented switches; on by default in recent releases).
CACHE_SWITCHES = {"TORCHINDUCTOR_FX_GRAPH_CACHE": "1", "TORCHINDUCTOR_AUTOGRAD_CACHE": "1"}


class _Thread(threading.local):
    compiling = False  # this thread is the compiler's: gated calls take the compiled forward
    served: set[str] | None = None  # the paths gated calls took in the current `serving()`
    state: frozenset | None = None  # the adapters' state in the current `serving()`


_thread = _Thread()


def signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple:
    """What a compiled graph is specialised on, as far as the caller can tell: each tensor's
    shape, dtype and device, and the other arguments' values (nested in lists and dicts)."""

    def of(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return ("tensor", tuple(value.shape), str(value.dtype), str(value.device))
        if isinstance(value, dict):
            return ("dict", tuple(sorted((str(k), of(v)) for k, v in value.items())))
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, tuple(of(v) for v in value))
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return type(value).__name__

    return (of(args), of(kwargs))


def adapter_state(unet: Any) -> frozenset:
    """What a compiled graph of `unet` is specialised on besides its inputs: the LoRA adapters
    active in each PEFT layer and their scales, and the IP-Adapter processors' scales (floats
    dynamo guards on). A change (another LoRA weight, a reference's scale) would recompile in
    the caller's thread; as part of a call's signature it is compiled in the background instead,
    like a new shape."""
    states: set[tuple] = set()
    for module in unet.modules():
        scaling = getattr(module, "scaling", None)
        if isinstance(scaling, dict):  # a PEFT LoRA layer
            active = tuple(getattr(module, "active_adapters", ()))
            off = bool(getattr(module, "disable_adapters", False))
            states.add(("lora", off, active, tuple(sorted(scaling.items()))))
    for processor in getattr(unet, "attn_processors", {}).values():
        scale = getattr(processor, "scale", None)
        if isinstance(scale, (list, tuple)):  # an IP-Adapter's attention processor
            states.add(("ip_adapter", tuple(scale)))
    return frozenset(states)


def _detached(value: Any) -> Any:
    """A copy of a call's inputs the compiler thread can keep: tensors cloned, containers copied."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_detached(v) for v in value)
    return value


class Compiler:
    """The background thread that compiles the shapes gated calls ask for, one at a time."""

    def __init__(self) -> None:
        self._jobs: queue.Queue[tuple[CompileGate, tuple, tuple, dict]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0

    def submit(self, gate: CompileGate, sig: tuple, args: tuple, kwargs: dict) -> None:
        with self._lock:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="studio-compiler", daemon=True
                )
                self._thread.start()
        self._jobs.put((gate, sig, args, kwargs))

    def _run(self) -> None:
        _thread.compiling = True
        while True:
            gate, sig, args, kwargs = self._jobs.get()
            try:
                gate.build(sig, args, kwargs)
            finally:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every submitted shape is compiled (or failed); False on timeout."""
        with self._lock:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)


class CompileGate:
    """A module's forward and its compiled twin (`torch.compile` of the same bound forward: the
    weights are shared), chosen per call by input shape: compiled once that shape is built,
    else eager while the `compiler` builds it in the background (or, without one, compiled in
    line). Installed as the module's `forward`, so hooks, state dicts and adapters see the
    module as before."""

    def __init__(
        self,
        module: torch.nn.Module,
        options: dict[str, Any],
        compiler: Compiler | None,
        max_shapes: int,
        state_of: Callable[[], frozenset] | None = None,
    ):
        self.name = type(module).__name__
        self.state_of = state_of  # the adapters' state now (see adapter_state), for `build`
        self.eager = module.forward
        self.__signature__ = inspect.signature(self.eager)  # for callers that inspect forward
        self.__wrapped__ = self.eager
        self.compiled = torch.compile(self.eager, **options)
        self.compiler = compiler
        self.max_shapes = max_shapes
        self.ready: set[tuple] = set()
        self.pending: set[tuple] = set()
        self.failed: dict[tuple, str] = {}
        self.seconds: dict[tuple, float] = {}  # compile (and first run) time per shape
        self._lock = threading.Lock()
        module.forward = self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _thread.compiling:  # the compiler thread building a shape
            return self.compiled(*args, **kwargs)
        sig = (signature(args, kwargs), _thread.state)
        with self._lock:
            if sig in self.ready:
                path = "compiled"
            elif sig in self.pending or sig in self.failed or self._full():
                path = "eager"
            else:
                self.pending.add(sig)
                path = "compile"
        if path == "compile" and self.compiler is None:  # in line: this call compiles it
            return self._served("compiled", self.build(sig, args, kwargs))
        if path == "compile":
            self.compiler.submit(self, sig, _detached(args), _detached(kwargs))
            path = "eager"
        if path == "compiled":
            return self._served(path, self.compiled(*args, **kwargs))
        return self._served(path, self.eager(*args, **kwargs))

    def _full(self) -> bool:
        return len(self.ready) + len(self.pending) >= self.max_shapes

    @staticmethod
    def _served(path: str, output: Any) -> Any:
        if _thread.served is not None:
            _thread.served.add(path)
        return output

    def build(self, sig: tuple, args: tuple, kwargs: dict) -> Any:
        """Compile the shape `sig` by running the compiled forward on these inputs; a failure
        leaves the shape eager (and is recorded), it never fails a render. In the background the
        module is traced as it is when the compile runs: if its adapters' state is no longer the
        one `sig` was asked with (the worker moved to another LoRA weight meanwhile), or changes
        while it compiles, the graph may not be `sig`'s, so the shape is dropped, to be asked for
        again by its next call, instead of marked ready and recompiled in that caller's thread."""
        wanted = sig[1] if _thread.compiling and self.state_of is not None else None
        if wanted is not None and self.state_of() != wanted:
            self._drop(sig)
            return None
        started = time.perf_counter()
        try:
            with torch.no_grad():
                output = self.compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any compiler error: serve eager instead
            with self._lock:
                self.pending.discard(sig)
                self.failed[sig] = f"{type(exc).__name__}: {exc}"[:500]
            if not _thread.compiling:
                return self.eager(*args, **kwargs)
            return None
        if wanted is not None and self.state_of() != wanted:
            self._drop(sig)
            return None
        with self._lock:
            self.seconds[sig] = time.perf_counter() - started
            self.pending.discard(sig)
            self.ready.add(sig)
        return output

    def _drop(self, sig: tuple) -> None:
        with self._lock:
            self.pending.discard(sig)

    def forget(self) -> None:
        """The module changed (an adapter loaded): shapes are built again before use."""
        with self._lock:
            self.ready.clear()
            self.failed.clear()


@dataclass
class FastPath:
    """What the fast path does; `compile_backend` may be a callable (a test's counting one)."""

    channels_last: bool = False
    fuse_qkv: bool = True
    compile: bool = True
    compile_backend: str | Callable[..., Any] = "inductor"
    compile_mode: str = "default"
    compile_scope: str = "whole"  # or "regional": the UNet's repeated blocks only
    background: bool = True  # compile in a background thread, serving eager meanwhile
    fp8: bool = False
    batch_buckets: tuple[int, ...] = BATCH_BUCKETS
    max_shapes: int = MAX_SHAPES
    vae_slicing_from: int = 8  # images per batch from which the VAE decodes one at a time
    vae_tiling_from: int = 1024 * 1024  # pixels per image above which the VAE decodes in tiles
    gates: list[CompileGate] = field(default_factory=list)
    compiler: Compiler | None = None

    def padded(self, count: int) -> int:
        """The batch size `count` requests are padded to: the smallest bucket that holds them."""
        if not self.compile:
            return count
        return next((bucket for bucket in self.batch_buckets if bucket >= count), count)

    def pad(self, items: list[Any]) -> list[Any]:
        """`items` padded to `padded(len(items))` with copies of the last one."""
        return [*items, *[items[-1]] * (self.padded(len(items)) - len(items))]

    def call(self, pipe: Any, arguments: dict[str, Any]) -> Any:
        """Run the pipeline; each image it returns says which path made it (`render_path` in
        its info, which the PNG's provenance records)."""
        with self.serving(adapter_state(pipe.unet)) as served:
            result = pipe(**arguments)
        for image in getattr(result, "images", None) or []:
            if hasattr(image, "info"):
                image.info["render_path"] = served()
        return result

    @contextlib.contextmanager
    def serving(self, state: frozenset | None = None) -> Iterator[Callable[[], str]]:
        """Run a pipeline call (its adapters in `state`, see `adapter_state`); yields a function
        that says which path served it: "compiled", "eager" (its shapes are being compiled, or
        not compiled at all), "eager, then compiled" (a shape became ready during the call) or
        "eager" when nothing is gated."""
        served: set[str] = set()
        previous = _thread.served, _thread.state
        _thread.served, _thread.state = served, state
        try:
            yield lambda: describe_served(served)
        finally:
            _thread.served, _thread.state = previous

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Block until the background compiles asked for so far are done (tests, the bench)."""
        return self.compiler is None or self.compiler.wait(timeout)

    def forget_shapes(self) -> None:
        for gate in self.gates:
            gate.forget()

    def take_lora(self, unet: Any, info: dict[str, Any]) -> None:
        """A LoRA was just loaded into `unet`. Its layers sit in to_q, to_k and to_v, which fused
        QKV projections bypass, so the unet goes back to separate projections (for good: a loaded
        LoRA stays loaded, off when unused) and `info` (its pipeline's fast-path record) says so;
        the compiled shapes are built again with the new layers, served eager meanwhile."""
        if getattr(unet, "original_attn_processors", None) is not None:  # fused
            unet.unfuse_qkv_projections()
            unet.original_attn_processors = None
            info.pop("fused_qkv", None)
        self.forget_shapes()

    def compile_report(self) -> dict[str, Any]:
        """Shapes compiled, pending and failed, and the seconds each compile took."""
        ready = sum(len(gate.ready) for gate in self.gates)
        return {
            "compiled_shapes": ready,
            "pending": sum(len(gate.pending) for gate in self.gates),
            "failed": [reason for gate in self.gates for reason in gate.failed.values()],
            "compile_seconds": round(sum(s for g in self.gates for s in g.seconds.values()), 2),
        }

    def vae_options(self, vae: Any, count: int, width: int, height: int) -> dict[str, bool]:
        """Slice and tile the VAE decode for this batch; what was chosen, for provenance."""
        slicing = count >= self.vae_slicing_from
        tiling = width * height > self.vae_tiling_from
        (vae.enable_slicing if slicing else vae.disable_slicing)()
        (vae.enable_tiling if tiling else vae.disable_tiling)()
        return {"vae_slicing": slicing, "vae_tiling": tiling}


def describe_served(paths: set[str]) -> str:
    if paths == {"compiled"}:
        return "compiled"
    if "compiled" in paths:
        return "eager, then compiled"
    return "eager"


def fast_path_for(settings: Settings, device: str) -> FastPath | None:
    """The fast path the settings ask for on `device`; None for eager (`load_settings` has
    checked the compile settings' values)."""
    choice = settings.fast_path
    if choice not in FAST_PATH_CHOICES:
        raise ConfigError(
            f"{setting('fast_path')} has to be {', '.join(FAST_PATH_CHOICES)} but is {choice!r}."
        )
    if choice == "off" or (choice == "auto" and device != "cuda"):
        return None
    return FastPath(
        compile_mode=settings.compile_mode,
        compile_scope=settings.compile_scope,
        fp8=settings.fp8 == "on",
    )


def inductor_cache_is_default() -> bool:
    """Whether TORCHINDUCTOR_CACHE_DIR is unset or torch's own default, which torch writes into
    the environment on import (`/tmp/torchinductor_<user>`, lost at reboot): a folder a person
    set is kept."""
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not current:
        return True
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        return False
    return Path(current) == Path(tempfile.gettempdir()) / f"torchinductor_{user}"


def _has_ip_adapter(unet: Any) -> bool:
    return any("IPAdapter" in type(p).__name__ for p in unet.attn_processors.values())


def check_fp8(device: str) -> None:
    """Refuse `fp8` where float8 matmuls do not run, saying why and what would."""
    if device != "cuda":
        raise ConfigError(
            f"{setting('fp8')} is on, and float8 needs an NVIDIA GPU of compute capability 8.9 or "
            f"newer (Ada, Hopper); this renderer runs on the {device.upper()}. Set it to off."
        )
    capability = torch.cuda.get_device_capability()
    if capability < FP8_CAPABILITY:
        raise ConfigError(
            f"{setting('fp8')} is on, and float8 needs compute capability 8.9 or newer; "
            f"{torch.cuda.get_device_name()} has {capability[0]}.{capability[1]}. Set it to off."
        )


def apply_fp8(unet: Any) -> dict[str, Any]:
    """The UNet's linear layers in float8 (torchao's dynamic float8 activations and weights)."""
    try:
        from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, quantize_
    except ImportError as exc:
        raise ConfigError(
            f"{setting('fp8')} is on and needs torchao: `pip install {TORCHAO_PIN}` "
            f"(or set it to off). ({exc})"
        ) from exc
    linear = 0

    def is_linear(module: torch.nn.Module, _name: str) -> bool:
        nonlocal linear
        if isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0:
            linear += 1
            return True
        return False

    quantize_(unet, Float8DynamicActivationFloat8WeightConfig(), filter_fn=is_linear)
    return {"fp8": {"linear_layers": linear, "library": TORCHAO_PIN}}


def compiled_modules(unet: Any, scope: str) -> list[torch.nn.Module]:
    """What `scope` compiles: the whole UNet, or each of its repeated blocks (the classes
    diffusers lists in the model's `_repeated_blocks`, e.g. SD's BasicTransformerBlock)."""
    if scope == "whole":
        return [unet]
    repeated = set(getattr(unet, "_repeated_blocks", None) or ())
    blocks = [m for m in unet.modules() if type(m).__name__ in repeated]
    if not blocks:
        raise ConfigError(
            f"{setting('compile_scope')} is regional, and {type(unet).__name__} names no "
            f"repeated blocks to compile; set it to whole."
        )
    return blocks


def apply_fast_path(
    pipe: Any, fast: FastPath, compile_cache: Path, device: str = "cuda"
) -> dict[str, Any]:
    """Make a loaded pipeline's shared components fast (in place: every pipeline `from_pipe`
    builds on them gets it); what was done, for provenance."""
    info: dict[str, Any] = {
        "attention": "sdpa" if hasattr(torch.nn.functional, "scaled_dot_product_attention")
        else "default",
    }  # fmt: skip
    if fast.fp8:
        check_fp8(device)
        info |= apply_fp8(pipe.unet)
    if fast.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        info["channels_last"] = True
    if fast.fuse_qkv and not _has_ip_adapter(pipe.unet):
        pipe.fuse_qkv_projections()
        info["fused_qkv"] = True
    if fast.compile:
        # Compiled kernels are kept on disk: the next process loads them instead of compiling.
        if inductor_cache_is_default():
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache)
        info["compile_cache"] = os.environ["TORCHINDUCTOR_CACHE_DIR"]
        for name, value in CACHE_SWITCHES.items():
            os.environ.setdefault(name, value)
        # The whole UNet gets a static graph per batch bucket (a second bucket would otherwise
        # turn it into one dynamic-shape graph); regional blocks repeat at several sizes inside
        # one UNet, so they keep torch's automatic dynamic shapes within the recompile limit.
        static = False if fast.compile_scope == "whole" else None
        options: dict[str, Any] = {"backend": fast.compile_backend, "fullgraph": True,
                                   "dynamic": static}  # fmt: skip
        if fast.compile_mode != "default" and fast.compile_backend == "inductor":
            options["mode"] = fast.compile_mode
        if fast.background and fast.compiler is None:
            fast.compiler = Compiler()
        state_of = functools.partial(adapter_state, pipe.unet)
        for module in compiled_modules(pipe.unet, fast.compile_scope):
            gate = CompileGate(module, options, fast.compiler, fast.max_shapes, state_of)
            fast.gates.append(gate)
        info["compiled"] = {
            "unet": fast.compile_scope,
            "shapes": "static" if static is False else "automatic dynamic",
            "backend": fast.compile_backend
            if isinstance(fast.compile_backend, str)
            else getattr(fast.compile_backend, "__name__", "custom"),
            "mode": fast.compile_mode,
            "background": fast.background,
            "buckets": list(fast.batch_buckets),
        }
    return info
