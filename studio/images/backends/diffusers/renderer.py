"""Stable Diffusion rendering: model loading, device and dtype, the sampler registry, seeds, modes.

The image model is a hub id, a local diffusers folder, a single `.safetensors` checkpoint, `demo`
(a tiny untrained pipeline built here, deterministically, whose images are placeholders) or `auto`:
Stable Diffusion 1.5 when its weights are in the Hugging Face cache or can be downloaded, else the
demo model with a warning. A model named explicitly never falls back. SD 1.x/2.x and SDXL load
alike: the family is read from the model's own files (`model_index.json`, or a single file's
tensor names), never configured and never downloaded to find out.

Every mode runs on the weights already loaded: each batch gets a pipeline built by diffusers'
AutoPipeline `from_pipe` from the loaded components (the same unet, VAE and text encoders), with
the request's sampler. How sizes relate to the init image, per mode:

- txt2img: `width` x `height`.
- img2img and variation: the init image's size, which the request's `width` and `height` must equal.
  A variation is img2img of the init image at the request's (low) strength with its own seed; its
  prompt may be empty (the image service fills in the init image's prompt where it knows it).
- inpaint: the init image's size (the request's `width` and `height` must equal it, and the mask's
  size too). White in the mask is repainted, black kept: the result is composited so that every
  black pixel is exactly the init image's.
- outpaint: the request's `width` and `height` are the *output* size, which must be the init
  image's size plus `outpaint` = (left, right, up, down) pixels (`outpaint_size`). The init image is
  pasted onto that canvas, the new area filled by repeating the edge pixels and masked white; the
  mask reaches `OUTPAINT_SEAM` pixels into the original and is blurred, so the join blends; then the
  canvas is inpainted at full strength and composited under the blurred mask.

Inpaint and outpaint use a dedicated inpainting checkpoint when one is given (`inpaint_model`,
loaded on first use), else the image model through `AutoPipelineForInpainting.from_pipe`.

With an IP-Adapter (`ip_adapter`, resolved by `resolve_ip_adapter`), any mode takes a reference
image (a character's portrait) at `reference_scale`: the adapter is loaded into every pipeline
with diffusers' `load_ip_adapter`, and a request without a reference runs at scale 0, which gives
the pixels of the model without the adapter. `build_demo_ip_adapter` makes a tiny one for the demo.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import math
import os
import re
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    AutoencoderTiny,
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DDIMScheduler,
    DEISMultistepScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
    UniPCMultistepScheduler,
)
from PIL import Image, ImageFilter
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from studio.core.config import setting
from studio.core.errors import ImageInputError, LoraError, ParameterError, RenderError, StudioError
from studio.core.hub import CLIP_TOKENIZER_DIR, SD, SDXL, hub_snapshot
from studio.core.inputs import check_mask_size, to_mask, to_rgb
from studio.core.metadata import json_safe
from studio.core.params import (
    CLIP_WINDOW,
    LIMITS,
    MODES,
    SAMPLER_NAMES,
    RenderRequest,
    check_sampler,
    outpaint_size,
)
from studio.images.backends.base import Capabilities, InputResolver
from studio.images.backends.diffusers.fast_path import FastPath, apply_fast_path
from studio.images.backends.diffusers.step_cache import apply_step_cache
from studio.images.control import DEMO_CONTROLNET
from studio.images.loras import LoraFile, LoraFolder

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEMO_MODEL = "demo"
DEMO_VERSION = "demo-v1"
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

# The IP-Adapter weights an `ip_adapter` setting that names only a repo or folder means, per model
# family: (subfolder, file) in the h94/IP-Adapter layout. The image encoder is looked for in
# `<subfolder>/image_encoder`, then in `models/image_encoder` (the ViT-H that SD 1.5's adapters and
# SDXL's `*_vit-h` ones share); the first whose width fits the adapter is used.
IP_ADAPTER_WEIGHTS = {
    SD: ("models", "ip-adapter_sd15.safetensors"),
    SDXL: ("sdxl_models", "ip-adapter_sdxl.safetensors"),
}
SHARED_IMAGE_ENCODER = "models/image_encoder"
IP_ADAPTER_FORMS = (
    "a folder or hub id in the h94/IP-Adapter layout (models/ip-adapter_sd15.safetensors and "
    "models/image_encoder; for SDXL sdxl_models/ip-adapter_sdxl.safetensors and "
    "sdxl_models/image_encoder), or repo_or_folder:subfolder:weight_name"
)

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


def _local_revision(folder: Path, files: Sequence[Path] | None = None) -> str:
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


def _tiny_vae() -> AutoencoderKL:
    """A tiny untrained VAE that downsamples by 8 like SD's, seeded."""
    torch.manual_seed(0)
    return AutoencoderKL(
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


def _tiny_clip_config() -> CLIPTextConfig:
    """A tiny CLIP text encoder's config over CLIP's real vocabulary and 77-token window."""
    return CLIPTextConfig(
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


def _save_pipeline(pipe: DiffusionPipeline, folder: Path) -> Path:
    """Save `pipe` into `folder` atomically (safetensors); a concurrent builder's copy wins."""
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    pipe.save_pretrained(tmp, safe_serialization=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: its model is the same
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _tiny_unet(**options: Any) -> UNet2DConditionModel:
    """The demo models' unet: two blocks at 32 and 64 channels, at SD's 64x64 latent size."""
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=64,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        **options,
    )


def _demo_unet() -> UNet2DConditionModel:
    """The demo model's unet, its text (cross-attention) width the tiny CLIP's 32."""
    return _tiny_unet(cross_attention_dim=32, attention_head_dim=8)


def build_demo_model(folder: Path) -> Path:
    """Build the tiny untrained demo pipeline into `folder` (safetensors), same weights every time.

    Shapes follow diffusers' `get_dummy_components`, but the VAE downsamples by 8 like SD's, so the
    demo runs at real sizes (512x512 -> 64x64 latents) and uses CLIP's real tokenizer.
    """
    if (folder / "model_index.json").is_file():
        return folder
    torch.manual_seed(0)
    unet = _demo_unet()
    vae = _tiny_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_tiny_clip_config())
    return _save_pipeline(sd_pipeline(unet, vae, text_encoder), folder)


def sd_pipeline(unet: Any, vae: Any, text_encoder: Any) -> StableDiffusionPipeline:
    """An SD 1.x pipeline of these components with CLIP's tokenizer, SD 1.5's scheduler and no
    safety checker (the demo model's, and the GPU benchmark's full-size random one)."""
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR),
        unet=unet,
        scheduler=PNDMScheduler.from_config(SD15_SCHEDULER_CONFIG),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_demo_sdxl_model(folder: Path) -> Path:
    """Build a tiny untrained SDXL pipeline into `folder`, same weights every time (for tests).

    SDXL's structure at the demo's scale: two CLIP text encoders (the second with a projection,
    whose pooled output and the size/crop "time ids" condition the unet), their hidden states
    concatenated (32 + 32 = the unet's cross-attention width), CLIP's real tokenizer for both, and
    the demo's VAE, so it runs at real sizes. Shapes follow diffusers' SDXL `get_dummy_components`.
    """
    if (folder / "model_index.json").is_file():
        return folder
    torch.manual_seed(0)
    unet = _tiny_unet(
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # 6 time ids x 8 + pooled text (32)
        cross_attention_dim=64,
    )
    vae = _tiny_vae()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_tiny_clip_config())
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_config())
    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=EulerDiscreteScheduler.from_config(
            {**SD15_SCHEDULER_CONFIG, "timestep_spacing": "leading"}
        ),
        add_watermarker=False,
    )
    return _save_pipeline(pipe, folder)


def build_demo_ip_adapter(folder: Path) -> Path:
    """Build a tiny untrained IP-Adapter for the demo model into `folder`, same weights every time,
    in the h94/IP-Adapter layout: `models/ip-adapter_sd15.safetensors` and `models/image_encoder`
    (a tiny CLIP image encoder, 32x32 inputs). Set `ip_adapter` to the folder to use it; like the
    demo model it shows the wiring, not art: a reference changes the pixels, not the likeness.

    The weights are what diffusers' `load_ip_adapter` reads: `image_proj.*` (the image embedding
    projected to 4 tokens of the unet's text width) and `ip_adapter.<n>.to_k_ip/to_v_ip.weight`
    for each cross-attention layer, numbered 1, 3, 5, ... in the unet's order.
    """
    weights = folder / IP_ADAPTER_WEIGHTS[SD][0] / IP_ADAPTER_WEIGHTS[SD][1]
    if weights.is_file():
        return folder
    unet = _demo_unet()  # only its shapes
    width, tokens, embedding = unet.config.cross_attention_dim, 4, 32
    torch.manual_seed(0)
    image_encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            image_size=32,
            patch_size=4,
            projection_dim=embedding,
        )
    )
    generator = torch.Generator("cpu").manual_seed(0)

    def noise(*shape: int) -> torch.Tensor:
        return 0.1 * torch.randn(*shape, generator=generator)

    tensors = {
        "image_proj.proj.weight": noise(tokens * width, embedding),
        "image_proj.proj.bias": torch.zeros(tokens * width),
        "image_proj.norm.weight": torch.ones(width),
        "image_proj.norm.bias": torch.zeros(width),
    }
    cross = [name for name in unet.attn_processors if not name.endswith("attn1.processor")]
    for index, name in enumerate(cross):
        to_k = unet.get_submodule(name.removesuffix(".processor")).to_k
        tensors[f"ip_adapter.{2 * index + 1}.to_k_ip.weight"] = noise(*to_k.weight.shape)
        tensors[f"ip_adapter.{2 * index + 1}.to_v_ip.weight"] = noise(*to_k.weight.shape)
    from safetensors.torch import save_file

    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    image_encoder.save_pretrained(tmp / SHARED_IMAGE_ENCODER, safe_serialization=True)
    save_file(tensors, str(tmp / IP_ADAPTER_WEIGHTS[SD][0] / IP_ADAPTER_WEIGHTS[SD][1]))
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first, or `folder` exists: theirs is the same
        if not weights.is_file():
            shutil.copytree(tmp, folder, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def build_demo_lora(model: ImageModel, path: Path, seed: int = 0, rank: int = 4) -> Path:
    """A small random LoRA (unet attention and text encoder) for `model`'s pipeline, saved as
    diffusers/PEFT safetensors at `path`: the tests' and the demo's LoRA file."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = load_pipeline(model, "cpu", torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                        target_modules=["to_q", "to_k", "to_v", "to_out.0"])  # fmt: skip
    pipe.unet.add_adapter(config)
    text_config = LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                             target_modules=["q_proj", "k_proj", "v_proj", "out_proj"])  # fmt: skip
    pipe.text_encoder.add_adapter(text_config)
    path.parent.mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(
        str(path.parent),
        unet_lora_layers=get_peft_model_state_dict(pipe.unet),
        text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder),
        weight_name=path.name,
        safe_serialization=True,
    )
    return path


def _adapter_name(lora: LoraFile) -> str:
    """A PEFT adapter name for a LoRA file: its name and hash, so an edited file loads anew."""
    return re.sub(r"\W", "_", f"{lora.name}_{lora.sha256[:10]}")


# ControlNet ---------------------------------------------------------------------------------------

DEMO_CONTROLNET_VERSION = "controlnet-demo-v1"
# The ControlNet tensors that `from_unet` starts at zero (so that a new ControlNet changes
# nothing); the demo's are random instead, so that its control image moves the pixels.
_ZERO_STARTED = (
    "controlnet_down_blocks",
    "controlnet_mid_block",
    "controlnet_cond_embedding.conv_out",
)
CONTROLNET_EXAMPLES = {
    SD: "lllyasviel/sd-controlnet-<type> for SD 1.5",
    SDXL: "diffusers/controlnet-canny-sdxl-1.0 or xinsir/controlnet-scribble-sdxl-1.0 for SDXL",
}


def build_demo_controlnet(folder: Path) -> Path:
    """A tiny untrained ControlNet for the demo model (`ControlNetModel.from_unet` of its unet,
    the zero-started convolutions random), saved into `folder` (safetensors), the same every
    time. Like the demo model it shows the wiring: a control image moves the pixels, it does not
    draw the sketch."""
    if (folder / "config.json").is_file():
        return folder
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    controlnet = ControlNetModel.from_unet(_demo_unet())
    generator = torch.Generator("cpu").manual_seed(0)
    with torch.no_grad():
        for name, tensor in controlnet.named_parameters():
            if name.startswith("controlnet_cond_embedding"):
                # He-scaled, no biases: the control image's lines, not the layers' defaults
                # (which shrink it to nothing over eight convolutions), reach the unet
                fan_in = tensor[0].numel()
                scale = (2 / fan_in) ** 0.5 if name.endswith("weight") else 0.0
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * scale)
            elif name.startswith(_ZERO_STARTED):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    controlnet.save_pretrained(tmp, safe_serialization=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first: its ControlNet is the same
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@dataclass(frozen=True)
class ControlNetSource:
    """A ControlNet the `controlnets` setting names for one control type, found on disk."""

    control_type: str
    name: str  # as in the setting
    source: str  # the local folder (a hub id's snapshot) with config.json and the weights
    revision: str  # hub commit, or a hash of the local files' names, sizes and times

    def identity(self) -> dict[str, str]:
        return {"type": self.control_type, "controlnet": self.name, "revision": self.revision}

    def config(self) -> dict[str, Any]:
        return json.loads((Path(self.source) / "config.json").read_text())


def _controlnet_error(control_type: str, name: str, message: str) -> RenderError:
    return RenderError(f"ControlNet {control_type}={name} ({setting('controlnets')}): {message}")


def resolve_controlnet(control_type: str, name: str, model: ImageModel) -> ControlNetSource:
    """Find the ControlNet `name` (a hub id, a folder with a diffusers ControlNetModel, or `demo`
    for the demo model) for `control_type`; a clear `RenderError` naming the setting if not."""
    if name == DEMO_CONTROLNET:
        if model.name != DEMO_MODEL:
            raise _controlnet_error(
                control_type, name, f"the demo ControlNet fits only the demo image model, not "
                f"{model.name!r}; use {CONTROLNET_EXAMPLES[model.family]}."
            )  # fmt: skip
        folder = build_demo_controlnet(Path(model.source).parent / DEMO_CONTROLNET_VERSION)
        return ControlNetSource(control_type, name, str(folder), _local_revision(folder))
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() or not list(path.glob("*.safetensors")):
            raise _controlnet_error(
                control_type, name, f"{path} holds no diffusers ControlNetModel (config.json and "
                "a .safetensors file, as save_pretrained writes)."
            )  # fmt: skip
        return ControlNetSource(control_type, name, str(path.resolve()), _local_revision(path))
    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        raise _controlnet_error(
            control_type, name, "no such folder, and not a hub id (owner/name)."
        )
    patterns = ["config.json", "*.safetensors"]
    try:
        try:
            snapshot = hub_snapshot(name, patterns, local_only=True)
        except Exception:
            snapshot = hub_snapshot(name, patterns, local_only=False)
    except Exception as exc:
        raise _controlnet_error(
            control_type, name, f"not in the Hugging Face cache and it could not be downloaded "
            f"({type(exc).__name__}); check the name and the network, or give a local folder."
        ) from None  # fmt: skip
    return ControlNetSource(control_type, name, str(snapshot), snapshot.name)


def check_controlnet_fits(
    controlnet: ControlNetSource, unet_config: Any, model: ImageModel
) -> None:
    """A ControlNet adds residuals to the unet's blocks: its text width and block widths must be
    the unet's, else (a ControlNet of another family) a `RenderError` that says which fits."""
    config = controlnet.config()
    theirs = (config.get("cross_attention_dim"), list(config.get("block_out_channels") or []))
    ours = (unet_config.cross_attention_dim, list(unet_config.block_out_channels))
    if theirs != ours:
        raise _controlnet_error(
            controlnet.control_type, controlnet.name, f"it was made for a unet of text width "
            f"{theirs[0]} and blocks {theirs[1]}, but image model {model.name!r} ({model.family}) "
            f"has {ours[0]} and {ours[1]}; use a ControlNet of its family, e.g. "
            f"{CONTROLNET_EXAMPLES[model.family]}."
        )  # fmt: skip


def resolve_image_model(name: str, cache_dir: Path) -> ImageModel:
    """Find the weights for `name`; `auto` falls back to the demo model, explicit names never do."""
    if not name.strip():
        raise RenderError(
            f"The image model is empty; set {setting('image_model')} to auto, demo, a hub "
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
                snapshot = hub_snapshot(DEFAULT_MODEL, DEFAULT_MODEL_FILES, local_only=True)
            except Exception:
                snapshot = hub_snapshot(DEFAULT_MODEL, DEFAULT_MODEL_FILES, local_only=False)
            return ImageModel(DEFAULT_MODEL, "hub", DEFAULT_MODEL, snapshot.name, variant="fp16")
        except Exception as exc:
            demo = resolve_image_model(DEMO_MODEL, cache_dir)
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            demo.notes.append(
                f"No Stable Diffusion weights on disk and none could be downloaded ({reason}). "
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
    revision = source.name if kind == "hub" else _local_revision(source)
    return ImageModel(name, kind, str(source), revision)


@dataclass(frozen=True)
class IPAdapter:
    """Resolved IP-Adapter weights: where they are, what unet they fit, what to call them."""

    name: str  # the ip_adapter setting as given
    source: str  # the local folder (a hub id's snapshot) the paths below are in
    subfolder: str  # of the weights, e.g. "models"; "" for the folder itself
    weight_name: str  # a .safetensors file in `subfolder`
    image_encoder: str  # the CLIP image encoder's folder in `source`, e.g. "models/image_encoder"
    revision: str  # hub commit, or a hash of the local files' names, sizes and times
    cross_attention_dim: int  # the text width of the unet it was trained for (SD 1.5: 768)
    layers: int  # the unet's cross-attention layers it has weights for (SD 1.5: 16, SDXL: 70)

    @property
    def weights(self) -> str:
        return f"{self.subfolder}/{self.weight_name}" if self.subfolder else self.weight_name

    def identity(self) -> dict[str, str]:
        return {
            "ip_adapter": self.name,
            "weights": self.weights,
            "image_encoder": self.image_encoder,
            "revision": self.revision,
        }


def _ip_adapter_error(message: str) -> RenderError:
    return RenderError(f"{message}; set {setting('ip_adapter')} to {IP_ADAPTER_FORMS}.")


def _hub_files(repo: str, patterns: list[str], ready: Callable[[Path], bool]) -> Path:
    """A snapshot of hub repo `repo` with `patterns`' files: the cache's where it is `ready`,
    else downloaded (the cache's again when offline)."""
    try:
        snapshot = hub_snapshot(repo, patterns, local_only=True)
        if ready(snapshot):
            return snapshot
    except Exception:
        pass
    try:
        return hub_snapshot(repo, patterns, local_only=False)
    except Exception as exc:
        raise _ip_adapter_error(
            f"IP-Adapter {repo!r} is no folder here, is not in the Hugging Face cache and could "
            f"not be downloaded ({type(exc).__name__})"
        ) from None


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Every tensor's shape in a .safetensors file, from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # a safe_open handle is no mapping: `in` does not work
            return {name: list(weights.get_slice(name).get_shape()) for name in names}
    except Exception as exc:
        raise _ip_adapter_error(f"{path} is not a readable .safetensors file ({exc})") from None


def _image_encoder_width(shapes: dict[str, list[int]]) -> tuple[str, int] | None:
    """(config key, value) the adapter's image encoder must have: a plain IP-Adapter projects the
    encoder's image embedding (`projection_dim`), a Plus one its hidden states (`hidden_size`);
    None for the other kinds, whose encoder is not checked here."""
    if "image_proj.proj.weight" in shapes:
        return "projection_dim", shapes["image_proj.proj.weight"][-1]
    if "image_proj.proj_in.weight" in shapes:
        return "hidden_size", shapes["image_proj.proj_in.weight"][-1]
    return None


def _pick_image_encoder(root: Path, candidates: list[str], width: tuple[str, int] | None) -> str:
    for folder in candidates:
        config = root / folder / "config.json"
        if not config.is_file():
            continue
        if (
            width is None
            or json.loads(config.read_text(encoding="utf-8")).get(width[0]) == width[1]
        ):
            return folder
    fits = f" with {width[0]} {width[1]}" if width else ""
    raise _ip_adapter_error(
        f"{root} has no CLIP image encoder{fits} for its IP-Adapter in {' or '.join(candidates)}"
    )


def resolve_ip_adapter(name: str, family: str) -> IPAdapter:
    """Find the IP-Adapter weights and image encoder the `ip_adapter` setting names, for a model
    of `family`: a folder or hub id alone means the family's weights in the h94/IP-Adapter layout
    (`IP_ADAPTER_WEIGHTS`); `repo_or_folder:subfolder:weight_name` names them. Safetensors only.
    Hub ids come from the Hugging Face cache, else are downloaded (not when HF_HUB_OFFLINE)."""
    parts = name.strip().rsplit(":", 2)
    if len(parts) == 3:
        source, subfolder, weight_name = parts[0].strip(), parts[1].strip(" /"), parts[2].strip()
    else:
        source, (subfolder, weight_name) = name.strip(), IP_ADAPTER_WEIGHTS[family]
    if not source or not weight_name:
        raise _ip_adapter_error(f"The IP-Adapter {name!r} names no folder or weights")
    if not weight_name.endswith(".safetensors"):
        raise _ip_adapter_error(
            f"IP-Adapter weights {weight_name!r}: only .safetensors weights are loaded (pickled "
            "weights can run code); convert them, or use the .safetensors of h94/IP-Adapter"
        )
    weights = f"{subfolder}/{weight_name}" if subfolder else weight_name
    candidates = list(
        dict.fromkeys([f"{subfolder}/image_encoder".lstrip("/"), SHARED_IMAGE_ENCODER])
    )
    path = Path(source).expanduser()
    hub = False
    if path.is_dir():
        root = path.resolve()
    elif source.count("/") == 1 and not source.startswith((".", "/", "~")) and "\\" not in source:
        hub = True
        root = _hub_files(
            source,
            [weights, *(f"{folder}/config.json" for folder in candidates)],
            lambda snapshot: (
                (snapshot / weights).is_file()
                and any((snapshot / folder / "config.json").is_file() for folder in candidates)
            ),
        )
    else:
        raise _ip_adapter_error(f"IP-Adapter folder {path} does not exist")
    if not (root / weights).is_file():
        raise _ip_adapter_error(
            f"{root} has no {weights} (the default for {family.upper()} models)"
        )
    shapes = _tensor_shapes(root / weights)
    to_k = [
        key for key in shapes if key.startswith("ip_adapter.") and key.endswith(".to_k_ip.weight")
    ]
    if not to_k or not any(key.startswith("image_proj.") for key in shapes):
        raise _ip_adapter_error(
            f"{root / weights} holds no image_proj.* and ip_adapter.*.to_k_ip tensors, so it is "
            "no IP-Adapter"
        )
    image_encoder = _pick_image_encoder(root, candidates, _image_encoder_width(shapes))
    encoder_weights = f"{image_encoder}/model.safetensors"
    if hub:
        root = _hub_files(
            source,
            [f"{image_encoder}/config.json", encoder_weights],
            lambda snapshot: (snapshot / encoder_weights).is_file(),
        )
    if not (root / encoder_weights).is_file():
        raise _ip_adapter_error(
            f"The image encoder {root / image_encoder} has no model.safetensors (only safetensors "
            "weights are loaded)"
        )
    files = [root / weights, root / image_encoder / "config.json", root / encoder_weights]
    revision = root.name if hub else _local_revision(root, files)
    return IPAdapter(
        name=name,
        source=str(root),
        subfolder=subfolder,
        weight_name=weight_name,
        image_encoder=image_encoder,
        revision=revision,
        cross_attention_dim=shapes[to_k[0]][1],
        layers=len(to_k),
    )


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


StepCallback = Callable[[int, int, torch.Tensor | None], None]

# The IP-Adapter's image in calls without a reference, at scale 0: its embedding is not used.
BLANK_REFERENCE = Image.new("RGB", (64, 64))
INPAINT_MODES = frozenset({"inpaint", "outpaint"})
# Each mode's pipeline is built from the loaded one by this AutoPipeline's `from_pipe`.
MODE_PIPELINES = {
    "txt2img": AutoPipelineForText2Image,
    "img2img": AutoPipelineForImage2Image,
    "variation": AutoPipelineForImage2Image,
    "inpaint": AutoPipelineForInpainting,
    "outpaint": AutoPipelineForInpainting,
}
# What encodes weighted and long prompts; part of their cache keys (another version may weigh
# fragments otherwise).
PROMPT_ENCODING = f"compel {importlib.metadata.version('compel')}, AUTOMATIC1111 syntax"
OUTPAINT_SEAM = 16  # pixels of the original that outpainting repaints along each extended edge
OUTPAINT_BLUR = 4  # Gaussian blur radius of the outpaint mask: the seam's softness


def outpaint_canvas(
    image: Image.Image, amounts: Sequence[int]
) -> tuple[Image.Image, Image.Image, Image.Image]:
    """(canvas, mask, blend mask) for outpainting `image` by (left, right, up, down) pixels.

    The canvas is `image` pasted onto the bigger size, the new area filled with its edge pixels
    repeated. The mask (white = repaint) covers the new area and `OUTPAINT_SEAM` pixels of the
    original along each extended edge; the blend mask is that mask blurred, and fully white over
    the new area, for compositing the result: the original stays exact away from the seam.
    """
    left, right, up, down = amounts
    width, height = image.size
    pixels = np.asarray(to_rgb(image))
    canvas = np.pad(pixels, ((up, down), (left, right), (0, 0)), mode="edge")
    new_area = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    new_area[up : up + height, left : left + width] = 0
    seam_x, seam_y = min(OUTPAINT_SEAM, width // 4), min(OUTPAINT_SEAM, height // 4)
    mask = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    top, bottom = up + (seam_y if up else 0), up + height - (seam_y if down else 0)
    first, last = left + (seam_x if left else 0), left + width - (seam_x if right else 0)
    mask[top:bottom, first:last] = 0
    blurred = Image.fromarray(mask).filter(ImageFilter.GaussianBlur(OUTPAINT_BLUR))
    blend = np.maximum(np.asarray(blurred), new_area)
    return Image.fromarray(canvas), Image.fromarray(mask), Image.fromarray(blend)


@dataclass(frozen=True)
class _Inputs:
    """A request's input images, ready for its pipeline."""

    image: Image.Image | None = None  # the init image, or outpaint's canvas
    mask: Image.Image | None = None  # white = repaint, as the pipeline gets it
    blend: Image.Image | None = None  # where the result replaces `image` (soft for outpaint)
    reference: Image.Image | None = None  # the IP-Adapter's reference image (RGB)
    control: Image.Image | None = None  # the ControlNet's control image (RGB)


def _resolve(inputs: InputResolver | None, sha: str, what: str) -> Image.Image:
    if inputs is None:
        raise RenderError(
            f"The {what} {sha[:12]}… was not given to the renderer: pass `inputs`, a function from "
            "an input image's sha256 to the image (the image service passes its catalog's)."
        )
    try:
        image = inputs(sha)
    except StudioError:
        raise
    except (KeyError, LookupError, OSError) as exc:
        raise ImageInputError(
            f"The {what} {sha[:12]}… is not among the input images ({type(exc).__name__}); "
            "give the image again."
        ) from None
    return to_mask(image) if what == "mask" else to_rgb(image)


def _size_error(request: RenderRequest, image: Image.Image, what: str) -> ParameterError:
    return ParameterError(
        f"The init image is {image.width}x{image.height} but the {request.mode} request is "
        f"{request.width}x{request.height}; {what}"
    )


def _check_denoising_steps(request: RenderRequest) -> None:
    """diffusers runs int(steps x strength) steps from an init image: at least one, or it fails."""
    strength = request.strength
    if request.mode == "outpaint" or strength is None or int(request.steps * strength) >= 1:
        return
    raise ParameterError(
        f"{request.mode} runs `steps` x `strength` denoising steps, and {request.steps} x "
        f"{strength:g} makes none; raise steps to {math.ceil(1 / strength)} or strength to "
        f"{1 / request.steps:g}."
    )


class Renderer:
    """One loaded model shared by every request and mode; samplers and modes vary per batch
    without copying weights (each batch's pipeline is built from the loaded components).

    `render` holds a lock: scheduler state is per pipeline call and not thread-safe.
    """

    def __init__(
        self,
        model: ImageModel,
        device: str = "auto",
        batch_size: int = 4,
        *,
        inpaint_model: ImageModel | None = None,
        ip_adapter: IPAdapter | None = None,
        batch_on_cpu: bool = False,
        fast_path: FastPath | None = None,
        compile_cache: Path | None = None,
        preview_vae: ImageModel | None = None,
        dtype: torch.dtype | None = None,
        step_cache: int = 0,
        loras: LoraFolder | None = None,
        controlnets: dict[str, str] | None = None,
    ):
        self.model = model
        # control type -> the `controlnets` setting's source; found and loaded on first use
        self.controlnets = dict(controlnets or {})
        self._controlnet_sources: dict[str, ControlNetSource] = {}
        self._controlnet_models: dict[str, Any] = {}
        self.loras = loras  # where <lora:name:w> tags find their files
        self._loaded_loras: dict[int, set[str]] = {}  # id(unet) -> adapters loaded into it
        self.fast_path = fast_path  # None: eager, as loaded (studio.fast_path)
        self.fast_info: dict[str, Any] = {}  # what the fast path did, once the model is loaded
        self.compile_cache = compile_cache or Path(".") / "inductor"
        self.preview_vae = preview_vae  # a tiny VAE (TAESD) for the live preview
        self.step_cache = step_cache if step_cache >= 2 else 0  # DeepCache-style interval
        self._step_caches: list[Any] = []  # one per loaded unet
        if self.step_cache and fast_path is not None:
            fast_path.compile = False  # the cache's hooks branch per step: no compiled graph
        self._preview_decoder: Any = None
        self.inpaint_model = inpaint_model  # a dedicated inpainting checkpoint, loaded on use
        self.ip_adapter = ip_adapter  # loaded into every pipeline: requests may take a reference
        self.device, self.dtype = pick_device(device)
        self.dtype = dtype or self.dtype  # fp16 on a GPU unless asked (the GPU benchmark's bf16)
        # On the CPU a batch is hardly faster and its pixels differ from single renders by a
        # level here and there, so one at a time unless asked (the render worker's tests).
        self.batch_size = batch_size if self.device != "cpu" or batch_on_cpu else 1
        self._pipe: DiffusionPipeline | None = None
        self._inpaint_pipe: DiffusionPipeline | None = None
        self._tokenizer: CLIPTokenizer | None = None
        self._tokenizer_lock = threading.Lock()  # loaded once, whichever thread asks first
        self._base_scheduler_config = model.scheduler_base_config()
        self._inpaint_scheduler_config = (
            inpaint_model.scheduler_base_config() if inpaint_model else None
        )
        self._lock = threading.Lock()

    def preview_image(self, latents: torch.Tensor | None) -> Image.Image | None:
        """The first latent of a batch as a picture, for the live preview: decoded by the tiny
        preview VAE (TAESD) when one is configured, else the cheap latent-to-RGB look."""
        from studio.images.preview import latent_preview

        if self.preview_vae is None or latents is None or latents.ndim != 4:
            return latent_preview(latents)
        if self._preview_decoder is None:
            try:
                self._preview_decoder = AutoencoderTiny.from_pretrained(
                    self.preview_vae.source, use_safetensors=True, local_files_only=True
                ).to(self.device, self.dtype)
            except Exception as exc:
                raise RenderError(
                    f"Could not load the preview VAE {self.preview_vae.name!r} "
                    f"({setting('preview_vae')}): {exc}"
                ) from exc
        decoder = self._preview_decoder
        with torch.no_grad():
            decoded = decoder.decode(latents[:1].to(decoder.device, decoder.dtype)).sample
        rgb = (decoded[0].float() / 2 + 0.5).clamp(0, 1).mul(255).byte().permute(1, 2, 0)
        return Image.fromarray(rgb.cpu().numpy())

    def decode_latents(self, latents: torch.Tensor, mode: str = "txt2img") -> Image.Image:
        """The first latent of a batch decoded by the full VAE of `mode`'s pipeline, as that
        pipeline decodes its final latents (the denoising strip's frames, studio.strips)."""
        with self._lock, torch.no_grad():
            pipe = self.inpaint_pipe if mode in INPAINT_MODES else self.pipe
            vae, config = pipe.vae, pipe.vae.config
            # SDXL's VAE overflows in fp16; its pipeline decodes in fp32 and casts back, as here
            upcast = vae.dtype == torch.float16 and bool(getattr(config, "force_upcast", False))
            if upcast:
                vae.to(torch.float32)
            try:
                latent = latents[:1].to(vae.device, vae.dtype)
                mean = getattr(config, "latents_mean", None)
                std = getattr(config, "latents_std", None)
                if mean is not None and std is not None:
                    shape = (1, latent.shape[1], 1, 1)
                    mean = torch.tensor(mean).view(shape).to(latent.device, latent.dtype)
                    std = torch.tensor(std).view(shape).to(latent.device, latent.dtype)
                    latent = latent * std / config.scaling_factor + mean
                else:
                    latent = latent / config.scaling_factor
                decoded = vae.decode(latent, return_dict=False)[0]
            finally:
                if upcast:
                    vae.to(torch.float16)
            return pipe.image_processor.postprocess(decoded, output_type="pil")[0]

    def close(self) -> None:
        """Drop the loaded pipelines and return their memory (the GPU's too); a later render
        loads the model again."""
        with self._lock:
            self._pipe = self._inpaint_pipe = self._preview_decoder = None
            self._controlnet_models = {}
            self._step_caches = []
            self._loaded_loras = {}  # a new unet may get a freed one's id
            gc.collect()
            if self.device == "cuda":
                torch.cuda.empty_cache()

    @property
    def capabilities(self) -> Capabilities:
        """Every mode and sampler, any size within the limits, seeded; batches of `batch_size`;
        reference images where an IP-Adapter is configured."""
        return Capabilities(
            modes=MODES,
            samplers=SAMPLER_NAMES,
            max_batch=self.batch_size,
            ip_adapter=self.ip_adapter is not None,
            intermediates=True,
            controlnet=tuple(self.controlnets),
        )

    @property
    def label(self) -> str:
        return self.model.label

    @property
    def placeholder(self) -> bool:
        return self.model.placeholder

    @property
    def notes(self) -> list[str]:
        """Warnings for the user about the model (the demo model standing in for SD 1.5)."""
        return self.model.notes

    @property
    def family(self) -> str:
        """The image model's family: `sd` (1.x/2.x) or `sdxl`."""
        return self.model.family

    def identity(self) -> dict[str, str]:
        return self.model.identity()

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    @property
    def pipe(self) -> DiffusionPipeline:
        """The image model's text-to-image pipeline (with the IP-Adapter), loaded on first use."""
        if self._pipe is None:
            pipe = load_pipeline(self.model, self.device, self.dtype)
            self._load_ip_adapter(pipe, self.model)
            if self.fast_path is not None:
                self.fast_info = apply_fast_path(pipe, self.fast_path, self.compile_cache)
            if self.step_cache:
                self._step_caches.append(apply_step_cache(pipe.unet, self.step_cache))
            self._pipe = pipe
            self._base_scheduler_config = dict(pipe.scheduler.config)
        return self._pipe

    @property
    def inpaint_pipe(self) -> DiffusionPipeline:
        """The pipeline inpaint and outpaint start from: the dedicated inpainting checkpoint's,
        loaded on first use, or else the image model's own."""
        if self.inpaint_model is None:
            return self.pipe
        if self._inpaint_pipe is None:
            pipe = load_pipeline(self.inpaint_model, self.device, self.dtype, task="inpaint")
            self._load_ip_adapter(pipe, self.inpaint_model)
            if self.fast_path is not None:
                apply_fast_path(pipe, self.fast_path, self.compile_cache)
            if self.step_cache:
                self._step_caches.append(apply_step_cache(pipe.unet, self.step_cache))
            self._inpaint_pipe = pipe
            self._inpaint_scheduler_config = dict(pipe.scheduler.config)
        return self._inpaint_pipe

    def _load_ip_adapter(self, pipe: DiffusionPipeline, model: ImageModel) -> None:
        """Load the IP-Adapter into `pipe` (its unet's cross-attention and its image encoder), after
        checking that it was made for a unet like `model`'s. The mode pipelines `from_pipe` builds
        share that unet and encoder, so every mode has the adapter."""
        adapter = self.ip_adapter
        if adapter is None:
            return
        unet = pipe.unet
        # the layers diffusers gives the adapter's weights to: all but self-attention
        layers = sum(not name.endswith("attn1.processor") for name in unet.attn_processors)
        width = unet.config.cross_attention_dim
        if (adapter.cross_attention_dim, adapter.layers) != (width, layers):
            subfolder, weight_name = IP_ADAPTER_WEIGHTS[model.family]
            raise RenderError(
                f"The IP-Adapter {adapter.weights} ({setting('ip_adapter')} = {adapter.name!r}) "
                f"fits a unet with {adapter.layers} cross-attention layers of width "
                f"{adapter.cross_attention_dim}, but image model {model.name!r} ({model.family}) "
                f"has {layers} of width {width}; use an adapter made for its family, e.g. "
                f"{subfolder}/{weight_name} of h94/IP-Adapter."
            )
        try:
            pipe.load_ip_adapter(
                adapter.source,
                subfolder=adapter.subfolder,
                weight_name=adapter.weight_name,
                image_encoder_folder=adapter.image_encoder,
                local_files_only=True,
            )
        except Exception as exc:
            raise RenderError(
                f"Could not load the IP-Adapter {adapter.name!r} ({setting('ip_adapter')}): {exc}"
            ) from exc

    @property
    def tokenizer(self) -> CLIPTokenizer:
        """The tokenizer prompts are fitted with (SDXL: the first; both have 77 tokens)."""
        if self._pipe is not None:
            return self._pipe.tokenizer
        with self._tokenizer_lock:
            if self._tokenizer is None:
                self._tokenizer = load_tokenizer(self.model)
        return self._tokenizer

    def _dedicated(self, mode: str) -> bool:
        return self.inpaint_model is not None and mode in INPAINT_MODES

    def _scheduler_config(self, mode: str) -> dict[str, Any]:
        if self._dedicated(mode) and self._inpaint_scheduler_config is not None:
            return self._inpaint_scheduler_config
        return self._base_scheduler_config

    def cache_key(self, request: RenderRequest, kind: str | None = None) -> str:
        """Hash of all that affects the pixels: model, pipeline (the mode, unless `kind` says
        otherwise), request, scheduler config; the inpainting checkpoint where one is used, the
        seam for outpainting, the IP-Adapter for a request with a reference image. A txt2img key
        is what it was before modes existed, and one without a reference before IP-Adapters."""
        kind = kind or request.mode
        payload: dict[str, Any] = {
            "model": self.model.identity(),
            "dtype": str(self.dtype),
            "pipeline": kind,
            "request": request.key_fields(),
            "scheduler": scheduler_config_of(request.sampler, self._scheduler_config(kind)),
        }
        if self._dedicated(kind):
            payload["inpaint_model"] = self.inpaint_model.identity()
        if kind == "outpaint":
            payload["seam"] = {"pixels": OUTPAINT_SEAM, "blur": OUTPAINT_BLUR}
        if request.reference_image is not None and self.ip_adapter is not None:
            payload["ip_adapter"] = self.ip_adapter.identity()
        if request.control_type is not None and request.control_image is not None:
            payload["controlnet"] = self.controlnet_source(request.control_type).identity()
        if self.step_cache:  # reused features change the pixels: never the uncached image's key
            payload["step_cache"] = self.step_cache
        if request.weighted:  # a prompt that reads "(red:1.3)" was once encoded as that text
            payload["prompt_encoding"] = PROMPT_ENCODING
        if request.loras:  # by content: an edited file with the same name is another LoRA
            payload["loras"] = self.lora_identities(request)
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def provenance(self, request: RenderRequest) -> dict[str, Any]:
        provenance = {
            "image_model": self.model.identity(),
            "model_family": self.family,
            "pipeline": request.mode,
            "placeholder": self.model.placeholder,
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "scheduler": json_safe(
                scheduler_config_of(request.sampler, self._scheduler_config(request.mode))
            ),
        }
        if self._dedicated(request.mode):
            provenance["inpaint_model"] = self.inpaint_model.identity()
        if request.reference_image is not None and self.ip_adapter is not None:
            provenance["ip_adapter"] = self.ip_adapter.identity()
        if request.control_type is not None and request.control_image is not None:
            provenance["controlnet"] = self.controlnet_source(request.control_type).identity()
        if self.fast_path is not None:
            provenance["fast_path"] = json_safe(self.fast_info)
        if self.step_cache:
            provenance["step_cache"] = {"interval": self.step_cache, "kind": "DeepCache-style"}
        if request.loras:
            provenance["loras"] = self.lora_identities(request)
        return provenance

    def controlnet_source(self, control_type: str) -> ControlNetSource:
        """The ControlNet configured for `control_type`, found on first use."""
        if control_type not in self._controlnet_sources:
            if control_type not in self.controlnets:
                offered = ", ".join(self.controlnets) or "none"
                raise RenderError(
                    f"No ControlNet is configured for {control_type!r} (configured: {offered}); "
                    f"set {setting('controlnets')} to e.g. {control_type}=<hub id or folder>."
                )
            self._controlnet_sources[control_type] = resolve_controlnet(
                control_type, self.controlnets[control_type], self.model
            )
        return self._controlnet_sources[control_type]

    def controlnet(self, control_type: str) -> Any:
        """`control_type`'s ControlNetModel on the device, loaded (safetensors only) on first use
        after checking that it fits the image model's unet."""
        if control_type not in self._controlnet_models:
            from diffusers import ControlNetModel

            source = self.controlnet_source(control_type)
            check_controlnet_fits(source, self.pipe.unet.config, self.model)
            try:
                model = ControlNetModel.from_pretrained(
                    source.source, use_safetensors=True, local_files_only=True
                )
            except Exception as exc:
                message = f"could not load it: {exc}"
                raise _controlnet_error(control_type, source.name, message) from exc
            self._controlnet_models[control_type] = model.to(self.device, self.dtype)
        return self._controlnet_models[control_type]

    def lora_files(self, request: RenderRequest) -> list[tuple[LoraFile, float]]:
        """The request's LoRA files with their weights; `LoraError` for a name not in the folder
        or a file that is not a LoRA."""
        if not request.loras:
            return []
        if self.loras is None:
            raise LoraError(
                f"The prompt names LoRAs ({', '.join(n for n, _ in request.loras)}) but no LoRA "
                f"folder is set; set {setting('lora_dir')}."
            )
        return [(self.loras.get(name), weight) for name, weight in request.loras]

    def lora_identities(self, request: RenderRequest) -> list[dict[str, object]]:
        return [lora.identity(weight) for lora, weight in self.lora_files(request)]

    def _apply_loras(self, pipe: DiffusionPipeline, request: RenderRequest) -> None:
        """Load the request's LoRAs into the pipeline's unet and text encoder (once each) and
        make exactly them active at their weights; without LoRAs, turn every loaded one off."""
        loaded = self._loaded_loras.setdefault(id(pipe.unet), set())
        files = self.lora_files(request)
        if not files:
            if loaded:
                pipe.disable_lora()
            return
        width = pipe.unet.config.cross_attention_dim
        names = []
        for lora, _ in files:
            name = _adapter_name(lora)
            if name not in loaded:
                self.loras.check_fits(lora, width, self.model.name, self.family)
                try:
                    pipe.load_lora_weights(
                        str(lora.path.parent), weight_name=lora.path.name, adapter_name=name
                    )
                except Exception as exc:
                    raise LoraError(
                        f"Could not load LoRA {lora.name!r} ({lora.path}) into image model "
                        f"{self.model.name!r} ({self.family}): {exc}"
                    ) from exc
                loaded.add(name)
            names.append(name)
        pipe.enable_lora()
        pipe.set_adapters(names, adapter_weights=[weight for _, weight in files])

    def render(
        self,
        requests: Sequence[RenderRequest],
        on_step: StepCallback | None = None,
        inputs: InputResolver | None = None,
    ) -> list[Image.Image]:
        """Render `requests`, batched where they share mode, sampler, steps, CFG, size, strength,
        reference image and scale. `inputs` gives the init images, masks and reference images by
        sha256; each is checked against its request before any model work."""
        if inputs is not None:
            inputs = cache(inputs)  # each input read once per call
        for request in requests:
            if request.mode == "outpaint":
                self._check_outpaint_size(request, inputs)  # says more than check() would
            request.check()
            self.capabilities.check(request, self.label)
            _check_denoising_steps(request)
        prepared = [self._prepare(request, inputs) for request in requests]
        images: list[Image.Image | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, r in enumerate(requests):
            groups.setdefault(r.batch_group(), []).append(index)
        with self._lock:
            for indices in groups.values():
                for start in range(0, len(indices), self.batch_size):
                    batch = indices[start : start + self.batch_size]
                    rendered = self._render_batch(
                        [requests[i] for i in batch], [prepared[i] for i in batch], on_step
                    )
                    for index, image in zip(batch, rendered, strict=True):
                        images[index] = image
        return [image for image in images if image is not None]

    def _check_outpaint_size(self, request: RenderRequest, inputs: InputResolver | None) -> None:
        amounts = request.outpaint
        if not request.init_image or not isinstance(amounts, tuple) or len(amounts) != 4:
            return  # check() says what is missing
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in amounts):
            return
        init = _resolve(inputs, request.init_image, "init image")
        width, height = outpaint_size(init.size, amounts)
        high = int(LIMITS["width"].high)
        if width > high or height > int(LIMITS["height"].high):
            raise ParameterError(
                f"Outpainting the {init.width}x{init.height} init image by {amounts} (left, right, "
                f"up, down) would make {width}x{height}, over the {high}x{high} limit; outpaint "
                "less, or start from a smaller image."
            )
        if (request.width, request.height) != (width, height):
            raise _size_error(
                request,
                init,
                f"for outpaint the width and height are the result's size, the init image's plus "
                f"the amounts {amounts} (left, right, up, down): set them to {width}x{height}.",
            )

    def _prepare(self, request: RenderRequest, inputs: InputResolver | None) -> _Inputs:
        """The request's input images, checked against it and made ready for its pipeline."""
        prepared = self._prepare_init(request, inputs)
        if request.control_image is not None:
            control = _resolve(inputs, request.control_image, "control image")
            if control.size != (request.width, request.height):
                raise ParameterError(
                    f"The control image is {control.width}x{control.height} but the request is "
                    f"{request.width}x{request.height}; give a control image of the request's "
                    "size (Studio.request resizes one of the same shape)."
                )
            prepared = replace(prepared, control=control)
        if request.reference_image is None:
            return prepared
        return replace(
            prepared, reference=_resolve(inputs, request.reference_image, "reference image")
        )

    def _prepare_init(self, request: RenderRequest, inputs: InputResolver | None) -> _Inputs:
        """The init image (and mask) of a mode that takes one, ready for its pipeline."""
        if request.mode == "txt2img":
            return _Inputs()
        assert request.init_image is not None  # check() saw to it
        init = _resolve(inputs, request.init_image, "init image")
        if request.mode == "outpaint":
            assert request.outpaint is not None
            canvas, mask, blend = outpaint_canvas(init, request.outpaint)
            if canvas.size != (request.width, request.height):  # _check_outpaint_size saw to it
                raise _size_error(request, init, "set width and height to the result's size.")
            return _Inputs(canvas, mask, blend)
        if init.size != (request.width, request.height):
            raise _size_error(
                request,
                init,
                f"for {request.mode} the width and height have to be the init image's: set them "
                f"to {init.width}x{init.height}, or resize the image first.",
            )
        if request.mode != "inpaint":
            return _Inputs(init)
        assert request.mask_image is not None
        mask = _resolve(inputs, request.mask_image, "mask")
        check_mask_size(mask, init)
        return _Inputs(init, mask, mask)

    def mode_pipeline(
        self, mode: str, sampler: str, control_type: str | None = None
    ) -> DiffusionPipeline:
        """`mode`'s pipeline on the loaded components (no weights copied), with `sampler`; with
        `control_type`, its ControlNet's variant (StableDiffusion[XL]ControlNetPipeline)."""
        base = self.inpaint_pipe if mode in INPAINT_MODES else self.pipe
        family = self.inpaint_model.family if self._dedicated(mode) else self.family
        options: dict[str, Any] = {"add_watermarker": False} if family == SDXL else {}
        if control_type is not None:
            options["controlnet"] = self.controlnet(control_type)
        pipe = MODE_PIPELINES[mode].from_pipe(
            base, scheduler=make_scheduler(sampler, self._scheduler_config(mode)), **options
        )
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _prompt_arguments(
        self, pipe: DiffusionPipeline, mode: str, batch: list[RenderRequest]
    ) -> dict[str, Any]:
        """The prompts as the pipeline takes them: plain text, which it encodes itself, or (for
        AUTOMATIC1111 syntax, long prompts and blends; `render` groups them apart) embeddings
        made by compel."""
        first = batch[0]
        if not first.weighted:
            return {
                "prompt": [r.prompt for r in batch],
                "negative_prompt": [r.negative_prompt for r in batch],
            }
        from studio.images.backends.diffusers.prompt_embeds import PromptEncoder

        family = self.inpaint_model.family if self._dedicated(mode) else self.family
        blends = [None if r.blend_prompt is None else (r.blend_prompt, r.blend) for r in batch]
        return PromptEncoder(pipe, family).arguments(
            [r.prompt for r in batch],
            [r.negative_prompt for r in batch],
            long=first.long_prompt,
            blend=blends,
        )

    def _render_batch(
        self, batch: list[RenderRequest], prepared: list[_Inputs], on_step: StepCallback | None
    ) -> list[Image.Image]:
        first, count = batch[0], len(batch)
        guided = first.control_image is not None
        pipe = self.mode_pipeline(first.mode, first.sampler, first.control_type if guided else None)
        fast = self.fast_path
        if fast is not None:  # pad to a bucket: compiled graphs see a fixed set of batch sizes
            extra = fast.padded(count) - count
            batch, prepared = [*batch, *[batch[-1]] * extra], [*prepared, *[prepared[-1]] * extra]
            fast.vae_options(pipe.vae, len(batch), first.width, first.height)

        def step_end(
            pipe_: Any, step: int, _timestep: Any, tensors: dict[str, Any]
        ) -> dict[str, Any]:
            if on_step is not None:
                # img2img runs steps x strength of the steps, Heun-like samplers about twice
                total = getattr(pipe_, "num_timesteps", None) or first.steps
                on_step(step + 1, total, tensors.get("latents"))
            return tensors

        arguments: dict[str, Any] = {
            **self._prompt_arguments(pipe, first.mode, batch),
            "num_inference_steps": first.steps,
            "guidance_scale": first.cfg,
            "generator": [torch.Generator("cpu").manual_seed(r.seed) for r in batch],
            "callback_on_step_end": step_end,
        }
        if first.mode != "txt2img":
            arguments["image"] = [p.image for p in prepared]
            arguments["strength"] = first.strength if first.strength is not None else 1.0
        if first.mode in INPAINT_MODES:
            arguments["mask_image"] = [p.mask for p in prepared]
        if first.mode in {"txt2img", *INPAINT_MODES}:
            arguments.update(width=first.width, height=first.height)
        if guided:  # one ControlNet and its controls per call (`render` groups by them)
            arguments.update(
                image=[p.control for p in prepared],
                controlnet_conditioning_scale=float(first.control_scale),
                control_guidance_start=float(first.control_start),
                control_guidance_end=float(first.control_end),
            )
        if self.ip_adapter is not None:
            # A loaded adapter takes part in every call, with one reference for all its prompts
            # (`render` groups by it). Without a reference the scale is 0, which diffusers skips:
            # the pixels are those of the model without the adapter.
            pipe.set_ip_adapter_scale(first.reference_scale or 0.0)
            reference = prepared[0].reference
            arguments["ip_adapter_image"] = BLANK_REFERENCE if reference is None else reference
        self._apply_loras(pipe, first)
        for state in self._step_caches:
            state.start()
        try:
            if fast is None:
                result = pipe(**arguments)
            else:
                with fast.stance(len(batch), first.width, first.height):
                    result = pipe(**arguments)
        except torch.OutOfMemoryError as exc:
            raise RenderError(
                f"Out of GPU memory rendering {first.width}x{first.height} x{len(batch)}: lower "
                f"{setting('batch_size')} or the size, or close other GPU programs."
            ) from exc
        images = list(result.images)[:count]  # the padding's images are dropped
        prepared = prepared[:count]
        return [
            image if p.blend is None else Image.composite(image, p.image, p.blend)
            for image, p in zip(images, prepared, strict=True)
        ]
