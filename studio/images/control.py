"""Control images for guided generation (ControlNet): made from what a person gives, checked.

Torch-free (OpenCV and PIL; a depth model loads transformers only when asked). What each control
type's ControlNet reads, and how a given image becomes it (`control_map`):

- scribble, lineart: white lines on black, as lllyasviel's models were trained. A sketch of dark
  strokes on a light ground (a canvas drawing, a pencil scan) is inverted; one that is already
  light on dark is kept. Transparency counts as the light ground (to_rgb lays alpha on white).
- canny: the Canny edges (OpenCV, `CANNY_THRESHOLDS` unless given) of the image, white on black;
  with `preprocess=False` the image is taken as an edge map already.
- depth: a grayscale depth map (near = light), as uploaded; a colour image is refused, since its
  colours are not depths. With `preprocess=True` the depth is estimated from the image by the
  transformers depth-estimation model the `depth_model` setting names.

Sizes: the control map must be the request's size. A picture of the same aspect ratio (a canvas
shown at the screen's pixel ratio, a 1024x1024 sketch for a 512x512 image) is resized to it; one of
another shape is brought to it as AUTOMATIC1111 does, by the resize mode (`CONTROL_RESIZE`):

- just resize: stretched to the size (the composition moves with the stretch);
- crop and resize (the default): scaled to cover the size and cut to it at the centre;
- resize and fill: scaled to fit inside the size, made into its map, and the rest filled with the
  median colour of the map's border (as A1111's ControlNet does: black around lines, the ground
  around a depth map), so nothing of the picture is lost.

    maps = parse_controlnets("scribble=lllyasviel/sd-controlnet-scribble,canny=./cn-canny")
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from studio.core.config import setting
from studio.core.errors import ConfigError, ImageInputError, ParameterError
from studio.core.inputs import to_rgb
from studio.core.params import CONTROL_RESIZE, CONTROL_TYPES, DEFAULT_CONTROL_RESIZE

CANNY_THRESHOLDS = (100, 200)  # OpenCV's hysteresis thresholds, as A1111's canny module
SKETCH_TYPES = frozenset({"scribble", "lineart"})
ASPECT_TOLERANCE = 0.01  # a control image this close to the request's aspect ratio is resized
DEMO_CONTROLNET = "demo"  # a tiny untrained ControlNet for the demo model (diffusers backend)


def fit_control(
    image: Image.Image, size: tuple[int, int], resize: str = DEFAULT_CONTROL_RESIZE
) -> Image.Image:
    """`image` brought towards `size` (width, height) by the resize mode `resize`: at `size` for
    just resize and crop and resize; for resize and fill, scaled to fit inside it (`fill_control`
    then pads its map). A picture of the same shape (within ASPECT_TOLERANCE) is just resized."""
    if resize not in CONTROL_RESIZE:
        raise ParameterError(
            f"Unknown control resize mode {resize!r}; choose one of: {', '.join(CONTROL_RESIZE)}."
        )
    if image.size == size:
        return image
    width, height = size
    lanczos = Image.Resampling.LANCZOS
    same_shape = (
        abs(image.width / image.height - width / height) <= ASPECT_TOLERANCE * width / height
    )
    if same_shape or resize == "just resize":
        return image.resize(size, lanczos)
    if resize == "crop and resize":
        return ImageOps.fit(image, size, lanczos, centering=(0.5, 0.5))
    inner = ImageOps.contain(image, size, lanczos)
    if min(inner.size) < 8:
        raise ImageInputError(
            f"The control image is {image.width}x{image.height}: fitted inside {width}x{height} "
            f"it would be {inner.width}x{inner.height}, too thin to steer anything; crop it, or "
            "use crop and resize."
        )
    return inner


def fill_control(control: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A control map smaller than `size` centred on a canvas of `size` filled with the median
    colour of the map's border (resize and fill)."""
    if control.size == size:
        return control
    pixels = np.asarray(control)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    colour = np.median(border, axis=0).astype(np.uint8)
    fill = int(colour) if colour.ndim == 0 else tuple(int(c) for c in colour)
    canvas = Image.new(control.mode, size, fill)
    canvas.paste(control, ((size[0] - control.width) // 2, (size[1] - control.height) // 2))
    return canvas


def sketch_map(image: Image.Image) -> Image.Image:
    """White lines on black (L) from a sketch either way round: a mostly light one is inverted."""
    gray = to_rgb(image).convert("L")
    pixels = np.asarray(gray)
    if pixels.max() == pixels.min():
        raise ImageInputError(
            "The sketch is blank (one colour); draw the outlines of what the image should show."
        )
    if pixels.mean() > 127:  # dark strokes on a light ground
        pixels = 255 - pixels
    return Image.fromarray(pixels)


def canny_map(image: Image.Image, thresholds: tuple[int, int] = CANNY_THRESHOLDS) -> Image.Image:
    """The image's Canny edges, white on black (L)."""
    import cv2

    low, high = thresholds
    if not 0 <= low < high <= 1000:
        raise ImageInputError(
            f"The Canny thresholds have to be 0 <= low < high <= 1000 but are {low} and {high}."
        )
    edges = cv2.Canny(np.asarray(to_rgb(image).convert("L")), low, high)
    if not edges.any():
        raise ImageInputError(
            f"Canny found no edges in the image at thresholds {low} and {high}; lower them, or "
            "give an image with more contrast."
        )
    return Image.fromarray(edges)


def depth_map(image: Image.Image) -> Image.Image:
    """A grayscale depth map as given (16-bit scaled to 8); `ImageInputError` for colour."""
    rgb = np.asarray(to_rgb(image)).astype(np.int16)
    if np.abs(rgb - rgb[..., :1]).max() > 2:  # colours a JPEG's noise does not explain
        raise ImageInputError(
            "The depth map is in colour; give a grayscale depth map (near = "
            f"light), or estimate one from the picture (set {setting('depth_model')})."
        )
    return to_rgb(image).convert("L")


@cache
def _depth_estimator(name: str) -> Any:
    import transformers

    try:
        return transformers.pipeline("depth-estimation", model=name, device="cpu")
    except Exception as exc:
        raise ConfigError(
            f"Could not load the depth model {name!r} ({setting('depth_model')}): "
            f"{str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}; set it to a "
            "transformers depth-estimation model (hub id or folder, e.g. "
            "depth-anything/Depth-Anything-V2-Small-hf)."
        ) from None


def estimate_depth(image: Image.Image, depth_model: str) -> Image.Image:
    """The depth of `image` (near = light, L, the image's size) by the depth-estimation model
    `depth_model` names; `ConfigError` when none is set or it cannot be loaded."""
    if not depth_model.strip():
        raise ConfigError(
            f"No depth model is set, so a depth map cannot be estimated from the picture; set "
            f"{setting('depth_model')} to a transformers depth-estimation model (e.g. "
            "depth-anything/Depth-Anything-V2-Small-hf), or upload a grayscale depth map."
        )
    estimated = _depth_estimator(depth_model.strip())(to_rgb(image))["predicted_depth"]
    depth = np.asarray(estimated.squeeze().float().cpu().numpy(), dtype=np.float64)
    span = depth.max() - depth.min()
    scaled = (depth - depth.min()) / span if span > 0 else np.zeros_like(depth)
    picture = Image.fromarray((scaled * 255).round().astype(np.uint8))
    return picture.resize(image.size, Image.Resampling.BICUBIC)


def control_map(
    image: Image.Image,
    control_type: str,
    size: tuple[int, int],
    *,
    preprocess: bool = True,
    canny_thresholds: tuple[int, int] = CANNY_THRESHOLDS,
    depth_model: str = "",
    resize: str = DEFAULT_CONTROL_RESIZE,
) -> Image.Image:
    """What `control_type`'s ControlNet reads, from `image`, at `size` (width, height): an L
    image. `preprocess`: canny finds the edges (else the image is an edge map), depth estimates
    the depth with `depth_model` (else the image is a depth map); sketches are always normalised.
    `resize`: how a picture of another shape is brought to `size` (`CONTROL_RESIZE`)."""
    if control_type not in CONTROL_TYPES:
        raise ParameterError(
            f"Unknown control type {control_type!r}; choose one of: {', '.join(CONTROL_TYPES)}."
        )
    picture = fit_control(to_rgb(image), size, resize)  # alpha on white first, then the size
    if control_type in SKETCH_TYPES:
        made = sketch_map(picture)
    elif control_type == "canny":
        made = canny_map(picture, canny_thresholds) if preprocess else picture.convert("L")
    else:
        made = estimate_depth(picture, depth_model) if preprocess else depth_map(picture)
    return fill_control(made, size)
