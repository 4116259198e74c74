"""Images given to the studio (init images, masks): read safely, normalised, named by content.

Torch-free. An input may be a path, bytes or a PIL image; it becomes an RGB image (a mask: a
black-and-white L image, white = repaint) saved as PNG, whose sha256 names it in requests and
cache keys. Bad input is an `ImageInputError` that says what is wrong: not an image, truncated,
too large (a decompression bomb), the wrong size for its image.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image, ImageOps

from studio.core.errors import ImageInputError
from studio.core.metadata import open_image_bytes
from studio.core.params import LIMITS, OUTPAINT_SIDES, outpaint_size, round_to_multiple

ImageSource = str | Path | bytes | Image.Image


def read_image(source: ImageSource, what: str = "image") -> Image.Image:
    """The image in `source`, fully decoded, EXIF orientation applied."""
    if isinstance(source, Image.Image):
        image = source
    else:
        if isinstance(source, str | Path):
            path = Path(source).expanduser()
            if not path.is_file():
                raise ImageInputError(f"The {what} {path} does not exist.")
            data = path.read_bytes()
        else:
            data = bytes(source)
        try:
            image = open_image_bytes(data)
        except ImageInputError as exc:
            raise ImageInputError(f"The {what}: {exc}") from None
    return ImageOps.exif_transpose(image) or image


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any mode: CMYK and palette converted, 16-bit scaled, alpha laid on white."""
    if image.mode in {"I;16", "I;16B", "I;16L", "I", "F"}:
        image = (
            image.point(lambda v: v / 257).convert("L") if image.mode != "F" else image.convert("L")
        )
    if image.mode in {"RGBA", "LA", "PA"} or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, "white")
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def to_mask(image: Image.Image) -> Image.Image:
    """A black-and-white L mask: white (>= 128) = repaint, black = keep. Alpha counts as white
    where the pixel is transparent (a mask painted by erasing)."""
    if image.mode in {"RGBA", "LA"}:
        alpha = image.getchannel("A")
        if alpha.getextrema()[0] < 255:  # has transparency: transparent = repaint
            return alpha.point(lambda v: 255 if v < 128 else 0)
    return to_rgb(image).convert("L").point(lambda v: 255 if v >= 128 else 0)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    """A file's sha256, read in blocks (model and LoRA files are large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def fitted_size(width: int, height: int) -> tuple[int, int]:
    """The size an init image is brought to: at most 2048 and at least 64 on a side (aspect
    kept), each side then rounded down to a multiple of 8, as the models need."""
    limit = LIMITS["width"]
    scale = min(1.0, limit.high / max(width, height))
    scale = max(scale, limit.low / min(width, height))
    return tuple(
        max(int(limit.low), round_to_multiple(int(side * scale), limit.multiple))
        for side in (width, height)
    )  # type: ignore[return-value]


def fit_image(image: Image.Image) -> Image.Image:
    """`image` resized to `fitted_size` (unchanged when it already fits)."""
    size = fitted_size(*image.size)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)


def fit_mask(
    mask: Image.Image, image: Image.Image, original: tuple[int, int] | None = None
) -> Image.Image:
    """A mask for `image` (already fitted): at its size, or at the `original` size the image
    was fitted from (then resized the same way)."""
    if original is not None and mask.size == original != image.size:
        return mask.resize(image.size, Image.Resampling.NEAREST)
    check_mask_size(mask, image if original is None else Image.new("L", original))
    return mask


def check_mask_size(mask: Image.Image, image: Image.Image) -> None:
    if mask.size != image.size:
        raise ImageInputError(
            f"The mask is {mask.width}x{mask.height} but the image is "
            f"{image.width}x{image.height}; draw or export the mask at the image's size."
        )


def canvas_mask(drawing: object, size: tuple[int, int], coverage: int = 64) -> Image.Image:
    """The mask painted on a canvas laid over the init image: an L image of the image's `size`,
    white (repaint) where paint covers at least `coverage`/255 of a pixel, black elsewhere.

    `drawing` is the canvas's RGBA pixels (an H x W x 4 uint8 array, as `streamlit-drawable-canvas`
    returns them, or a PIL image) at the canvas's own size, which may differ from the image's (the
    canvas is shown larger, and the screen's pixel ratio multiplies it); only the paint's alpha
    counts, not its colour. Raises `ImageInputError` when nothing (or too little) was painted.
    """
    if drawing is None:
        raise ImageInputError(
            "The mask is empty: paint over the part of the image to repaint, or upload a mask."
        )
    picture = drawing if isinstance(drawing, Image.Image) else Image.fromarray(drawing)
    alpha = picture.convert("RGBA").getchannel("A")
    if alpha.getbbox() is None:
        raise ImageInputError(
            "The mask is empty: paint over the part of the image to repaint, or upload a mask."
        )
    mask = alpha.resize(size, Image.Resampling.BOX).point(lambda v: 255 if v >= coverage else 0)
    if mask.getbbox() is None:
        raise ImageInputError(
            f"The painted strokes are too thin to cover a pixel of the {size[0]}x{size[1]} image; "
            "paint with a wider brush."
        )
    return mask


def mode_size(size: tuple[int, int], outpaint: dict[str, int] | None = None) -> tuple[int, int]:
    """The size of the image a mode makes from an init image of `size`, as `Studio.request` sets
    it: the init image's `fitted_size`, plus the outpaint amounts (`left`, `right`, `up`,
    `down`); for showing before the request is made."""
    amounts = outpaint or {}
    return outpaint_size(fitted_size(*size), [amounts.get(side, 0) for side in OUTPAINT_SIDES])
