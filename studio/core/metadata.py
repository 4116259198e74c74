"""Generation parameters inside PNGs.

Each PNG carries two text chunks: `parameters`, the AUTOMATIC1111 infotext that A1111, Forge,
SD.Next and Civitai read (prompt; `Negative prompt:` line; `Steps: N, Sampler: X, ...`), and
`studio`, a JSON object with the full provenance (LLM model, template hash, episode or season,
placeholder flag for the demo model, the cache key).
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from studio.core.errors import ImageInputError

PARAMETERS_KEY = "parameters"
PROVENANCE_KEY = "studio"

# The same expressions A1111 uses to read infotext (modules/infotext_utils.py).
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")


def _quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value: float) -> str:
    return f"{value:g}"


def format_parameters(
    prompt: str,
    negative_prompt: str,
    settings: dict[str, Any],
) -> str:
    """A1111 infotext. `settings` maps A1111 names (Steps, Sampler, ...) to values, in order."""
    lines = [prompt.strip()]
    if negative_prompt.strip():
        lines.append(f"Negative prompt: {negative_prompt.strip()}")
    pairs = []
    for key, value in settings.items():
        if value is None or value == "":
            continue
        if isinstance(value, float):
            value = _number(value)
        pairs.append(f"{key}: {_quote(value)}")
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, str]:
    """Read A1111 infotext the way A1111's PNG Info does; sizes split into `Size-1`, `Size-2`."""
    result: dict[str, str] = {}
    prompt, negative, done_with_prompt = "", "", False
    *lines, last = text.strip().split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    result["Prompt"], result["Negative prompt"] = prompt, negative
    for key, value in _RE_PARAM.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = json.loads(value)
        size = _RE_IMAGESIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    return result


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as the strings "inf", "-inf" and "nan", so it is strict JSON.

    Scheduler configs hold `-inf` (DPM-Solver's `lambda_min_clipped`); Python's json would write
    `-Infinity`, which strict JSON parsers reject.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def encode_png(image: Image.Image, parameters: str, provenance: dict[str, Any]) -> bytes:
    """PNG bytes with both chunks. Same image and metadata give the same bytes."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    info.add_text(
        PROVENANCE_KEY,
        json.dumps(json_safe(provenance), sort_keys=True, ensure_ascii=False, allow_nan=False),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def open_image_bytes(data: bytes) -> Image.Image:
    """The image in `data`, fully read; `ImageInputError` saying what is wrong if it is not one."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError:
        raise ImageInputError(
            "This image is too large to open safely (over "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels); resize it first."
        ) from None
    except UnidentifiedImageError:
        raise ImageInputError(
            "This file is not an image the studio can read; upload a PNG, JPEG or WebP file."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(
            f"This image is damaged or truncated ({str(exc).splitlines()[0][:120]}); export it "
            "again or try another file."
        ) from None
    return image


def read_png_metadata(data: bytes | Image.Image) -> tuple[str | None, dict[str, Any] | None]:
    """(A1111 parameters text, studio provenance) of a PNG; None for a chunk it lacks."""
    image = data if isinstance(data, Image.Image) else open_image_bytes(data)
    text = getattr(image, "text", None) or image.info
    provenance = text.get(PROVENANCE_KEY)
    try:
        parsed = json.loads(provenance) if provenance else None
    except json.JSONDecodeError:
        parsed = None
    return text.get(PARAMETERS_KEY), parsed
