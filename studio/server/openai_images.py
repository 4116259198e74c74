"""OpenAI's Images API under `/v1`, as the `openai` client and Open WebUI's "OpenAI" image engine
call it: generations (JSON), edits and variations (multipart forms), the models list, and the
image files that `response_format=url` points at.

Every image goes through the studio's one image service (cached, stored, in the Gallery as
"api OpenAI"). `n` images take consecutive seeds from the settings' seed (or the `seed`
extension field), so the same request twice is a cache hit: the same pixels, no render. The
studio's `negative_prompt` (and `seed`, `strength`) are accepted as extensions; OpenAI's `quality`,
`style`, `user`, `background` and `moderation` are accepted and have no effect. The model served
is the `image_model` setting's; "dall-e-*" and "gpt-image-*" are taken as aliases of it, so clients
with OpenAI's defaults work unchanged.

`response_format=url` gives absolute URLs of the catalog PNGs, `/v1/images/files/KEY.png`, signed
with the server's `url_key` (HMAC-SHA256 over the file's name and expiry, an hour ahead): the
guard lets a validly signed URL through without credentials (`signed`), so a client can hand it to
a browser. Without a valid signature the file needs the usual credentials (none when auth is off).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
from PIL import Image
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from studio.api import Studio
from studio.core.errors import ImageInputError, ParameterError
from studio.core.inputs import fitted_size, to_mask, to_rgb
from studio.core.metadata import infotext_of, parse_parameters
from studio.core.params import RenderRequest, check_value, resolve_seed
from studio.core.targets import Target
from studio.images.service import ImageResult, ImageTask
from studio.server.payloads import b64_file, read_upload
from studio.server.state import ServerState, state_of

router = APIRouter(prefix="/v1", tags=["OpenAI Images"])

TARGET = Target("api", style="OpenAI")
MAX_N = 10  # OpenAI's limit on `n`
URL_SECONDS = 3600  # how long a signed image URL works, as OpenAI's do
RESPONSE_FORMATS = ("url", "b64_json")
ALIASES = ("dall-e", "gpt-image")  # OpenAI's model names, taken as the model served
OWNER = "series-studio"
FILE_NAME = re.compile(r"[0-9a-f]{16,128}\.png")
FILE_PATH = re.compile(r"/v1/images/files/([0-9a-f]{16,128}\.png)$")
SIZE = re.compile(r"\s*(\d{1,5})\s*[x×]\s*(\d{1,5})\s*", re.IGNORECASE)


class Generation(BaseModel):
    """OpenAI's image generation request: the fields the studio reads; others ignored."""

    model_config = ConfigDict(extra="ignore")

    prompt: str
    model: str | None = None
    n: int | None = None
    size: str | None = None
    response_format: str | None = None
    output_format: str | None = None
    stream: bool | None = None
    # OpenAI's, accepted with no effect here
    quality: str | None = None
    style: str | None = None
    user: str | None = None
    # the studio's extensions
    negative_prompt: str = ""
    seed: int | None = None


@dataclass
class Options:
    """What every image endpoint shares, checked: how many, what size, how to return them."""

    n: int
    size: tuple[int, int] | None  # None: "auto" (the settings' size, or the image's)
    response_format: str
    seed: int  # the first image's; the others follow it
    negative_prompt: str = ""
    notes: list[str] = field(default_factory=list)


# Making images ----------------------------------------------------------------------------------


@router.post("/images/generations")
def generations(body: Generation, request: Request) -> dict[str, Any]:
    """txt2img: `n` images of `prompt` at `size`."""
    state = state_of(request)
    studio = state.studio
    options = _options(
        studio, body.model, body.n, body.size, body.response_format, body.output_format,
        body.stream, body.seed, body.negative_prompt,
    )  # fmt: skip
    width, height = options.size or (studio.settings.width, studio.settings.height)
    base = studio.request(
        body.prompt, negative_prompt=options.negative_prompt, width=width, height=height,
        seed=options.seed,
    )  # fmt: skip
    made = _make(state, studio, base, options.n, "v1/images/generations")
    return _reply(request, state, made, options)


def _form_schema(
    files: tuple[str, ...], texts: tuple[str, ...], required: tuple[str, ...]
) -> dict[str, Any]:
    """The OpenAPI body of a multipart endpoint that reads its form itself (for /docs)."""
    properties: dict[str, Any] = {name: {"type": "string", "format": "binary"} for name in files}
    properties.update({name: {"type": "string"} for name in texts})
    schema = {"type": "object", "properties": properties, "required": list(required)}
    return {"requestBody": {"required": True,
                            "content": {"multipart/form-data": {"schema": schema}}}}  # fmt: skip


FORM_FIELDS = ("n", "size", "response_format", "model", "negative_prompt", "seed", "strength")


@router.post(
    "/images/edits",
    openapi_extra=_form_schema(("image", "mask"), ("prompt", *FORM_FIELDS), ("image", "prompt")),
)
async def edits(request: Request) -> dict[str, Any]:
    """Inpainting where the mask (or, without one, the image) is transparent; img2img of the
    whole image when neither has transparency."""
    form, files = await _read_form(request, ("image", "mask"))
    return await run_in_threadpool(_edit, request, form, files)


@router.post(
    "/images/variations",
    openapi_extra=_form_schema(("image",), (*FORM_FIELDS, "prompt"), ("image",)),
)
async def variations(request: Request) -> dict[str, Any]:
    """The studio's variations: the image's own prompt (from its PNG's parameters, or the
    `prompt` extension field), new seeds, a low strength."""
    form, files = await _read_form(request, ("image",))
    return await run_in_threadpool(_vary, request, form, files)


def _edit(request: Request, form: dict[str, str], files: dict[str, list[bytes]]) -> dict[str, Any]:
    state = state_of(request)
    studio = state.studio
    options = _form_options(studio, form)
    image = _first_image(files, options)
    mask = read_upload(files["mask"][0], "mask") if files.get("mask") else None
    if mask is not None and mask.size != image.size:
        raise ParameterError(
            f"`mask` is {mask.width}x{mask.height} but `image` is {image.width}x{image.height}; "
            "send a mask of the image's size."
        )
    repaint = to_mask(mask) if mask is not None else _transparent_areas(image)
    size = options.size or fitted_size(*image.size)
    picture = to_rgb(image)
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
        repaint = repaint.resize(size, Image.Resampling.NEAREST) if repaint else None
    if repaint is not None and repaint.getextrema()[1] < 128:
        raise ParameterError(
            f"`{'mask' if mask is not None else 'image'}` has no transparent area (a mask "
            "without transparency: no white area), so there is nothing to edit; make the part "
            "to change transparent."
        )
    inputs: dict[str, Any] = {"mode": "img2img", "init_image": picture}
    if repaint is not None:
        inputs.update(mode="inpaint", mask=repaint)
    else:
        options.notes.append("no transparency in `image` or `mask`: the whole image was redrawn")
    base = studio.request(
        _field(form, "prompt", required=True), **inputs, strength=_strength(form),
        negative_prompt=options.negative_prompt, width=size[0], height=size[1],
        seed=options.seed,
    )  # fmt: skip
    made = _make(state, studio, base, options.n, "v1/images/edits")
    return _reply(request, state, made, options)


def _vary(request: Request, form: dict[str, str], files: dict[str, list[bytes]]) -> dict[str, Any]:
    state = state_of(request)
    studio = state.studio
    options = _form_options(studio, form)
    image = _first_image(files, options)
    prompt = form.get("prompt")
    if prompt is None:
        parameters, _ = infotext_of(image)
        prompt = parse_parameters(parameters)["Prompt"] if parameters else ""
    size = options.size or fitted_size(*image.size)
    picture = to_rgb(image)
    if picture.size != size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    base = studio.request(
        prompt, mode="variation", init_image=picture, strength=_strength(form),
        negative_prompt=options.negative_prompt, width=size[0], height=size[1],
        seed=options.seed,
    )  # fmt: skip
    made = _make(state, studio, base, options.n, "v1/images/variations")
    return _reply(request, state, made, options)


def _make(
    state: ServerState, studio: Studio, base: RenderRequest, n: int, api: str
) -> list[ImageResult]:
    """`n` images of `base` with consecutive seeds, through the one image service."""
    tasks = [
        ImageTask(replace(base, seed=(base.seed + i) % 2**32), TARGET, provenance={"api": api})
        for i in range(n)
    ]
    with state.activity.render("openai", n) as render:
        return studio.images.make(tasks, on_step=render.on_step)


def _reply(
    request: Request, state: ServerState, made: list[ImageResult], options: Options
) -> dict[str, Any]:
    data = []
    for result in made:
        if options.response_format == "b64_json":
            data.append({"b64_json": b64_file(result.path), "revised_prompt": None})
        else:
            data.append({"url": signed_url(request, state, result.key), "revised_prompt": None})
    first = made[0].job.request
    body: dict[str, Any] = {
        "created": int(time.time()),
        "data": data,
        "output_format": "png",
        "size": f"{first.width}x{first.height}",
    }
    if options.notes:  # not OpenAI's: what was mapped or left out, as A1111's info notes
        body["notes"] = options.notes
    return body


# Checking what was sent -------------------------------------------------------------------------


def _options(
    studio: Studio,
    model: str | None,
    n: int | None,
    size: str | None,
    response_format: str | None,
    output_format: str | None = None,
    stream: bool | None = None,
    seed: int | None = None,
    negative_prompt: str = "",
) -> Options:
    _check_model(studio, model)
    if stream:
        raise ParameterError("`stream` is not available here; ask without it.")
    n = 1 if n is None else n
    if not 1 <= n <= MAX_N:
        raise ParameterError(f"`n` has to be between 1 and {MAX_N} but is {n}.")
    if output_format not in (None, "", "png"):
        raise ParameterError(
            f"`output_format` {output_format!r} is not available here; the studio returns PNG "
            "(its catalog's files, with their generation parameters inside)."
        )
    if response_format in (None, ""):  # OpenAI: url for DALL-E, always b64_json for GPT Image
        response_format = "b64_json" if (model or "").startswith("gpt-image") else "url"
    if response_format not in RESPONSE_FORMATS:
        raise ParameterError(
            f"`response_format` has to be url or b64_json but is {response_format!r}."
        )
    first = resolve_seed(studio.settings.seed if seed is None else seed)
    check_value("seed", first)
    return Options(n, _size(size), response_format, first, negative_prompt or "")


def _size(size: str | None) -> tuple[int, int] | None:
    if size is None or size.strip().lower() in ("", "auto"):
        return None
    match = SIZE.fullmatch(size)
    if match is None:
        raise ParameterError(
            f"`size` has to be WIDTHxHEIGHT (e.g. 1024x1024) or auto but is {size!r}."
        )
    width, height = int(match[1]), int(match[2])
    for name, value in (("width", width), ("height", height)):
        try:
            check_value(name, value)
        except ParameterError as error:
            raise ParameterError(f"`size` {size!r} is not available: {error}") from None
    return width, height


def _check_model(studio: Studio, model: str | None) -> str:
    """The model served, when `model` names it (or an OpenAI alias, or nothing); else 404."""
    served = studio.settings.image_model
    if model and model != served and not model.startswith(ALIASES):
        raise HTTPException(
            404,
            f"The model `{model}` is not served here; this server serves `{served}` (or ask for "
            "dall-e-2, dall-e-3 or gpt-image-1, taken as it).",
        )
    return served


async def _read_form(
    request: Request, file_fields: tuple[str, ...]
) -> tuple[dict[str, str], dict[str, list[bytes]]]:
    """A multipart form's text fields and its files (`image` and `image[]` both as `image`)."""
    form: dict[str, str] = {}
    files: dict[str, list[bytes]] = {}
    async with request.form() as sent:
        for name, value in sent.multi_items():
            key = name[:-2] if name.endswith("[]") else name
            if isinstance(value, str):
                if key in file_fields:
                    raise ImageInputError(
                        f"`{key}` has to be a file in a multipart form, not text; upload the "
                        "PNG, JPEG or WebP image."
                    )
                form.setdefault(key, value)
            else:
                data = await value.read()
                if key in file_fields:
                    files.setdefault(key, []).append(data)
    if not files.get("image"):
        raise ImageInputError(
            "`image` is missing; send the image as a file in a multipart form (as the openai "
            "client does)."
        )
    return form, files


def _form_options(studio: Studio, form: dict[str, str]) -> Options:
    stream = _field(form, "stream")
    return _options(
        studio, _field(form, "model"), _int(form, "n"), _field(form, "size"),
        _field(form, "response_format"), _field(form, "output_format"),
        stream is not None and stream.strip().lower() == "true", _int(form, "seed"),
        _field(form, "negative_prompt") or "",
    )  # fmt: skip


def _field(form: dict[str, str], name: str, required: bool = False) -> str | None:
    value = form.get(name)
    if required and value is None:
        raise ParameterError(f"`{name}` is missing; send it as a form field.")
    return value


def _int(form: dict[str, str], name: str) -> int | None:
    value = form.get(name)
    if value is None or not value.strip():
        return None
    try:
        return int(value)
    except ValueError:
        raise ParameterError(f"`{name}` has to be a whole number but is {value!r}.") from None


def _strength(form: dict[str, str]) -> float | None:
    """The `strength` extension field (0 < strength <= 1), or None for the mode's default."""
    value = form.get("strength")
    if value is None or not value.strip():
        return None
    try:
        strength = float(value)
    except ValueError:
        strength = float("nan")
    if not 0 < strength <= 1:
        raise ParameterError(f"`strength` has to be above 0 and at most 1 but is {value!r}.")
    return strength


def _first_image(files: dict[str, list[bytes]], options: Options) -> Image.Image:
    uploads = files["image"]
    if len(uploads) > 1:
        options.notes.append(f"{len(uploads)} images given; the first was used")
    return read_upload(uploads[0], "image")


def _transparent_areas(image: Image.Image) -> Image.Image | None:
    """The mask of `image`'s transparent areas (white = repaint), or None when it has none."""
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA") or image.getchannel("A").getextrema()[0] == 255:
        return None
    return to_mask(image)


# Models -----------------------------------------------------------------------------------------


def _model(state: ServerState, name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": int(state.started), "owned_by": OWNER}


@router.get("/models")
def models(request: Request) -> dict[str, Any]:
    state = state_of(request)
    return {"object": "list", "data": [_model(state, state.settings.image_model)]}


@router.get("/models/{model_id:path}")
def model(model_id: str, request: Request) -> dict[str, Any]:
    state = state_of(request)
    _check_model(state.studio, model_id)
    return _model(state, model_id)


# Signed image URLs ------------------------------------------------------------------------------


def _signature(key: bytes, name: str, expires: int) -> str:
    return hmac.new(key, f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()


def signed_url(request: Request, state: ServerState, cache_key: str) -> str:
    """The absolute URL of catalog image `cache_key`, signed for URL_SECONDS."""
    name = f"{cache_key}.png"
    expires = int(time.time()) + URL_SECONDS
    query = urlencode({"expires": expires, "signature": _signature(state.url_key, name, expires)})
    return f"{request.url_for('openai_image_file', name=name)}?{query}"


def signed(state: ServerState, path: str, query: str) -> bool:
    """Whether `path`?`query` is an image URL this server signed (no credentials needed)."""
    match = FILE_PATH.search(path)
    if match is None:
        return False
    values = parse_qs(query)
    try:
        expires = int(values["expires"][0])
        signature = values["signature"][0]
    except (KeyError, IndexError, ValueError):
        return False
    if expires < time.time():
        return False
    return hmac.compare_digest(
        signature.encode(), _signature(state.url_key, match[1], expires).encode()
    )


@router.head("/images/files/{name}", include_in_schema=False)
@router.get("/images/files/{name}", name="openai_image_file")
def image_file(name: str, request: Request) -> FileResponse:
    """A catalog PNG by its cache key (what `response_format=url` points at)."""
    store = state_of(request).studio.store
    found = store.find_image(name[: -len(".png")]) if FILE_NAME.fullmatch(name) else None
    path = store.image_path(found) if found is not None else None
    if path is None or not path.is_file():
        raise HTTPException(404, f"No image `{name}` in the catalog.")
    return FileResponse(path, media_type="image/png", headers={"Cache-Control": "private"})
