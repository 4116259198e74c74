"""Images in and out of JSON bodies and forms: base64 (with or without a `data:` URL prefix)
decoded through the same guards as the dashboard's uploads (`studio.core.inputs.read_image`:
decompression bombs, truncated files, non-images), and catalog PNGs encoded with the metadata they
carry; and library messages that name our fields renamed to the names an API's clients send."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from studio.core.errors import ImageInputError
from studio.core.inputs import read_image

DATA_URL = re.compile(r"^data:[\w/+.-]*(;[\w=.-]+)*;base64,", re.IGNORECASE)


def decode_image(text: str, field: str) -> Image.Image:
    """The image in base64 `text` (the JSON field `field`), fully decoded; an ImageInputError
    naming `field` when it is not base64 or not an image."""
    if not isinstance(text, str) or not text.strip():
        raise ImageInputError(f"`{field}` is empty; send a base64-encoded PNG, JPEG or WebP image.")
    raw = DATA_URL.sub("", text.strip(), count=1)
    try:
        data = base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ImageInputError(
            f"`{field}` is not base64; send a base64-encoded PNG, JPEG or WebP image."
        ) from None
    return read_image(data, f"`{field}`")


def read_upload(data: bytes, field: str) -> Image.Image:
    """An uploaded file (a multipart form's `field`), through the same guards."""
    if not data:
        raise ImageInputError(f"`{field}` is empty; upload a PNG, JPEG or WebP image.")
    return read_image(data, f"`{field}`")


def b64_file(path: Path) -> str:
    """A catalog PNG, base64-encoded with its `parameters` and `studio` chunks."""
    return base64.b64encode(Path(path).read_bytes()).decode("ascii")


def renamed(message: str, names: Mapping[str, str]) -> str:
    """`message` with our field names in backticks (`cfg`) as the API's clients name them
    (`cfg_scale`), so an error names the field that was sent."""
    for ours, theirs in names.items():
        message = message.replace(f"`{ours}`", f"`{theirs}`")
    return message
