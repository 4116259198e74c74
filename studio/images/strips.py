"""The denoising strip: an image's intermediate steps, every k-th decoded to a picture and laid
side by side with its step under it, to see noise become the image; kept with the image.

    strips = DenoisingStrips(service)                      # over the studio's ImageService
    strip = strips.strip(image_key, every=5, decoder="vae")  # or a StoredImage, or a request
    strip.path, strip.steps, strip.frames(), strip.note

A strip is not part of the pixels, so it is not in the image's cache key: the catalog keeps it
beside the image, one PNG per (image, every, decoder), and a second ask costs no model work. For
a new image (a request the catalog does not have) the latents are collected during its one
render. For an image the catalog has, the same request is rendered again with the same seed
while collecting, and the re-render is compared with the stored PNG: `max_difference` 0 means
the strip shows exactly how the stored image was made (`note` says so, or by how much not).

Frames are taken at every `every`-th step and at the last one, so there are ceil(steps / every)
of them (samplers like Heun report about twice the steps; img2img steps x strength). Decoders:
"vae", the model's full VAE as the pipeline decodes its result (the last frame is the image,
before an inpaint's blend into the init image), or "preview", the tiny preview VAE of the
`preview_vae` setting. A backend that returns only finished images (OpenAI Images) is refused.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from studio.catalog.records import StoredImage
from studio.catalog.recovery import STRIP_KEY
from studio.core.config import setting
from studio.core.errors import ParameterError, RenderError
from studio.core.params import RenderRequest
from studio.images.backends.base import ImageBackend, StepCallback
from studio.images.executors import LocalExecutor
from studio.images.service import ImageResult, ImageService, ImageTask
from studio.images.worker import RenderWorker

# name -> what it is, for messages and the dashboard
DECODERS = {
    "vae": "the model's full VAE",
    "preview": "the tiny preview VAE (TAESD)",
}
FRAME_SIDE = 256  # a frame's longer side at most, in pixels: a long strip stays a sensible file
COLUMNS = 8  # frames per row
LABEL_HEIGHT = 16  # the band under each frame with its step

StripSource = str | StoredImage | ImageResult | ImageTask | RenderRequest


@dataclass(frozen=True)
class DenoisingStrip:
    """One image's strip as the catalog keeps it."""

    cache_key: str  # the image's
    every: int
    decoder: str
    steps: tuple[int, ...]  # each frame's denoising step, 1-based
    total: int  # the denoising steps the render ran
    frame_size: tuple[int, int]
    columns: int
    path: Path
    max_difference: (
        int | None
    )  # re-render against the stored PNG, levels of 255; None: no re-render
    created_at: str = ""
    reused: bool = False  # True: the catalog's, no model work

    @classmethod
    def from_row(cls, row: dict[str, Any], data_dir: Path, reused: bool) -> DenoisingStrip:
        return cls(
            row["cache_key"],
            row["every"],
            row["decoder"],
            tuple(row["steps"]),
            row["total"],
            (row["frame_width"], row["frame_height"]),
            row["columns"],
            data_dir / row["path"],
            row["max_difference"],
            row["created_at"],
            reused,
        )

    @property
    def labels(self) -> list[str]:
        return [f"step {step}/{self.total}" for step in self.steps]

    @property
    def note(self) -> str:
        """How the strip relates to the image, in words."""
        decoder = DECODERS[self.decoder]
        made = f"{len(self.steps)} frames, every {self.every} steps, decoded by {decoder}"
        if self.max_difference is None:
            return f"{made}; collected while the image was rendered."
        if self.max_difference == 0:
            return (
                f"{made}; the image was rendered again with the same request and seed, and the "
                "re-render has exactly the stored image's pixels."
            )
        return (
            f"{made}; the image was rendered again with the same request and seed, and the "
            f"re-render differs from the stored image by up to {self.max_difference} levels of "
            "255 (another device, precision or library version): the strip shows the re-render."
        )

    @property
    def file_name(self) -> str:
        return f"strip-{self.cache_key[:12]}-every{self.every}-{self.decoder}.png"

    def png(self) -> bytes:
        return self.path.read_bytes()

    def image(self) -> Image.Image:
        with Image.open(self.path) as image:
            image.load()
            return image.copy()

    def frames(self) -> list[Image.Image]:
        """The frames, without their labels, in step order."""
        width, height = self.frame_size
        strip = self.image()
        frames = []
        for index in range(len(self.steps)):
            row, column = divmod(index, self.columns)
            left, top = column * width, row * (height + LABEL_HEIGHT)
            frames.append(strip.crop((left, top, left + width, top + height)))
        return frames


class LatentCollector:
    """An `on_step` callback that keeps the first latent of every `every`-th step and of the
    last one, then passes the step on to `then` (a progress bar)."""

    def __init__(self, every: int, then: StepCallback | None = None):
        self.every = every
        self.then = then
        self.latents: list[tuple[int, int, Any]] = []  # (step, total, latent)

    def __call__(self, step: int, total: int, latents: Any) -> None:
        if latents is not None and (step % self.every == 0 or step == total):
            self.latents.append((step, total, latents[:1].detach().clone()))
        if self.then is not None:
            self.then(step, total, latents)


def frame_size(size: tuple[int, int]) -> tuple[int, int]:
    """A frame's size for an image of `size`: at most FRAME_SIDE a side, never enlarged."""
    width, height = size
    scale = min(1.0, FRAME_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def compose_strip(
    frames: Sequence[Image.Image], labels: Sequence[str], size: tuple[int, int]
) -> Image.Image:
    """The frames at `size` in rows of COLUMNS, each with its label under it, on white."""
    width, height = size
    columns = min(COLUMNS, len(frames))
    rows = math.ceil(len(frames) / columns)
    strip = Image.new("RGB", (columns * width, rows * (height + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(strip)
    font = ImageFont.load_default(size=min(12, max(8, width // 6)))
    for index, (frame, label) in enumerate(zip(frames, labels, strict=True)):
        row, column = divmod(index, columns)
        left, top = column * width, row * (height + LABEL_HEIGHT)
        picture = frame.convert("RGB")
        if picture.size != size:
            picture = picture.resize(size, Image.LANCZOS)
        strip.paste(picture, (left, top))
        draw.text(
            (left + width / 2, top + height + LABEL_HEIGHT / 2),
            label,
            fill="black",
            font=font,
            anchor="mm",
        )
    return strip


def denoising_strip_png(
    strip: Image.Image, description: str, values: dict[str, Any] | None = None
) -> bytes:
    """The strip as PNG bytes; `values` (its catalog row but path, sha256 and created_at) go in
    its STRIP_KEY chunk as JSON, so `--recover` can record the strip again from the file alone."""
    info = PngInfo()
    info.add_text("Description", description)
    if values is not None:
        info.add_text(STRIP_KEY, json.dumps(values, sort_keys=True))
    buffer = io.BytesIO()
    strip.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def max_difference(a: Image.Image, b: Image.Image) -> int:
    """The largest difference of two images' RGB levels (255 when their sizes differ)."""
    if a.size != b.size:
        return 255
    left = np.asarray(a.convert("RGB"), dtype=np.int16)
    right = np.asarray(b.convert("RGB"), dtype=np.int16)
    return int(np.abs(left - right).max())


def unavailable_reason(backend: ImageBackend) -> str | None:
    """Why `backend` cannot make denoising strips, or None when it can."""
    if backend.capabilities.intermediates:
        return None
    return (
        f"{backend.label} returns only finished images, not the intermediate steps of its "
        f"denoising, so its images have no denoising strip; set {setting('image_model')} to a "
        "diffusers model (a hub id, a folder, a .safetensors file or `demo`) for one."
    )


def check_strip(request: RenderRequest, every: Any, decoder: Any, backend: ImageBackend) -> None:
    """Refuse a strip this backend, image and choice cannot make, saying what would work."""
    reason = unavailable_reason(backend)
    if reason:
        raise ParameterError(reason)
    if decoder not in DECODERS:
        choices = "; ".join(f"{name!r} ({what})" for name, what in DECODERS.items())
        raise ParameterError(f"The strip's decoder has to be one of {choices}, not {decoder!r}.")
    if isinstance(every, bool) or not isinstance(every, int) or not 1 <= every <= request.steps:
        raise ParameterError(
            f"`every` (a frame every k steps) has to be a whole number from 1 to the image's "
            f"{request.steps} steps, but is {every!r}."
        )
    if decoder == "preview" and getattr(backend, "preview_vae", None) is None:
        raise ParameterError(
            f"No preview VAE is configured, so the strip cannot use the 'preview' decoder: set "
            f"{setting('preview_vae')} to a TAESD folder or hub id (madebyollin/taesd for SD 1.x, "
            "madebyollin/taesdxl for SDXL), or use the 'vae' decoder."
        )


def _rendering_here(backend: ImageBackend) -> ImageBackend:
    """The backend that renders in this thread. The render worker relays only each caller's
    latest step, and a strip needs every k-th, so a strip renders on the worker's backend
    directly (the renderer's own lock keeps it apart from the worker's renders)."""
    return backend.backend if isinstance(backend, RenderWorker) else backend


class DenoisingStrips:
    """Makes, stores and finds denoising strips for one image service's catalog and backend."""

    def __init__(self, images: ImageService):
        self.images = images
        self.store = images.store

    def find(self, cache_key: str, every: int, decoder: str) -> DenoisingStrip | None:
        """The catalog's strip of image `cache_key` for `every` and `decoder`, if there is one."""
        row = self.store.find_strip(cache_key, every, decoder)
        return None if row is None else DenoisingStrip.from_row(row, self.store.data_dir, True)

    def strip(
        self,
        image: StripSource,
        every: int = 5,
        decoder: str = "vae",
        on_step: StepCallback | None = None,
    ) -> DenoisingStrip:
        """The strip of `image` (a catalog key or record, or a request or job to render):
        the catalog's, else made while the image renders (or renders again) and stored."""
        job, record = self._resolve(image)
        request = record.request if record is not None else job.request
        backend = self.images.backend
        check_strip(request, every, decoder, backend)
        key = record.cache_key if record is not None else self.images.cache_key(request)
        found = self.find(key, every, decoder)
        if found is not None:
            return found
        renderer = _rendering_here(backend)
        collector = LatentCollector(every, on_step)
        rendered, difference = None, None
        if record is None:
            record = self.store.find_image(key)
        if record is None:  # a new image: collect during its one render
            result = self.images.make([job], executor=LocalExecutor(renderer), on_step=collector)[0]
            record = result.record
            if collector.latents:
                rendered = result.image()
        if rendered is None:  # the catalog's image: the same request and seed again
            if self.images.cache_key(record.request) != record.cache_key:
                raise ParameterError(
                    f"The image {record.cache_key[:12]}… was made by {record.model} and the image "
                    f"model now is {backend.label}; a strip renders the image again, so set "
                    f"{setting('image_model')} back to the model that made it."
                )
            rendered = renderer.render(
                [record.request], on_step=collector, inputs=self.store.input_image
            )[0]
            with Image.open(self.store.image_path(record)) as stored:
                difference = max_difference(rendered, stored)
        return self._store(record, every, decoder, renderer, collector, difference)

    def _resolve(self, image: StripSource) -> tuple[ImageTask | None, StoredImage | None]:
        if isinstance(image, RenderRequest):
            return ImageTask(image), None
        if isinstance(image, ImageTask):
            return image, None
        if isinstance(image, ImageResult):
            image = image.record if image.record is not None else image.job
            return self._resolve(image)
        if isinstance(image, StoredImage):
            return None, image
        found = self.store.find_image(str(image))
        if found is None:
            raise ParameterError(
                f"No image with key {image!r} in the catalog {self.store.data_dir}."
            )
        return None, found

    def _store(
        self,
        record: StoredImage,
        every: int,
        decoder: str,
        renderer: Any,
        collector: LatentCollector,
        difference: int | None,
    ) -> DenoisingStrip:
        if not collector.latents:
            raise RenderError(
                f"{renderer.label} reported no latents while rendering, so there is nothing to "
                "show in a denoising strip."
            )
        decode = renderer.preview_image if decoder == "preview" else (
            lambda latent: renderer.decode_latents(latent, record.mode)
        )  # fmt: skip
        frames = [decode(latent) for _, _, latent in collector.latents]
        steps = [step for step, _, _ in collector.latents]
        total = collector.latents[-1][1]
        size = frame_size((record.width, record.height))
        labels = [f"step {step}/{total}" for step in steps]
        description = (
            f"Denoising strip of image {record.cache_key}: a frame every {every} steps "
            f"({', '.join(labels)}), decoded by {DECODERS[decoder]}."
        )
        values = {
            "cache_key": record.cache_key,
            "every": every,
            "decoder": decoder,
            "steps": steps,
            "total": total,
            "frame_width": size[0],
            "frame_height": size[1],
            "columns": min(COLUMNS, len(frames)),
            "max_difference": difference,
        }
        png = denoising_strip_png(compose_strip(frames, labels, size), description, values)
        row = self.store.add_strip(values, png)
        return DenoisingStrip.from_row(row, self.store.data_dir, reused=False)
