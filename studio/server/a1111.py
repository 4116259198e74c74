"""AUTOMATIC1111's web API (`/sdapi/v1`), as its clients (the `webuiapi` package, Open WebUI,
painting programs' plugins) call it: the same request fields, response shapes and `info` JSON
string.

Every image goes through the studio's image service (cached, stored, in the Gallery as
"api A1111"); the PNGs returned are the catalog's, with the same `parameters` chunk. `seed: -1`
draws a seed that `info` reports; `batch_size` x `n_iter` images take consecutive seeds, as A1111
does. Fields A1111 has and the studio does not (hires fix, face restoration, tiling, styles) are
ignored as A1111 ignores what it does not know, and said in `info`'s `notes`; an A1111 ControlNet
unit whose module matches a control type becomes the studio's guidance.
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request
from PIL import Image, ImageFilter, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from studio.api import Studio
from studio.core.errors import ParameterError, RenderCancelledError, StudioError
from studio.core.inputs import to_mask, to_rgb
from studio.core.metadata import parse_parameters, read_png_metadata
from studio.core.params import CONTROL_RESIZE, CONTROL_TYPES, RenderRequest, resolve_seed
from studio.core.samplers import SAMPLER_NAMES, SCHEDULE_TYPES, a1111_sampler, resolve_sampler
from studio.core.targets import Target
from studio.core.version import __version__
from studio.images.service import ImageResult, ImageTask
from studio.server.payloads import b64_file, decode_image, renamed
from studio.server.state import Render, ServerState, state_of

router = APIRouter(prefix="/sdapi/v1", tags=["AUTOMATIC1111"])

TARGET = Target("api", style="A1111")
MAX_IMAGES = 64  # batch_size x n_iter in one request
# Our field names, as A1111's clients send them (errors name what was sent).
A1111_NAMES = {
    "cfg": "cfg_scale",
    "strength": "denoising_strength",
    "sampler": "sampler_name",
    "control_scale": "weight",
    "control_start": "guidance_start",
    "control_end": "guidance_end",
}
# img2img's resize_mode: 0 just resize, 1 crop and resize, 2 resize and fill, 3 just resize
# (latent upscale, which the studio does in pixels)
RESIZE_MODES = ("just resize", "crop and resize", "resize and fill", "just resize")
IGNORED = {  # A1111 fields the studio has no use for: said in info's notes when they ask for work
    "enable_hr": "hires fix",
    "restore_faces": "face restoration",
    "tiling": "tiling",
}


class Txt2Img(BaseModel):
    """A1111's StableDiffusionTxt2ImgProcessingAPI: the fields the studio reads; others ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] = Field(default_factory=list)
    seed: int = -1
    sampler_name: str | None = None
    sampler_index: str | None = None  # deprecated in A1111: sampler_name wins
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int = 512
    height: int = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    enable_hr: bool = False
    override_settings: dict[str, Any] = Field(default_factory=dict)
    send_images: bool = True
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)


class Img2Img(Txt2Img):
    """A1111's StableDiffusionImg2ImgProcessingAPI: init images, a mask, the denoising strength."""

    init_images: list[str] = Field(default_factory=list)
    resize_mode: int = 0
    denoising_strength: float = 0.75
    mask: str | None = None
    mask_blur: int | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    inpainting_fill: int = 0
    inpaint_full_res: bool | int = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    include_init_images: bool = False


class PngInfo(BaseModel):
    image: str


# Making images ----------------------------------------------------------------------------------


@router.post("/txt2img")
def txt2img(body: Txt2Img, request: Request) -> dict[str, Any]:
    return _generate(state_of(request), body, "txt2img")


@router.post("/img2img")
def img2img(body: Img2Img, request: Request) -> dict[str, Any]:
    return _generate(state_of(request), body, "img2img")


def _generate(state: ServerState, body: Txt2Img, api: str) -> dict[str, Any]:
    studio = state.studio
    notes = _check_counts(body) + _ignored(body)
    _check_model(studio, body.override_settings)
    try:
        base, more_notes = _request(studio, body)
    except ParameterError as error:
        raise ParameterError(renamed(str(error), A1111_NAMES)) from None
    notes += more_notes
    seeds = [(base.seed + i) % 2**32 for i in range(body.batch_size * body.n_iter)]
    made: list[ImageResult] = []
    interrupted = False
    with state.activity.render(api, body.n_iter) as render:
        for batch in range(body.n_iter):
            chunk = seeds[batch * body.batch_size : (batch + 1) * body.batch_size]
            tasks = [
                ImageTask(replace(base, seed=seed), TARGET, provenance={"api": f"sdapi/v1/{api}"})
                for seed in chunk
            ]
            try:
                made += studio.images.make(tasks, on_step=render.on_step)
            except RenderCancelledError:
                if render.interrupted.is_set():
                    interrupted = True
                    break
                first = batch * body.batch_size + 1
                notes.append(f"images {first}-{first + len(chunk) - 1} skipped")
            finally:
                render.next()
    if interrupted:
        notes.append("interrupted: the images finished before the interrupt are returned")
    info = _info(studio, body, base, made, notes)
    parameters = body.model_dump()
    if isinstance(body, Img2Img) and not body.include_init_images:
        parameters["init_images"], parameters["mask"] = None, None
    images = [b64_file(result.path) for result in made] if body.send_images else []
    return {"images": images, "parameters": parameters, "info": json.dumps(info)}


def _check_counts(body: Txt2Img) -> list[str]:
    for name in ("batch_size", "n_iter"):
        if getattr(body, name) < 1:
            raise ParameterError(f"`{name}` has to be 1 or more but is {getattr(body, name)}.")
    if body.batch_size * body.n_iter > MAX_IMAGES:
        raise ParameterError(
            f"`batch_size` x `n_iter` is {body.batch_size * body.n_iter}; one request makes at "
            f"most {MAX_IMAGES} images."
        )
    return []


def _ignored(body: Txt2Img) -> list[str]:
    asked = [label for name, label in IGNORED.items() if getattr(body, name)]
    notes = [f"{label} is not available here and was not applied" for label in asked]
    if body.styles:
        notes.append(f"styles {body.styles} are A1111's saved styles and were not applied")
    return notes


def _check_model(studio: Studio, overrides: dict[str, Any]) -> None:
    wanted = overrides.get("sd_model_checkpoint")
    if wanted and _model_name(str(wanted)) != studio.settings.image_model:
        raise ParameterError(
            f"`override_settings.sd_model_checkpoint` is {wanted!r} but the studio serves "
            f"{studio.settings.image_model!r}; switch models with POST /sdapi/v1/options first."
        )


def _request(studio: Studio, body: Txt2Img) -> tuple[RenderRequest, list[str]]:
    """The studio's request for `body` (its init image, mask and control image stored in the
    catalog), with the seed drawn when it is -1, and notes on what was mapped."""
    sampler, notes = resolve_sampler(
        body.sampler_name or body.sampler_index or studio.settings.sampler, body.scheduler
    )
    values: dict[str, Any] = {
        "negative_prompt": body.negative_prompt,
        "sampler": sampler,
        "steps": body.steps,
        "cfg": body.cfg_scale,
        "width": body.width,
        "height": body.height,
        "seed": resolve_seed(body.seed),
    }
    if body.seed < -1:
        raise ParameterError(f"`seed` has to be -1 (random) or 0..{2**32 - 1} but is {body.seed}.")
    inputs: dict[str, Any] = {}
    if isinstance(body, Img2Img):
        inputs, more = _img2img_inputs(body)
        notes += more
    request = studio.request(body.prompt, **inputs, **values)
    guided, more = _controlnet(studio, request, body.alwayson_scripts)
    return guided, notes + more


def _img2img_inputs(body: Img2Img) -> tuple[dict[str, Any], list[str]]:
    if not body.init_images:
        raise ParameterError("`init_images` is empty; send the image to start from (base64).")
    if not 0 <= body.resize_mode < len(RESIZE_MODES):
        raise ParameterError(
            f"`resize_mode` has to be 0 (just resize), 1 (crop and resize), 2 (resize and fill) "
            f"or 3 (latent upscale) but is {body.resize_mode}."
        )
    strength = body.denoising_strength
    if not (math.isfinite(strength) and 0 < strength <= 1):
        raise ParameterError(
            f"`denoising_strength` has to be above 0 and at most 1 but is {strength:g}."
        )
    notes = []
    if len(body.init_images) > 1:
        notes.append(f"{len(body.init_images)} init images given; the first was used")
    size = (body.width, body.height)
    resize = RESIZE_MODES[body.resize_mode]
    given = decode_image(body.init_images[0], "init_images.0")
    init = _fit(to_rgb(given), size, resize)
    inputs: dict[str, Any] = {"init_image": init, "strength": strength, "mode": "img2img"}
    if body.mask:
        mask = decode_image(body.mask, "mask")
        if mask.size != given.size:
            raise ParameterError(
                f"`mask` is {mask.width}x{mask.height} but the init image is "
                f"{given.width}x{given.height}; send a mask of the init image's size."
            )
        inputs.update(mode="inpaint", mask=_mask(_fit(_as_mask(mask), size, resize), body))
        if body.inpaint_full_res:  # "only masked": the mask's area at the full size, pasted back
            if body.inpaint_full_res_padding < 0:
                raise ParameterError(
                    f"`inpaint_full_res_padding` has to be 0 or more but is "
                    f"{body.inpaint_full_res_padding}."
                )
            inputs["inpaint_padding"] = body.inpaint_full_res_padding
        if body.inpainting_fill != 1 and strength < 1:
            notes.append(
                "inpainting_fill: the masked area starts from the original picture (A1111's 1)"
            )
    return inputs, notes


def _fit(picture: Image.Image, size: tuple[int, int], resize: str) -> Image.Image:
    """`picture` at `size` by A1111's resize mode (a mask the same way as its image)."""
    from studio.images.control import fill_control, fit_control

    fitted = fit_control(picture, size, resize)
    return fill_control(fitted, size) if fitted.size != size else fitted


def _as_mask(image: Image.Image) -> Image.Image:
    """A1111 masks: white = repaint; transparency counts as white (a mask painted by erasing)."""
    return to_mask(image)


def _mask(mask: Image.Image, body: Img2Img) -> Image.Image:
    if body.inpainting_mask_invert:
        mask = ImageOps.invert(mask)
    blur_x = body.mask_blur if body.mask_blur is not None else body.mask_blur_x
    blur_y = body.mask_blur if body.mask_blur is not None else body.mask_blur_y
    if blur_x < 0 or blur_y < 0:
        raise ParameterError(f"`mask_blur` has to be 0 or more but is {min(blur_x, blur_y)}.")
    if blur_x or blur_y:  # A1111 blurs the mask's edge; the studio keeps a hard edge after it
        mask = mask.filter(ImageFilter.GaussianBlur((blur_x, blur_y)))
    if mask.getextrema()[1] < 128:
        raise ParameterError("`mask` has no white (repaint) area; paint what should change.")
    return mask


# ControlNet units, as A1111's ControlNet extension takes them in alwayson_scripts ---------------


def _controlnet(
    studio: Studio, request: RenderRequest, scripts: dict[str, Any]
) -> tuple[RenderRequest, list[str]]:
    script = next((v for k, v in scripts.items() if k.lower() == "controlnet"), None)
    units = (script or {}).get("args") or []
    units = [u for u in units if isinstance(u, dict) and u.get("enabled", True) and u.get("image")]
    if not units:
        return request, []
    notes = [f"{len(units)} ControlNet units given; the first was used"] if len(units) > 1 else []
    unit = units[0]
    module = str(unit.get("module") or "none").lower()
    model = str(unit.get("model") or "").lower()
    kind = _control_type(module) or (_control_type(model) if module == "none" else None)
    if kind is None:
        raise ParameterError(
            f"ControlNet module {unit.get('module')!r} has no match here; the studio guides with "
            f"{', '.join(CONTROL_TYPES)} (module canny, scribble_*, lineart_*, depth_*, or none "
            "with one of those in the model's name)."
        )
    picture = unit["image"]
    if isinstance(picture, dict):  # {"image": ..., "mask": ...}
        picture = picture.get("image") or ""
    resize = unit.get("resize_mode", "Crop and Resize")
    if isinstance(resize, int) and 0 <= resize < 3:
        resize = RESIZE_MODES[resize]
    resize = str(resize).lower()
    if resize not in CONTROL_RESIZE:
        raise ParameterError(
            f"ControlNet `resize_mode` {unit.get('resize_mode')!r} is not one of "
            f"{', '.join(CONTROL_RESIZE.values())}."
        )
    try:
        guided = studio.guide(
            request,
            decode_image(str(picture), "alwayson_scripts.ControlNet.args.0.image"),
            kind,
            scale=float(unit.get("weight", 1.0)),
            start=float(unit.get("guidance_start", 0.0)),
            end=float(unit.get("guidance_end", 1.0)),
            resize=resize,
            preprocess=module != "none",
        )
    except ParameterError as error:
        raise ParameterError(renamed(str(error), A1111_NAMES)) from None
    return guided, notes


def _control_type(name: str) -> str | None:
    if "canny" in name:
        return "canny"
    if "scribble" in name or name.startswith("invert"):
        return "scribble"
    if "lineart" in name:
        return "lineart"
    if "depth" in name:
        return "depth"
    return None


# info: A1111's JSON string about what was made ------------------------------------------------


def _info(
    studio: Studio,
    body: Txt2Img,
    base: RenderRequest,
    made: list[ImageResult],
    notes: list[str],
) -> dict[str, Any]:
    seeds = [result.job.request.seed for result in made] or [base.seed]
    sampler, schedule = a1111_sampler(base.sampler)
    backend = studio.backend
    infotexts = [read_png_metadata(result.path.read_bytes())[0] or "" for result in made]
    return {
        "prompt": base.prompt,
        "all_prompts": [base.prompt] * len(made),
        "negative_prompt": base.negative_prompt,
        "all_negative_prompts": [base.negative_prompt] * len(made),
        "seed": seeds[0],
        "all_seeds": seeds,
        "subseed": seeds[0],
        "all_subseeds": seeds,
        "subseed_strength": 0,
        "width": base.width,
        "height": base.height,
        "sampler_name": sampler,
        "scheduler": schedule,
        "cfg_scale": base.cfg,
        "steps": base.steps,
        "batch_size": body.batch_size,
        "restore_faces": False,
        "face_restoration_model": None,
        "sd_model_name": studio.settings.image_model,
        "sd_model_hash": getattr(backend, "model_hash", None),
        "sd_vae_name": None,
        "sd_vae_hash": None,
        "seed_resize_from_w": -1,
        "seed_resize_from_h": -1,
        "denoising_strength": base.strength,
        "extra_generation_params": {},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": body.styles,
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": 1,
        "is_using_inpainting_conditioning": False,
        "version": f"series-studio {__version__}",
        "cached": [result.cached for result in made],
        "catalog_keys": [result.key for result in made],
        "notes": notes,
    }


# Progress, interrupt, skip ------------------------------------------------------------------------


@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False) -> dict[str, Any]:
    render = state_of(request).activity.current()
    state = {
        "skipped": False,
        "interrupted": False,
        "stopping_generation": False,
        "job": "",
        "job_count": 0,
        "job_timestamp": "0",
        "job_no": 0,
        "sampling_step": 0,
        "sampling_steps": 0,
    }
    if render is None:
        return {"progress": 0.0, "eta_relative": 0.0, "state": state, "current_image": None,
                "textinfo": None, "current_task": None}  # fmt: skip
    done = render.progress
    elapsed = time.monotonic() - render.started
    state.update(
        skipped=render.skipped.is_set(),
        interrupted=render.interrupted.is_set(),
        job=render.api,
        job_count=render.count,
        job_timestamp=time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() - elapsed)),
        job_no=render.number,
        sampling_step=render.step,
        sampling_steps=render.steps,
    )
    image = None if skip_current_image else _preview(render)
    return {
        "progress": done,
        "eta_relative": elapsed / done - elapsed if done > 0 else 0.0,
        "state": state,
        "current_image": image,
        "textinfo": f"Step {render.step}/{render.steps}" if render.steps else "Waiting...",
        "current_task": None,
    }


def _preview(render: Render) -> str | None:
    """The image being made, as far as it has come (a quick look at its latents), base64 PNG."""
    import base64

    from studio.images.preview import latent_preview

    latents = render.latents
    if latents is None:
        return None
    picture = latent_preview(latents)
    if picture is None:
        return None
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@router.post("/interrupt")
def interrupt(request: Request) -> dict[str, Any]:
    """Stop every A1111 render in flight at its next step (what was finished is returned)."""
    for render in state_of(request).activity.all():
        if render.api in ("txt2img", "img2img"):
            render.interrupted.set()
    return {}


@router.post("/skip")
def skip(request: Request) -> dict[str, Any]:
    """Skip the image (or batch) being made by the oldest A1111 render; the rest goes on."""
    for render in state_of(request).activity.all():
        if render.api in ("txt2img", "img2img"):
            render.skipped.set()
            break
    return {}


# PNG Info -----------------------------------------------------------------------------------------


@router.post("/png-info")
def png_info(body: PngInfo) -> dict[str, Any]:
    """The generation parameters inside a PNG: ours and A1111's `parameters`, ComfyUI's and
    InvokeAI's where their values map onto them."""
    from studio.core.metadata import infotext_of

    picture = decode_image(body.image, "image")
    text, notes = infotext_of(picture)
    items = {
        key: value
        for key, value in (getattr(picture, "text", None) or picture.info).items()
        if isinstance(value, str) and key != "parameters"
    }
    if notes:
        items["notes"] = "; ".join(notes)
    return {
        "info": text or "",
        "items": items,
        "parameters": parse_parameters(text) if text else {},
    }


# Lists and options --------------------------------------------------------------------------------


@router.get("/samplers")
def samplers() -> list[dict[str, Any]]:
    names = list(dict.fromkeys(a1111_sampler(name)[0] for name in SAMPLER_NAMES))
    return [{"name": name, "aliases": [], "options": {}} for name in names]


@router.get("/schedulers")
def schedulers() -> list[dict[str, Any]]:
    return [
        {
            "name": label.lower(),
            "label": label,
            "aliases": None,
            "default_rho": -1,
            "need_inner_model": False,
        }  # fmt: skip
        for label in SCHEDULE_TYPES
    ]


def _model_name(title: str) -> str:
    """A model's name from A1111's title (`name [hash]`)."""
    name = title.strip()
    if name.endswith("]") and " [" in name:
        name = name[: name.rindex(" [")]
    return name


def _models(studio: Studio) -> list[dict[str, Any]]:
    current = studio.settings.image_model
    backend = studio.backend
    short = getattr(backend, "model_hash", None)
    entries = [
        {
            "title": f"{current} [{short}]" if short else current,
            "model_name": current,
            "hash": short,
            "sha256": getattr(backend, "model_sha256", None),
            "filename": current,
            "config": None,
        }
    ]
    if current != "demo":
        entries.append({"title": "demo", "model_name": "demo", "hash": None, "sha256": None,
                        "filename": "demo", "config": None})  # fmt: skip
    return entries


@router.get("/sd-models")
def sd_models(request: Request) -> list[dict[str, Any]]:
    return _models(state_of(request).studio)


@router.post("/refresh-checkpoints")
def refresh_checkpoints() -> dict[str, Any]:
    return {}


@router.get("/options")
def get_options(request: Request) -> dict[str, Any]:
    studio = state_of(request).studio
    current = _models(studio)[0]
    return {
        "sd_model_checkpoint": current["title"],
        "sd_checkpoint_hash": current["sha256"],
        "samples_format": "png",
        "CLIP_stop_at_last_layers": 1,
        "sd_vae": "Automatic",
        "eta_noise_seed_delta": 0,
    }


@router.post("/options")
def set_options(options: dict[str, Any], request: Request) -> dict[str, Any]:
    """`sd_model_checkpoint` switches the image model (a name from /sd-models, or any model the
    `image_model` setting takes); other options are accepted and have no effect here."""
    state = state_of(request)
    wanted = options.get("sd_model_checkpoint")
    if wanted:
        if not isinstance(wanted, str):
            raise ParameterError("`sd_model_checkpoint` has to be a model's name (a string).")
        try:
            state.switch_model(_model_name(wanted))
        except StudioError as error:  # no such model: the client's mistake, said as such
            known = ", ".join(model["title"] for model in _models(state.studio))
            raise ParameterError(
                f"`sd_model_checkpoint` {wanted!r} cannot be used: {error} Models: {known}."
            ) from None
    return {}


@router.get("/loras")
def loras(request: Request) -> list[dict[str, Any]]:
    studio = state_of(request).studio
    from studio.core.config import lora_folder

    folder = lora_folder(studio.settings)
    return [
        {"name": name, "alias": name, "path": str(folder / f"{name}.safetensors"), "metadata": {}}
        for name in studio.loras()
    ]


@router.post("/refresh-loras")
def refresh_loras() -> dict[str, Any]:
    return {}


@router.get("/scripts")
def scripts() -> dict[str, list[str]]:
    return {"txt2img": [], "img2img": []}


@router.get("/sd-vae")
def sd_vae() -> list[dict[str, Any]]:
    return []


@router.get("/upscalers")
def upscalers() -> list[dict[str, Any]]:
    return []


@router.get("/embeddings")
def embeddings() -> dict[str, Any]:
    return {"loaded": {}, "skipped": {}}


@router.get("/cmd-flags")
def cmd_flags(request: Request) -> dict[str, Any]:
    settings = state_of(request).settings
    return {"api": True, "nowebui": True, "data_dir": str(settings.data_dir)}
