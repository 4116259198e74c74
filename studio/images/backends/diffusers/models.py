"""Image models as the renderer sees them: `ImageModel` (family, revision, files), the device and
dtype, and the loaders of pipelines and tokenizers."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
)
from transformers import (
    CLIPTokenizer,
)

from studio.core.config import setting
from studio.core.errors import RenderError
from studio.core.hub import CLIP_TOKENIZER_DIR, SD, SDXL, hub_snapshot
from studio.images.backends.diffusers.schedulers import SD15_SCHEDULER_CONFIG

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEMO_MODEL = "demo"
DEMO_VERSION = "demo-v2"  # v2: two attention heads instead of eight (faster, other pixels)
# What `auto` downloads of the default model: the fp16 safetensors and the configs, ~2 GB.
DEFAULT_MODEL_FILES = [
    "model_index.json",
    "scheduler/*.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.fp16.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.fp16.safetensors",
]


def pick_device(preference: str = "auto") -> tuple[str, torch.dtype]:
    """(device, dtype): cuda, then mps, then cpu; fp16 on a GPU, fp32 on the CPU."""
    if preference == "auto":
        if torch.cuda.is_available():
            preference = "cuda"
        elif torch.backends.mps.is_available():
            preference = "mps"
        else:
            preference = "cpu"
    if preference == "cuda" and not torch.cuda.is_available():
        raise RenderError(
            f"{setting('device')} is cuda but no CUDA GPU is visible; set it to auto."
        )
    if preference == "mps" and not torch.backends.mps.is_available():
        raise RenderError(f"{setting('device')} is mps but MPS is not available; set it to auto.")
    return preference, (torch.float32 if preference == "cpu" else torch.float16)


@dataclass(frozen=True)
class ImageModel:
    """A resolved image model: where its weights are and what to call it."""

    name: str  # what the user asked for, or the default's hub id
    kind: str  # hub, folder, file or demo
    source: str  # hub id, folder or file path
    revision: str  # hub commit, or a hash of the local weights' names, sizes and times
    placeholder: bool = False  # True for the untrained demo model
    variant: str | None = None  # "fp16" for the default model's fp16 files
    notes: list[str] = field(default_factory=list, compare=False)  # warnings for the user

    @property
    def label(self) -> str:
        """The model's name in A1111's `Model:` field."""
        return f"{DEMO_VERSION} (placeholder)" if self.placeholder else self.name

    def identity(self) -> dict[str, str]:
        return {"model": self.name, "kind": self.kind, "revision": self.revision}

    @cached_property
    def family(self) -> str:
        """`sdxl` or `sd` (1.x/2.x), from the model's own files; nothing is downloaded."""
        if self.kind == "file":
            return _file_family(Path(self.source))
        index = Path(self.source) / "model_index.json"
        if not index.is_file():  # the default hub model, by id: SD 1.5
            return SD
        config = json.loads(index.read_text(encoding="utf-8"))
        xl = "XL" in str(config.get("_class_name", "")) or "text_encoder_2" in config
        return SDXL if xl else SD

    def scheduler_base_config(self) -> dict[str, Any]:
        if self.kind in {"folder", "demo"}:
            path = Path(self.source) / "scheduler" / "scheduler_config.json"
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
        return dict(SD15_SCHEDULER_CONFIG)


def _file_family(path: Path) -> str:
    """The family of a single-file checkpoint, from its tensor names (the header only)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            names = list(weights.keys())
    except Exception as exc:
        raise RenderError(
            f"{path} is not a readable .safetensors checkpoint ({exc}); point "
            "STUDIO_IMAGE_MODEL at a complete file or a diffusers folder."
        ) from None
    # SDXL checkpoints keep their two text encoders under `conditioner.embedders`.
    return SDXL if any(name.startswith("conditioner.embedders.") for name in names) else SD


def local_revision(folder: Path, files: Sequence[Path] | None = None) -> str:
    """Cheap identity of local weights: names, sizes and modification times of `files` (by
    default every .safetensors, .json and .txt file in `folder`)."""
    if files is None:
        files = [
            path
            for path in sorted(folder.rglob("*"))
            if path.is_file() and path.suffix in {".safetensors", ".json", ".txt"}
        ]
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


# The sha256 of weight files, hashed once per process: (resolved path, size, mtime) -> hex digest.
_FILE_SHA256: dict[tuple[str, int, int], str] = {}
_FILE_SHA256_LOCK = threading.Lock()  # one thread hashes a file; the others wait for its digest


def file_sha256(path: Path) -> str:
    """The sha256 of the file at `path` (a symlink's target), read once per process while its
    size and modification time stay the same: a multi-GB checkpoint takes seconds."""
    real = path.resolve()
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime_ns)
    with _FILE_SHA256_LOCK:
        if key not in _FILE_SHA256:
            digest = hashlib.sha256()
            with real.open("rb") as file:
                while chunk := file.read(1 << 22):
                    digest.update(chunk)
            _FILE_SHA256[key] = digest.hexdigest()
        return _FILE_SHA256[key]


def hashed_weights(model: ImageModel) -> Path | None:
    """The file A1111's model hash is taken over: a single-file checkpoint itself; else the
    UNet's weights of the diffusers folder, hub snapshot or demo model (the demo's are built
    deterministically, so its hash is the same in every process); None when there is none."""
    if model.kind == "file":
        return Path(model.source)
    folder = Path(model.source)
    if model.kind == "hub" and not folder.is_dir():  # the default model, by id
        try:
            folder = hub_snapshot(model.source, DEFAULT_MODEL_FILES, local_only=True)
        except Exception:
            return None
    names = ["diffusion_pytorch_model.safetensors"]
    if model.variant:
        names.insert(0, f"diffusion_pytorch_model.{model.variant}.safetensors")
    return next((folder / "unet" / n for n in names if (folder / "unet" / n).is_file()), None)


def weights_sha256(model: ImageModel) -> str | None:
    """The sha256 of `hashed_weights(model)` (A1111's /sdapi/v1/sd-models `sha256`); its first
    10 hex characters are A1111's `Model hash`."""
    path = hashed_weights(model)
    try:
        return file_sha256(path) if path is not None else None
    except OSError:  # not on this machine (rendered elsewhere), unreadable: no hash, no failure
        return None


def load_tokenizer(model: ImageModel) -> CLIPTokenizer:
    """The model's own tokenizer, without loading its weights (SDXL: the first of its two, which
    shares CLIP's vocabulary and 77-token window with the second)."""
    if model.kind in {"folder", "demo"}:
        return CLIPTokenizer.from_pretrained(model.source, subfolder="tokenizer")
    if model.kind == "hub":
        snapshot = (
            model.source
            if Path(model.source).is_dir()
            else hub_snapshot(model.source, DEFAULT_MODEL_FILES, local_only=True)
        )
        return CLIPTokenizer.from_pretrained(snapshot, subfolder="tokenizer")
    # Single files carry no tokenizer files: SD 1.x's and SDXL's first are CLIP ViT-L's.
    return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)


def count_tokens(tokenizer: CLIPTokenizer, text: str) -> int:
    """Tokens `text` takes in the CLIP window, BOS and EOS included."""
    return len(tokenizer(text, truncation=False).input_ids)


# (family, task) -> the pipeline class a single-file checkpoint loads as.
SINGLE_FILE_PIPELINES: dict[tuple[str, str], type] = {
    (SD, "text2image"): StableDiffusionPipeline,
    (SDXL, "text2image"): StableDiffusionXLPipeline,
    (SD, "inpaint"): StableDiffusionInpaintPipeline,
    (SDXL, "inpaint"): StableDiffusionXLInpaintPipeline,
}
AUTO_PIPELINES = {"text2image": AutoPipelineForText2Image, "inpaint": AutoPipelineForInpainting}


def _family_options(family: str) -> dict[str, Any]:
    """Pipeline arguments per family: no safety checker (SD), no invisible watermark (SDXL: it
    would change pixels depending on whether its package happens to be installed)."""
    return {"add_watermarker": False} if family == SDXL else {"safety_checker": None}


def load_pipeline(
    model: ImageModel, device: str, dtype: torch.dtype, task: str = "text2image"
) -> DiffusionPipeline:
    """Load a model's weights (safetensors only) onto `device` as a text-to-image pipeline, or an
    inpainting one (`task="inpaint"`, for a dedicated inpainting checkpoint). SD and SDXL alike:
    folders and hub ids through diffusers' AutoPipeline classes, which read `model_index.json`;
    single files through `from_single_file` of the family's class."""
    options: dict[str, Any] = {"dtype": dtype, **_family_options(model.family)}
    try:
        if model.kind == "file":
            pipe_class = SINGLE_FILE_PIPELINES[model.family, task]
            pipe = pipe_class.from_single_file(model.source, **options)
        else:
            if model.kind == "hub" and model.variant:
                options["variant"] = model.variant
            pipe = AUTO_PIPELINES[task].from_pretrained(
                model.source, use_safetensors=True, local_files_only=True, **options
            )
    except Exception as exc:
        raise RenderError(f"Could not load image model {model.name!r}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
