"""The image backends' contract and registry (torch-free).

An image backend turns `RenderRequest`s into PIL images. It declares what it can do
(`Capabilities`: modes, samplers, sizes, seeds, reference images), names itself for cache keys
and provenance, and renders. Per-image facts a backend learns while rendering (DALL-E 3's revised
prompt) travel in the returned image's `info` dict and are recorded in the PNG's provenance by the
image service.

Backends are chosen by the `image_model` setting: `openai:<model>` for OpenAI Images
(`openai:gpt-image-1`, `openai:dall-e-3`, `openai:dall-e-2`), anything else for diffusers (hub id,
folder, `.safetensors` file, `demo`, `auto`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from studio.core.config import setting
from studio.core.errors import ParameterError
from studio.core.params import MODES, SAMPLER_NAMES, RenderRequest

if TYPE_CHECKING:
    from PIL import Image


# step, total steps, latents (None when the backend has none to show)
StepCallback = Callable[[int, int, Any], None]
# sha256 of an input image -> the image (RGB, or L for masks)
InputResolver = Callable[[str], "Image.Image"]

OPENAI_PREFIX = "openai:"


@dataclass(frozen=True)
class Capabilities:
    """What a backend can do; the dashboard shows only the controls it supports."""

    modes: tuple[str, ...] = MODES
    samplers: tuple[str, ...] = SAMPLER_NAMES  # empty: the backend has no sampler choice
    sizes: tuple[tuple[int, int], ...] = ()  # empty: any size within studio.core.params.LIMITS
    seeds: bool = True  # False: the same request may give other pixels (a hosted model)
    negative_prompt: bool = True
    steps_and_cfg: bool = True
    strength: bool = True  # False: edits take no strength (OpenAI's API has none)
    max_batch: int = 1  # requests per call at most
    ip_adapter: bool = False  # True: takes a reference image (an IP-Adapter is loaded)
    # True: `render` reports every step's latents and `decode_latents` decodes them, so an image
    # can have a denoising strip (studio.images.strips); a hosted API returns only finished images
    intermediates: bool = False
    # True: prompt weights, BREAK, long prompts, blends and LoRA tags (a diffusers pipeline)
    prompt_syntax: bool = True
    # The control types guided generation takes (a ControlNet configured for each)
    controlnet: tuple[str, ...] = ()

    def check(self, request: RenderRequest, backend: str) -> None:
        """Refuse a request this backend cannot honour, saying what it can do instead."""
        if request.mode not in self.modes:
            raise ParameterError(
                f"{backend} cannot do {request.mode}; it does {', '.join(self.modes)}."
            )
        if self.sizes and (request.width, request.height) not in self.sizes:
            sizes = ", ".join(f"{w}x{h}" for w, h in self.sizes)
            raise ParameterError(
                f"{backend} makes only these sizes: {sizes}; not {request.width}x{request.height}."
            )
        if not self.prompt_syntax and (
            request.loras or request.long_prompt or request.blend_prompt
        ):
            raise ParameterError(
                f"{backend} reads the prompt as plain text: it takes no LoRA tags, long-prompt "
                "chunks or prompt blends; use a diffusers image model for them."
            )
        if request.control_image is not None and request.control_type not in self.controlnet:
            offered = ", ".join(self.controlnet) or "none"
            raise ParameterError(
                f"{backend} has no ControlNet for {request.control_type!r} (configured: "
                f"{offered}); set {setting('controlnets')} to e.g. "
                f"{request.control_type}=<hub id or folder> (diffusers image models only), or "
                "leave the control image out."
            )
        if request.reference_image is not None and not self.ip_adapter:
            raise ParameterError(
                f"{backend} has no IP-Adapter, so it cannot take a reference image; set "
                f"{setting('ip_adapter')} to IP-Adapter weights (diffusers image models only), "
                "or leave the reference image out."
            )


class ImageBackend(Protocol):
    """What the image service needs of a backend."""

    capabilities: Capabilities

    @property
    def label(self) -> str:
        """The model's name in A1111's `Model:` field (says "placeholder" for the demo)."""
        ...

    @property
    def placeholder(self) -> bool:
        """True when the images are not art (the untrained demo model)."""
        ...

    @property
    def device(self) -> str: ...

    @property
    def notes(self) -> list[str]:
        """Warnings for the user (say, a stand-in model), printed by the CLI."""
        ...

    def identity(self) -> dict[str, str]:
        """Model name, kind and revision, as they go into cache keys and provenance."""
        ...

    @property
    def model_sha256(self) -> str | None:
        """The sha256 of the model's checkpoint file (a diffusers model: the single file, else
        its UNet's weights), hashed once per process on first use; None for a hosted model.
        A1111's /sdapi/v1/sd-models lists it as `sha256`."""
        ...

    @property
    def model_hash(self) -> str | None:
        """A1111's short model hash, the first 10 hex characters of `model_sha256` (the PNGs'
        `Model hash`, passed to the image service in `provenance` as `model_hash`, never in a
        cache key); None for a hosted model."""
        ...

    def cache_key(self, request: RenderRequest) -> str: ...

    def provenance(self, request: RenderRequest) -> dict[str, Any]: ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in the text encoder's window (prompt fitting)."""
        ...

    def render(
        self,
        requests: Sequence[RenderRequest],
        on_step: StepCallback | None = None,
        inputs: InputResolver | None = None,
    ) -> list[Image.Image]: ...
