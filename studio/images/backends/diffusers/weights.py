"""Where an image model's weights come from: `resolve_image_model` (a hub id, a diffusers folder,
a single .safetensors file, `auto`, or the demo model, built on first use), the preview VAE, and
ControlNets by type.

The image model is a hub id, a local diffusers folder, a single `.safetensors` checkpoint, `demo`
(a tiny untrained pipeline built here, deterministically, whose images are placeholders) or `auto`:
Stable Diffusion 1.5 when its weights are in the Hugging Face cache or can be downloaded, else the
demo model with a warning. A model named explicitly never falls back. SD 1.x/2.x and SDXL load
alike: the family is read from the model's own files (`model_index.json`, or a single file's
tensor names), never configured and never downloaded to find out.
"""

from __future__ import annotations

import re
from pathlib import Path

from studio.core.config import setting
from studio.core.errors import RenderError
from studio.core.hub import hub_offline, hub_snapshot
from studio.images.backends.diffusers.adapters import (
    CONTROLNET_EXAMPLES,
    ControlNetSource,
    controlnet_error,
)
from studio.images.backends.diffusers.demo import (
    DEMO_CONTROLNET_VERSION,
    build_demo_controlnet,
    build_demo_model,
)
from studio.images.backends.diffusers.models import (
    DEFAULT_MODEL,
    DEFAULT_MODEL_FILES,
    DEMO_MODEL,
    DEMO_VERSION,
    ImageModel,
    local_revision,
)
from studio.images.control import DEMO_CONTROLNET

DOWNLOAD_REASON_LIMIT = 300  # characters of the hub's message in the demo model's warning


def resolve_controlnet(control_type: str, name: str, model: ImageModel) -> ControlNetSource:
    """Find the ControlNet `name` (a hub id, a folder with a diffusers ControlNetModel, or `demo`
    for the demo model) for `control_type`; a clear `RenderError` naming the setting if not."""
    if name == DEMO_CONTROLNET:
        if model.name != DEMO_MODEL:
            raise controlnet_error(
                control_type, name, f"the demo ControlNet fits only the demo image model, not "
                f"{model.name!r}; use {CONTROLNET_EXAMPLES[model.family]}."
            )  # fmt: skip
        folder = build_demo_controlnet(Path(model.source).parent / DEMO_CONTROLNET_VERSION)
        return ControlNetSource(control_type, name, str(folder), local_revision(folder))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() or not list(path.glob("*.safetensors")):
            raise controlnet_error(
                control_type, name, f"{path} holds no diffusers ControlNetModel (config.json and "
                "a .safetensors file, as save_pretrained writes)."
            )  # fmt: skip
        return ControlNetSource(control_type, name, str(path.resolve()), local_revision(path))
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise controlnet_error(control_type, name, "no such folder, and not a hub id (owner/name).")
    patterns = ["config.json", "*.safetensors"]
    try:
        try:
            snapshot = hub_snapshot(name, patterns, local_only=True)
        except Exception:
            snapshot = hub_snapshot(name, patterns, local_only=False)
    except Exception as exc:
        raise controlnet_error(
            control_type, name, f"not in the Hugging Face cache and it could not be downloaded "
            f"({type(exc).__name__}); check the name and the network, or give a local folder."
        ) from None  # fmt: skip
    return ControlNetSource(control_type, name, str(snapshot), snapshot.name)


def download_failure(exc: Exception) -> str:
    """Why the default weights could not be had, in whole words for the demo model's warning:
    HF_HUB_OFFLINE when it is set (the hub's own advice, to pass `local_files_only=False`, is no
    flag of ours), else the first sentence of the hub's message, never cut inside a word."""
    if hub_offline():
        return "HF_HUB_OFFLINE is set, so nothing is downloaded"
    line = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    line = line.removeprefix("Got: ")  # huggingface_hub's "Got: ConnectError: ..."
    sentence = re.split(r"(?<=[.!?])\s", line, maxsplit=1)[0].rstrip(".")
    if len(sentence) > DOWNLOAD_REASON_LIMIT:
        sentence = sentence[:DOWNLOAD_REASON_LIMIT].rsplit(" ", 1)[0] + "…"
    return sentence or type(exc).__name__


def resolve_image_model(name: str, cache_dir: Path) -> ImageModel:
    """Find the weights for `name`; `auto` falls back to the demo model, explicit names never do."""
    if not name.strip():
        raise RenderError(
            f"The image model is empty; set {setting('image_model')} to auto, demo, a hub "
            "id (owner/name), a diffusers folder or a .safetensors file."
        )
    if name == DEMO_MODEL:
        folder = build_demo_model(cache_dir / "models" / DEMO_VERSION)
        return ImageModel(DEMO_MODEL, "demo", str(folder), local_revision(folder), placeholder=True)
    if name == "auto":
        try:
            try:
                snapshot = hub_snapshot(DEFAULT_MODEL, DEFAULT_MODEL_FILES, local_only=True)
            except Exception:
                snapshot = hub_snapshot(DEFAULT_MODEL, DEFAULT_MODEL_FILES, local_only=False)
            return ImageModel(DEFAULT_MODEL, "hub", DEFAULT_MODEL, snapshot.name, variant="fp16")
        except Exception as exc:
            demo = resolve_image_model(DEMO_MODEL, cache_dir)
            demo.notes.append(
                f"No Stable Diffusion weights on disk and none could be downloaded "
                f"({download_failure(exc)}). "
                "Using the untrained demo model: its images are PLACEHOLDERS, not art. "
                f"Set {setting('image_model')} to a hub id, a diffusers folder or a "
                ".safetensors file."
            )
            return demo
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise RenderError(
                f"{path} is not a diffusers model folder (no model_index.json); point "
                f"{setting('image_model')} at a folder saved with save_pretrained or at a "
                ".safetensors file."
            )
        return ImageModel(name, "folder", str(path.resolve()), local_revision(path))
    if path.suffix in {".safetensors", ".ckpt", ".pt", ".bin"} or path.exists():
        if path.suffix != ".safetensors":
            raise RenderError(
                f"{path}: only .safetensors checkpoints are loaded (pickled weights can run code); "
                "convert it to safetensors first."
            )
        if not path.is_file():
            raise RenderError(f"Image model file {path} does not exist.")
        stat = path.stat()
        return ImageModel(name, "file", str(path.resolve()), f"{stat.st_size}:{stat.st_mtime_ns}")
    looks_like_path = name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1
    if looks_like_path:
        raise RenderError(
            f"Image model path {path} does not exist; point {setting('image_model')} "
            "at a diffusers folder or a .safetensors file, or use 'auto' or 'demo'."
        )
    if name.count("/") == 1:
        try:
            snapshot = hub_snapshot(name, None, local_only=True)
        except Exception:
            try:
                snapshot = hub_snapshot(name, None, local_only=False)
            except Exception as exc:
                raise RenderError(
                    f"Image model {name!r} is no folder here, is not in the Hugging Face cache "
                    f"and could not be downloaded ({type(exc).__name__}). Check the name and the "
                    "network, or pass a local folder or .safetensors file."
                ) from None
        return ImageModel(name, "hub", str(snapshot), snapshot.name)
    raise RenderError(
        f"Image model {name!r} is neither a folder, a .safetensors file, a hub id (owner/name), "
        f"'demo' nor 'auto'; set {setting('image_model')} to one of them."
    )


def resolve_preview_vae(name: str, cache_dir: Path) -> ImageModel:
    """The tiny VAE (TAESD, diffusers' `AutoencoderTiny`) that the `preview_vae` setting names:
    a folder with its config.json and safetensors weights, or a hub id (the Hugging Face cache's,
    else downloaded, not when HF_HUB_OFFLINE), e.g. madebyollin/taesd for SD 1.x."""
    path = Path(name).expanduser()
    if path.is_dir():
        source, kind = path.resolve(), "folder"
    elif name.count("/") == 1 and not name.startswith((".", "/", "~")):
        kind = "hub"
        try:
            source = hub_snapshot(name, None, local_only=True)
        except Exception:
            try:
                source = hub_snapshot(name, None, local_only=False)
            except Exception as exc:
                raise RenderError(
                    f"The preview VAE {name!r} ({setting('preview_vae')}) is no folder here, is "
                    f"not in the Hugging Face cache and could not be downloaded "
                    f"({type(exc).__name__}); point it at a TAESD folder, or leave it empty."
                ) from None
    else:
        raise RenderError(
            f"The preview VAE folder {path} ({setting('preview_vae')}) does not exist; point it "
            "at a TAESD folder (config.json + diffusion_pytorch_model.safetensors), a hub id "
            "such as madebyollin/taesd, or leave it empty."
        )
    if not (source / "config.json").is_file() or not any(source.glob("*.safetensors")):
        raise RenderError(
            f"{source} ({setting('preview_vae')}) has no config.json and .safetensors weights, "
            "so it is no diffusers AutoencoderTiny (TAESD) folder."
        )
    revision = source.name if kind == "hub" else local_revision(source)
    return ImageModel(name, kind, str(source), revision)
