"""The diffusers `Renderer`: every mode on one loaded model, seeds, batches, adapters, LoRAs.

Every mode runs on the weights already loaded: each batch gets a pipeline built by diffusers'
AutoPipeline `from_pipe` from the loaded components (the same unet, VAE and text encoders), with
the request's sampler. How sizes relate to the init image, per mode:

- txt2img: `width` x `height`.
- img2img and variation: the init image's size, which the request's `width` and `height` must equal.
  A variation is img2img of the init image at the request's (low) strength with its own seed; its
  prompt may be empty (the image service fills in the init image's prompt where it knows it).
- inpaint: the init image's size (the request's `width` and `height` must equal it, and the mask's
  size too). White in the mask is repainted, black kept: the result is composited so that every
  black pixel is exactly the init image's. With `inpaint_padding`, only the mask's area is
  inpainted, at the request's size, and pasted back (`studio.images.inpaint_area`).
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
the pixels of the model without the adapter. `build_demo_ip_adapter` makes a tiny one for the
demo.

With ControlNets (`controlnets`), every mode takes a control image at the request's size: the
mode's pipeline is built as its ControlNet variant (txt2img, img2img and inpaint ones), the same
components plus the ControlNet, so a sketch can steer an img2img or an inpainted region too."""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderTiny,
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    DiffusionPipeline,
)
from PIL import Image
from transformers import CLIPTokenizer

from studio.core.config import setting
from studio.core.errors import ImageInputError, LoraError, ParameterError, RenderError, StudioError
from studio.core.hub import SDXL
from studio.core.inputs import check_mask_size, to_mask, to_rgb
from studio.core.metadata import json_safe
from studio.core.params import LIMITS, MODES, SAMPLER_NAMES, RenderRequest, outpaint_size
from studio.images.backends.base import Capabilities, InputResolver
from studio.images.backends.diffusers.adapters import (
    IP_ADAPTER_WEIGHTS,
    ControlNetSource,
    IPAdapter,
    check_controlnet_fits,
    controlnet_error,
)
from studio.images.backends.diffusers.fast_path import FastPath, apply_fast_path
from studio.images.backends.diffusers.models import (
    ImageModel,
    count_tokens,
    load_pipeline,
    load_tokenizer,
    pick_device,
    weights_sha256,
)
from studio.images.backends.diffusers.openmp import release_openmp_threads
from studio.images.backends.diffusers.schedulers import make_scheduler, scheduler_config_of
from studio.images.backends.diffusers.step_cache import apply_step_cache
from studio.images.backends.diffusers.weights import resolve_controlnet
from studio.images.inpaint_area import Box, masked_area, paste_area
from studio.images.loras import LoraFile, LoraFolder
from studio.images.outpaint import OUTPAINT_BLUR, OUTPAINT_SEAM, outpaint_canvas


def _adapter_name(lora: LoraFile) -> str:
    """A PEFT adapter name for a LoRA file: its name and hash, so an edited file loads anew."""
    return re.sub(r"\W", "_", f"{lora.name}_{lora.sha256[:10]}")


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


@dataclass(frozen=True)
class _Inputs:
    """A request's input images, ready for its pipeline."""

    image: Image.Image | None = None  # the init image, or outpaint's canvas
    mask: Image.Image | None = None  # white = repaint, as the pipeline gets it
    blend: Image.Image | None = None  # where the result replaces `image` (soft for outpaint)
    reference: Image.Image | None = None  # the IP-Adapter's reference image (RGB)
    more_references: tuple[Image.Image, ...] = ()  # the references after the first (RGB)
    reference_masks: tuple[Image.Image, ...] = ()  # one region per reference (L, white = in it)
    control: Image.Image | None = None  # the ControlNet's control image (RGB)
    whole: tuple[Image.Image, Image.Image, Box] | None = None  # only masked: picture, mask, area


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


def _masked_references(prepared: _Inputs, width: int, height: int) -> dict[str, Any]:
    """The pipeline arguments for several references (one adapter), each limited to its region
    by diffusers' IP-Adapter masks: the images nested per adapter, the masks as one
    [1, references, height, width] tensor per adapter, as `IPAdapterAttnProcessor` reads them."""
    from diffusers.image_processor import IPAdapterMaskProcessor

    masks = IPAdapterMaskProcessor().preprocess(
        list(prepared.reference_masks), height=height, width=width
    )
    return {
        "ip_adapter_image": [[prepared.reference, *prepared.more_references]],
        "cross_attention_kwargs": {
            "ip_adapter_masks": [masks.reshape(1, masks.shape[0], masks.shape[2], masks.shape[3])]
        },
    }


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
    without copying weights (each batch's pipeline is built from the loaded components). `render`
    holds a lock: scheduler state is per pipeline call and not thread-safe."""

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
        self.fast_path = fast_path  # None: eager, as loaded (see .fast_path)
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
        pipeline decodes its final latents (the denoising strip's frames, studio.images.strips)."""
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
            if self.fast_path is not None:  # compiled twins of the modules just dropped
                self.fast_path.gates.clear()
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

    @property
    def model_sha256(self) -> str | None:
        """The sha256 of the checkpoint (`models.hashed_weights`), hashed on first use."""
        return weights_sha256(self.model)

    @property
    def model_hash(self) -> str | None:
        """A1111's `Model hash`: the first 10 hex characters of `model_sha256`."""
        return (self.model_sha256 or "")[:10] or None

    def count_tokens(self, text: str) -> int:
        return count_tokens(self.tokenizer, text)

    @property
    def pipe(self) -> DiffusionPipeline:
        """The image model's text-to-image pipeline (with the IP-Adapter), loaded on first use."""
        if self._pipe is None:
            pipe = load_pipeline(self.model, self.device, self.dtype)
            self._load_ip_adapter(pipe, self.model)
            if self.fast_path is not None:
                self.fast_info = apply_fast_path(
                    pipe, self.fast_path, self.compile_cache, self.device
                )
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
                apply_fast_path(pipe, self.fast_path, self.compile_cache, self.device)
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
            "model_hash": self.model_hash,  # in the PNG's infotext only, never in a cache key
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
                raise controlnet_error(control_type, source.name, message) from exc
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
                if self.fast_path is not None:  # new layers: unfused, compiled again
                    info = self.fast_info if pipe.unet is getattr(self._pipe, "unet", None) else {}
                    self.fast_path.take_lora(pipe.unet, info)
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
            try:
                for indices in groups.values():
                    for start in range(0, len(indices), self.batch_size):
                        batch = indices[start : start + self.batch_size]
                        rendered = self._render_batch(
                            [requests[i] for i in batch], [prepared[i] for i in batch], on_step
                        )
                        for index, image in zip(batch, rendered, strict=True):
                            images[index] = image
            finally:  # an LLM in this process computes on the same cores: see openmp.py
                if self.device == "cpu":
                    release_openmp_threads()
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
                    "size (Studio.guide brings a picture of any shape to it)."
                )
            prepared = replace(prepared, control=control)
        if request.reference_image is None:
            return prepared
        masks = tuple(_resolve(inputs, sha, "mask") for sha in request.reference_masks or ())
        for mask in masks:
            if mask.size != (request.width, request.height):
                raise ParameterError(
                    f"A reference image's region mask is {mask.width}x{mask.height} but the "
                    f"request is {request.width}x{request.height}; give masks of the image's size."
                )
        return replace(
            prepared,
            reference=_resolve(inputs, request.reference_image, "reference image"),
            more_references=tuple(
                _resolve(inputs, sha, "reference image") for sha in request.extra_references or ()
            ),
            reference_masks=masks,
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
        if request.inpaint_padding is not None:  # only the masked area, at the request's size
            area, area_mask, box = masked_area(init, mask, request.inpaint_padding)
            return _Inputs(area, area_mask, area_mask, whole=(init, mask, box))
        return _Inputs(init, mask, mask)

    def mode_pipeline(
        self, mode: str, sampler: str, control_type: str | None = None
    ) -> DiffusionPipeline:
        """`mode`'s pipeline on the loaded components (no weights copied), with `sampler`; with
        `control_type`, its ControlNet's variant of the mode's pipeline (StableDiffusion[XL]-
        ControlNetPipeline, -ControlNetImg2ImgPipeline, -ControlNetInpaintPipeline)."""
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
        self._apply_loras(pipe, first)  # before compel encodes the prompts with the text encoder
        fast = self.fast_path
        if fast is not None:  # pad to a bucket: compiled graphs see a fixed set of batch sizes
            batch, prepared = fast.pad(batch), fast.pad(prepared)
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
            # txt2img's ControlNet pipeline takes the control map as `image`; the img2img and
            # inpaint ones take the init image there and the map as `control_image`
            control = "image" if first.mode == "txt2img" else "control_image"
            arguments.update(
                {control: [p.control for p in prepared]},
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
            if prepared[0].reference_masks:  # each reference limited to its region
                arguments.update(_masked_references(prepared[0], first.width, first.height))
        for state in self._step_caches:
            state.start()
        try:
            result = pipe(**arguments) if fast is None else fast.call(pipe, arguments)
        except torch.OutOfMemoryError as exc:
            raise RenderError(
                f"Out of GPU memory rendering {first.width}x{first.height} x{len(batch)}: lower "
                f"{setting('batch_size')} or the size, or close other GPU programs."
            ) from exc
        images = list(result.images)[:count]  # the padding's images are dropped
        prepared = prepared[:count]
        images = [
            image if p.blend is None else Image.composite(image, p.image, p.blend)
            for image, p in zip(images, prepared, strict=True)
        ]
        return [image if p.whole is None else paste_area(image, *p.whole)
                for image, p in zip(images, prepared, strict=True)]  # fmt: skip
