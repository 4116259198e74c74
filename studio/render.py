"""Stable Diffusion rendering: model loading, device and dtype, the sampler registry, seeds.

The image model is a hub id, a local diffusers folder, a single `.safetensors` checkpoint, `demo`
(a tiny untrained pipeline built here, deterministically, whose images are placeholders) or `auto`:
Stable Diffusion 1.5 when its weights are in the Hugging Face cache or can be downloaded, else the
demo model with a warning. A model named explicitly never falls back.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from PIL import Image

from studio.errors import RenderError
from studio.image_backends import Capabilities, InputResolver
from studio.metadata import json_safe
from studio.params import CLIP_WINDOW, SAMPLER_NAMES, RenderRequest, check_sampler

transformers.logging.set_verbosity_error()  # quiet the optional-torchvision notices at import

from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

diffusers_logging.set_verbosity_error()
diffusers_logging.disable_progress_bar()  # the studio draws its own progress
transformers.logging.disable_progress_bar()

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEMO_MODEL = "demo"
DEMO_VERSION = "demo-v1"
CLIP_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "clip-tokenizer"
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

# Sampler names as AUTOMATIC1111 shows them -> diffusers scheduler class and config overrides.
SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "Heun": (HeunDiscreteScheduler, {}),
    "LMS": (LMSDiscreteScheduler, {}),
    "LMS Karras": (LMSDiscreteScheduler, {"use_karras_sigmas": True}),
    "DPM2": (KDPM2DiscreteScheduler, {}),
    "DPM2 a": (KDPM2AncestralDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "DPM++ SDE": (DPMSolverSinglestepScheduler, {}),
    "DDIM": (DDIMScheduler, {}),
    "PNDM": (PNDMScheduler, {"skip_prk_steps": True}),
    "UniPC": (UniPCMultistepScheduler, {}),
    "DEIS": (DEISMultistepScheduler, {}),
}

# Stable Diffusion 1.5's scheduler config: the base every sampler above starts from when a
# checkpoint brings none of its own (single files, the demo model).
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "skip_prk_steps": True,
    "prediction_type": "epsilon",
}


if tuple(SCHEDULERS) != SAMPLER_NAMES:
    raise ImportError("studio.render.SCHEDULERS and studio.params.SAMPLER_NAMES disagree")


def make_scheduler(name: str, base_config: dict[str, Any]) -> Any:
    """A fresh scheduler of sampler `name`, from the model's own scheduler config."""
    check_sampler(name)
    scheduler_class, overrides = SCHEDULERS[name]
    return scheduler_class.from_config({**base_config, **overrides})


def scheduler_config_of(name: str, base_config: dict[str, Any]) -> dict[str, Any]:
    """The scheduler's full config as a JSON-safe dict, for cache keys and provenance."""
    scheduler = make_scheduler(name, base_config)
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return json.loads(json.dumps({"class": type(scheduler).__name__, **config}, default=str))


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
            "--device cuda was asked for but no CUDA GPU is visible; use --device auto."
        )
    if preference == "mps" and not torch.backends.mps.is_available():
        raise RenderError("--device mps was asked for but MPS is not available; use --device auto.")
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

    def scheduler_base_config(self) -> dict[str, Any]:
        if self.kind in {"folder", "demo"}:
            path = Path(self.source) / "scheduler" / "scheduler_config.json"
            if path.is_file():
                return json.loads(path.read_text(encoding="utf-8"))
        return dict(SD15_SCHEDULER_CONFIG)


def _local_revision(folder: Path) -> str:
    """Cheap identity of local weights: names, sizes and modification times of the files."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in {".safetensors", ".json", ".txt"}:
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def build_demo_model(folder: Path) -> Path:
    """Build the tiny untrained demo pipeline into `folder` (safetensors), same weights every time.

    Shapes follow diffusers' `get_dummy_components`, but the VAE downsamples by 8 like SD's, so the
    demo runs at real sizes (512x512 -> 64x64 latents) and uses CLIP's real tokenizer.
    """
    if (folder / "model_index.json").is_file():
        return folder
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=[8, 16, 32, 32],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=512,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=3,
            vocab_size=49408,
            max_position_embeddings=CLIP_WINDOW,
            projection_dim=32,
        )
    )
    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(tmp, safe_serialization=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: its model is the same
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


def _hub_snapshot(repo: str, patterns: list[str] | None, local_only: bool) -> Path:
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            repo, allow_patterns=patterns, local_files_only=local_only or _hub_offline()
        )
    )


def resolve_image_model(name: str, cache_dir: Path) -> ImageModel:
    """Find the weights for `name`; `auto` falls back to the demo model, explicit names never do."""
    if not name.strip():
        raise RenderError(
            "The image model is empty; set STUDIO_IMAGE_MODEL (--image-model) to auto, demo, a hub "
            "id (owner/name), a diffusers folder or a .safetensors file."
        )
    if name == DEMO_MODEL:
        folder = build_demo_model(cache_dir / "models" / DEMO_VERSION)
        return ImageModel(
            DEMO_MODEL, "demo", str(folder), _local_revision(folder), placeholder=True
        )
    if name == "auto":
        try:
            try:
                snapshot = _hub_snapshot(DEFAULT_MODEL, DEFAULT_MODEL_FILES, local_only=True)
            except Exception:
                snapshot = _hub_snapshot(DEFAULT_MODEL, DEFAULT_MODEL_FILES, local_only=False)
            return ImageModel(DEFAULT_MODEL, "hub", DEFAULT_MODEL, snapshot.name, variant="fp16")
        except Exception as exc:
            demo = resolve_image_model(DEMO_MODEL, cache_dir)
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            demo.notes.append(
                f"No Stable Diffusion weights on disk and none could be downloaded ({reason}). "
                "Using the untrained demo model: its images are PLACEHOLDERS, not art. "
                "Set --image-model or STUDIO_IMAGE_MODEL to a hub id, a diffusers folder or a "
                ".safetensors file."
            )
            return demo
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise RenderError(
                f"{path} is not a diffusers model folder (no model_index.json); point "
                "--image-model at a folder saved with save_pretrained or at a .safetensors file."
            )
        return ImageModel(name, "folder", str(path.resolve()), _local_revision(path))
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
            f"Image model path {path} does not exist; point STUDIO_IMAGE_MODEL (--image-model) "
            "at a diffusers folder or a .safetensors file, or use 'auto' or 'demo'."
        )
    if name.count("/") == 1:
        try:
            snapshot = _hub_snapshot(name, None, local_only=True)
        except Exception:
            try:
                snapshot = _hub_snapshot(name, None, local_only=False)
            except Exception as exc:
                raise RenderError(
                    f"Image model {name!r} is no folder here, is not in the Hugging Face cache "
                    f"and could not be downloaded ({type(exc).__name__}). Check the name and the "
                    "network, or pass a local folder or .safetensors file."
                ) from None
        return ImageModel(name, "hub", str(snapshot), snapshot.name)
    raise RenderError(
        f"Image model {name!r} is neither a folder, a .safetensors file, a hub id (owner/name), "
        "'demo' nor 'auto'; set STUDIO_IMAGE_MODEL (--image-model) to one of them."
    )


def load_tokenizer(model: ImageModel) -> CLIPTokenizer:
    """The model's own tokenizer, without loading its weights."""
    if model.kind in {"folder", "demo"}:
        return CLIPTokenizer.from_pretrained(model.source, subfolder="tokenizer")
    if model.kind == "hub":
        snapshot = (
            model.source
            if Path(model.source).is_dir()
            else _hub_snapshot(model.source, DEFAULT_MODEL_FILES, local_only=True)
        )
        return CLIPTokenizer.from_pretrained(snapshot, subfolder="tokenizer")
    return CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)  # single files carry SD 1.5's


def count_tokens(tokenizer: CLIPTokenizer, text: str) -> int:
    """Tokens `text` takes in the CLIP window, BOS and EOS included."""
    return len(tokenizer(text, truncation=False).input_ids)


def load_pipeline(model: ImageModel, device: str, dtype: torch.dtype) -> StableDiffusionPipeline:
    """Load the pipeline's weights (safetensors only) onto `device`."""
    options: dict[str, Any] = {"dtype": dtype, "safety_checker": None}
    try:
        if model.kind == "file":
            pipe = StableDiffusionPipeline.from_single_file(model.source, **options)
        elif model.kind == "hub" and model.variant:
            pipe = StableDiffusionPipeline.from_pretrained(
                model.source,
                variant=model.variant,
                use_safetensors=True,
                local_files_only=True,
                **options,
            )
        else:
            pipe = StableDiffusionPipeline.from_pretrained(
                model.source, use_safetensors=True, local_files_only=True, **options
            )
    except Exception as exc:
        raise RenderError(f"Could not load image model {model.name!r}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


StepCallback = Callable[[int, int, torch.Tensor | None], None]


class Renderer:
    """One loaded model shared by every request; samplers vary per request without copying weights.

    `render` holds a lock: scheduler state is per pipeline call and not thread-safe.
    """

    def __init__(self, model: ImageModel, device: str = "auto", batch_size: int = 4):
        self.model = model
        self.device, self.dtype = pick_device(device)
        self.batch_size = batch_size if self.device != "cpu" else 1
        self._pipe: StableDiffusionPipeline | None = None
        self._tokenizer: CLIPTokenizer | None = None
        self._base_scheduler_config = model.scheduler_base_config()
        self._lock = threading.Lock()

    capabilities = Capabilities(modes=("txt2img",))

    @property
    def label(self) -> str:
        return self.model.label

    @property
    def placeholder(self) -> bool:
        return self.model.placeholder

    def identity(self) -> dict[str, str]:
        return self.model.identity()

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    @property
    def pipe(self) -> StableDiffusionPipeline:
        if self._pipe is None:
            self._pipe = load_pipeline(self.model, self.device, self.dtype)
            self._base_scheduler_config = dict(self._pipe.scheduler.config)
        return self._pipe

    @property
    def tokenizer(self) -> CLIPTokenizer:
        if self._pipe is not None:
            return self._pipe.tokenizer
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model)
        return self._tokenizer

    def cache_key(self, request: RenderRequest, kind: str = "txt2img") -> str:
        """Hash of all that affects the pixels: model, pipeline, request, scheduler config."""
        payload = {
            "model": self.model.identity(),
            "dtype": str(self.dtype),
            "pipeline": kind,
            "request": request.key_fields(),
            "scheduler": scheduler_config_of(request.sampler, self._base_scheduler_config),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def provenance(self, request: RenderRequest) -> dict[str, Any]:
        return {
            "image_model": self.model.identity(),
            "placeholder": self.model.placeholder,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "scheduler": json_safe(
                scheduler_config_of(request.sampler, self._base_scheduler_config)
            ),
        }

    def render(
        self,
        requests: Sequence[RenderRequest],
        on_step: StepCallback | None = None,
        inputs: InputResolver | None = None,
    ) -> list[Image.Image]:
        """Render `requests`, batched where they share sampler, steps, CFG and size."""
        for request in requests:
            request.check()
        images: list[Image.Image | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, r in enumerate(requests):
            groups.setdefault((r.sampler, r.steps, r.cfg, r.width, r.height), []).append(index)
        with self._lock:
            for indices in groups.values():
                for start in range(0, len(indices), self.batch_size):
                    batch = indices[start : start + self.batch_size]
                    rendered = self._render_batch([requests[i] for i in batch], on_step)
                    for index, image in zip(batch, rendered, strict=True):
                        images[index] = image
        return [image for image in images if image is not None]

    def _render_batch(
        self, batch: list[RenderRequest], on_step: StepCallback | None
    ) -> list[Image.Image]:
        first = batch[0]
        pipe = StableDiffusionPipeline(
            **{
                **self.pipe.components,
                "scheduler": make_scheduler(first.sampler, self._base_scheduler_config),
            }
        )
        pipe.set_progress_bar_config(disable=True)

        def step_end(
            _pipe: Any, step: int, _timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            if on_step is not None:
                on_step(step + 1, first.steps, tensors.get("latents"))
            return tensors

        try:
            result = pipe(
                prompt=[r.prompt for r in batch],
                negative_prompt=[r.negative_prompt for r in batch],
                num_inference_steps=first.steps,
                guidance_scale=first.cfg,
                width=first.width,
                height=first.height,
                generator=[torch.Generator("cpu").manual_seed(r.seed) for r in batch],
                callback_on_step_end=step_end,
            )
        except torch.OutOfMemoryError as exc:
            raise RenderError(
                f"Out of GPU memory rendering {first.width}x{first.height} x{len(batch)}: lower "
                "--batch-size or the size, or close other GPU programs."
            ) from exc
        return list(result.images)
