"""The demo model and its companions: tiny untrained pipelines (SD 1.x and SDXL shapes), an
IP-Adapter, a LoRA and a ControlNet, built locally and deterministically from configs so the
whole code path runs offline. Every image from them is labelled a placeholder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

from studio.core.hub import CLIP_TOKENIZER_DIR, SD
from studio.core.params import (
    CLIP_WINDOW,
)
from studio.images.backends.diffusers.adapters import IP_ADAPTER_WEIGHTS, SHARED_IMAGE_ENCODER
from studio.images.backends.diffusers.models import ImageModel, load_pipeline
from studio.images.backends.diffusers.schedulers import SD15_SCHEDULER_CONFIG


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
    """The demo model's unet, its text (cross-attention) width the tiny CLIP's 32. Two attention
    heads of 32 channels: at the 32x32 latents' 1,024 tokens, eight heads of 8 made every step
    1.7x slower on a CPU (softmax over 8 score matrices instead of 2) for no gain to a
    placeholder (the bare unet at CFG's batch of 2 on 2 cores: 122 ms a step, now 70 ms)."""
    return _tiny_unet(cross_attention_dim=32, attention_head_dim=2)


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


# ControlNet ---------------------------------------------------------------------------------------

DEMO_CONTROLNET_VERSION = "controlnet-demo-v2"  # v2: the demo unet's two heads
# The ControlNet tensors that `from_unet` starts at zero (so that a new ControlNet changes
# nothing); the demo's are random instead, so that its control image moves the pixels.
_ZERO_STARTED = (
    "controlnet_down_blocks",
    "controlnet_mid_block",
    "controlnet_cond_embedding.conv_out",
)


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
