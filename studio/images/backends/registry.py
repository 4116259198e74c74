"""Which image backend the settings name, opened without loading anything heavy: OpenAI Images
for `openai:<model>`, else the diffusers renderer. Backends are imported here on demand; no
backend imports this module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from studio.images.backends.base import OPENAI_PREFIX, ImageBackend

if TYPE_CHECKING:
    from studio.core.config import Settings


# The settings `open_image_backend` reads: a backend made from these alone is the same backend.
BACKEND_SETTINGS = (
    "image_model",
    "inpaint_model",
    "cache_dir",
    "device",
    "batch_size",
    "fast_path",
    "compile_mode",
    "compile_scope",
    "fp8",
    "preview_vae",
    "step_cache",
    "ip_adapter",
    "lora_dir",
    "controlnets",
    "data_dir",  # the LoRA folder's default is inside it
    "images_base_url",
    "images_timeout",
    "llm_base_url",
)


def backend_settings(settings: Settings) -> tuple[tuple[str, Any], ...]:
    """The settings that decide the image backend, as a hashable key (for sharing one loaded
    backend between studios whose other settings differ)."""
    return tuple((name, getattr(settings, name)) for name in BACKEND_SETTINGS)


def open_image_backend(settings: Settings) -> ImageBackend:
    """The backend the `image_model` setting names (loading nothing heavy until it renders)."""
    name = settings.image_model
    if name.startswith(OPENAI_PREFIX):
        from studio.images.backends.openai_images import OpenAIImagesBackend

        return OpenAIImagesBackend.from_settings(settings)
    from studio.core.config import lora_folder, parse_controlnets
    from studio.images.backends.diffusers.adapters import resolve_ip_adapter
    from studio.images.backends.diffusers.fast_path import fast_path_for
    from studio.images.backends.diffusers.models import pick_device
    from studio.images.backends.diffusers.renderer import Renderer
    from studio.images.backends.diffusers.weights import resolve_image_model, resolve_preview_vae
    from studio.images.loras import LoraFolder

    model = resolve_image_model(name, settings.cache_dir)
    inpaint = settings.inpaint_model.strip()
    ip_adapter = settings.ip_adapter.strip()
    preview = settings.preview_vae.strip()
    return Renderer(
        model,
        settings.device,
        settings.batch_size,
        inpaint_model=resolve_image_model(inpaint, settings.cache_dir) if inpaint else None,
        ip_adapter=resolve_ip_adapter(ip_adapter, model.family) if ip_adapter else None,
        fast_path=fast_path_for(settings, pick_device(settings.device)[0]),
        compile_cache=settings.cache_dir / "inductor",
        preview_vae=resolve_preview_vae(preview, settings.cache_dir) if preview else None,
        step_cache=settings.step_cache,
        loras=LoraFolder(lora_folder(settings)),
        controlnets=parse_controlnets(settings.controlnets),
    )
