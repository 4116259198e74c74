"""The fast CUDA path: what is done to a loaded pipeline, and to each batch, to render faster.

    fast = fast_path_for(settings.fast_path, device)      # None: eager, as loaded
    info = apply_fast_path(pipe, fast, compile_cache)     # once, on the shared components
    size = fast.padded(len(batch))                        # the batch is padded to a bucket
    with fast.stance(size, width, height): pipe(...)      # eager past the compiled shapes

On by default on CUDA (`fast_path` = auto), `off` turns it off, `on` forces it elsewhere (the
tests run it on the CPU with the tiny model). What it does:

- attention through PyTorch's SDPA (diffusers' default processor on torch 2; recorded);
- the UNet and VAE in channels_last memory format;
- fused QKV projections in the UNet's and VAE's attention (not with an IP-Adapter, whose own
  attention processors would be replaced);
- `torch.compile` of the UNet and of the VAE decoder, each as one graph (`nn.Module.compile`, in
  place, so every pipeline `from_pipe` builds shares it). Not block by block: SD's UNet blocks
  differ in channel width, and dynamo compiles a block's code again for each width until its
  recompile limit (8) and then falls back to eager (seen here on the tiny model's ResNet
  blocks). The compiled code is cached on disk (`TORCHINDUCTOR_CACHE_DIR`, under the studio's
  cache folder unless set), so a restart loads kernels instead of compiling them;
- no recompiles in use: batches are padded to one of `BATCH_BUCKETS` (the extra images are
  dropped), and at most `MAX_SHAPES` (batch bucket, size) pairs are compiled, the first ones
  asked for (under dynamo's limit); any other pair runs eager instead of compiling again;
- the VAE decodes one image at a time from `vae_slicing_from` images a batch and in tiles above
  `vae_tiling_from` pixels, so the decode never holds the memory of a whole big batch.

The fast path's output equals the eager path's within a tolerance
(tests/images/test_fast_path.py: the same seed, the same image up to a few levels); the cache
keys do not change with it, and the PNG's provenance says which path made an image.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from studio.core.config import FAST_PATH_CHOICES, setting
from studio.core.errors import ConfigError

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32)
MAX_SHAPES = 8  # (batch bucket, size) pairs compiled per process: dynamo's recompile limit


@dataclass
class FastPath:
    """What the fast path does; `compile_backend` may be a callable (a test's counting one)."""

    channels_last: bool = True
    fuse_qkv: bool = True
    compile: bool = True
    compile_backend: str | Callable[..., Any] = "inductor"
    compile_mode: str | None = "max-autotune-no-cudagraphs"
    batch_buckets: tuple[int, ...] = BATCH_BUCKETS
    max_shapes: int = MAX_SHAPES
    vae_slicing_from: int = 8  # images per batch from which the VAE decodes one at a time
    vae_tiling_from: int = 1024 * 1024  # pixels per image above which the VAE decodes in tiles
    compiled_shapes: list[tuple[int, int, int]] = field(default_factory=list)  # (batch, w, h)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def padded(self, count: int) -> int:
        """The batch size `count` requests are padded to: the smallest bucket that holds them."""
        if not self.compile:
            return count
        return next((bucket for bucket in self.batch_buckets if bucket >= count), count)

    def compiled_shape(self, batch: int, width: int, height: int) -> bool:
        """Whether a padded batch of `batch` at (width, height) runs compiled: a shape compiled
        before, or a new one while fewer than `max_shapes` are."""
        if not self.compile:
            return False
        shape = (batch, width, height)
        with self._lock:
            if shape in self.compiled_shapes:
                return True
            if len(self.compiled_shapes) < self.max_shapes:
                self.compiled_shapes.append(shape)
                return True
            return False

    @contextlib.contextmanager
    def stance(self, batch: int, width: int, height: int) -> Iterator[bool]:
        """Run the block compiled, or eager for a shape outside the budget (no recompile);
        yields whether it runs compiled."""
        if not self.compile or self.compiled_shape(batch, width, height):
            yield self.compile
            return
        with torch.compiler.set_stance("force_eager"):
            yield False

    def vae_options(self, vae: Any, count: int, width: int, height: int) -> dict[str, bool]:
        """Slice and tile the VAE decode for this batch; what was chosen, for provenance."""
        slicing = count >= self.vae_slicing_from
        tiling = width * height > self.vae_tiling_from
        (vae.enable_slicing if slicing else vae.disable_slicing)()
        (vae.enable_tiling if tiling else vae.disable_tiling)()
        return {"vae_slicing": slicing, "vae_tiling": tiling}


def fast_path_for(choice: str, device: str) -> FastPath | None:
    """The fast path the `fast_path` setting asks for on `device`; None for eager."""
    if choice not in FAST_PATH_CHOICES:
        raise ConfigError(
            f"{setting('fast_path')} has to be {', '.join(FAST_PATH_CHOICES)} but is {choice!r}."
        )
    if choice == "off" or (choice == "auto" and device != "cuda"):
        return None
    return FastPath()


def _has_ip_adapter(unet: Any) -> bool:
    return any("IPAdapter" in type(p).__name__ for p in unet.attn_processors.values())


def apply_fast_path(pipe: Any, fast: FastPath, compile_cache: Path) -> dict[str, Any]:
    """Make a loaded pipeline's shared components fast (in place: every pipeline `from_pipe`
    builds on them gets it); what was done, for provenance."""
    info: dict[str, Any] = {
        "attention": "sdpa" if hasattr(torch.nn.functional, "scaled_dot_product_attention")
        else "default",
    }  # fmt: skip
    if fast.channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
        info["channels_last"] = True
    if fast.fuse_qkv and not _has_ip_adapter(pipe.unet):
        pipe.fuse_qkv_projections()
        info["fused_qkv"] = True
    if fast.compile:
        # Compiled kernels are kept on disk: the next process loads them instead of compiling.
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compile_cache))
        options: dict[str, Any] = {"backend": fast.compile_backend, "fullgraph": True}
        if fast.compile_mode and fast.compile_backend == "inductor":
            options["mode"] = fast.compile_mode
        pipe.unet.compile(**options)
        pipe.vae.decoder.compile(**options)
        info["compiled"] = {
            "unet": True,
            "vae_decoder": True,
            "backend": fast.compile_backend
            if isinstance(fast.compile_backend, str)
            else getattr(fast.compile_backend, "__name__", "custom"),
            "mode": options.get("mode", "default"),
            "buckets": list(fast.batch_buckets),
        }
    return info
