"""Prompt interpolation: DALL-E 2's "text diffs", a strip of images that morphs from one prompt to
another with the same seed, by moving the text embeddings step by step (`RenderRequest.blend`).

    requests = interpolation_requests(base, "a violin on a table", frames=6)
    images = [result.image() for result in service.make([ImageTask(r) for r in requests])]
    interpolation_png(images, requests), animation(images, "gif")

The first frame is the start prompt's own request and the last the end prompt's, so both are the
very images (and catalog entries) the two prompts make alone; the frames between blend the
embeddings by t = 1/(n-1), 2/(n-1), ... Everything else (seed, sampler, steps, size) stays as in
`base`. Torch-free.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from studio.core.errors import ParameterError
from studio.core.params import RenderRequest
from studio.images.service import ImageResult

FRAMES = (2, 24)  # how many images a strip may have
LABEL_HEIGHT = 18
ANIMATION_FORMATS = ("gif", "webp")
FRAME_MS = 400  # each frame's time in the animation


def check_frames(frames: object) -> int:
    low, high = FRAMES
    if not isinstance(frames, int) or isinstance(frames, bool) or not low <= frames <= high:
        raise ParameterError(
            f"An interpolation has {low} to {high} images (the two prompts and the steps "
            f"between), not {frames!r}."
        )
    return frames


def interpolation_requests(
    base: RenderRequest, end_prompt: str, frames: int
) -> list[RenderRequest]:
    """`frames` requests from `base`'s prompt to `end_prompt`, evenly spaced, same seed."""
    check_frames(frames)
    if not end_prompt.strip():
        raise ParameterError("Give the prompt to interpolate towards.")
    if end_prompt.strip() == base.prompt.strip():
        raise ParameterError("The two prompts are the same; change one of them.")
    start = replace(base, blend_prompt=None, blend=None)
    middle = [
        replace(start, blend_prompt=end_prompt, blend=round(index / (frames - 1), 4))
        for index in range(1, frames - 1)
    ]
    requests = [start, *middle, replace(start, prompt=end_prompt)]
    for request in requests:
        request.check()
    return requests


def blend_of(request: RenderRequest, start_prompt: str) -> float:
    """How far along `request` is, 0 (the start prompt) to 1 (the end prompt)."""
    if request.blend is not None:
        return request.blend
    return 0.0 if request.prompt == start_prompt else 1.0


def strip_image(images: Sequence[Image.Image], blends: Sequence[float]) -> Image.Image:
    """The frames side by side, each with its t under it."""
    width, height = images[0].size
    font = ImageFont.load_default(size=max(12, width // 20))
    label = max(LABEL_HEIGHT, font.size + 10)
    sheet = Image.new("RGB", (width * len(images), height + label), "white")
    draw = ImageDraw.Draw(sheet)
    for index, (image, blend) in enumerate(zip(images, blends, strict=True)):
        sheet.paste(image.convert("RGB").resize((width, height)), (index * width, 0))
        draw.text((index * width + width / 2, height + label / 2), f"t = {blend:.2f}",
                  fill="black", font=font, anchor="mm")  # fmt: skip
    return sheet


def interpolation_png(images: Sequence[Image.Image], blends: Sequence[float]) -> bytes:
    buffer = io.BytesIO()
    strip_image(images, blends).save(buffer, format="PNG")
    return buffer.getvalue()


def animation(images: Sequence[Image.Image], kind: str = "gif", bounce: bool = True) -> bytes:
    """The frames as an animated GIF or WebP that loops (forth and back with `bounce`)."""
    if kind not in ANIMATION_FORMATS:
        raise ParameterError(f"Animations are {' or '.join(ANIMATION_FORMATS)}, not {kind!r}.")
    frames = [image.convert("RGB") for image in images]
    if bounce and len(frames) > 2:
        frames = frames + frames[-2:0:-1]
    buffer = io.BytesIO()
    options = {"lossless": True} if kind == "webp" else {"optimize": False}
    frames[0].save(buffer, format=kind.upper(), save_all=True, append_images=frames[1:],
                   duration=FRAME_MS, loop=0, **options)  # fmt: skip
    return buffer.getvalue()


@dataclass(frozen=True)
class Interpolation:
    """The images of a prompt interpolation, in order, and the strip and animation of them."""

    start_prompt: str
    end_prompt: str
    results: list[ImageResult]

    @property
    def blends(self) -> list[float]:
        return [blend_of(r.job.request, self.start_prompt) for r in self.results]

    def images(self) -> list[Any]:
        return [result.image() for result in self.results]

    def png(self) -> bytes:
        """The frames side by side with their t, as one PNG."""
        return interpolation_png(self.images(), self.blends)

    def animation(self, kind: str = "gif") -> bytes:
        """The frames as a looping GIF or WebP."""
        return animation(self.images(), kind)
