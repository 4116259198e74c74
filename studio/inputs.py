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

from studio.errors import ImageInputError
from studio.metadata import open_image_bytes

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


def check_mask_size(mask: Image.Image, image: Image.Image) -> None:
    if mask.size != image.size:
        raise ImageInputError(
            f"The mask is {mask.width}x{mask.height} but the image is "
            f"{image.width}x{image.height}; draw or export the mask at the image's size."
        )
