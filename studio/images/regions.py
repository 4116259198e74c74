"""Where each character of a scene goes: side-by-side regions of the image, as IP-Adapter masks.

With several characters' portraits conditioning one image (`RenderRequest.extra_references`),
each portrait is limited to its region, so their faces do not blend: the first (most important)
on the left, the next on the right, a third in the centre between them... in reading order for
two and three: left | right, left | centre | right. The prompt says where each one stands
(`REGION_WORDS`), so the text and the masks agree. Torch-free.

    masks = region_masks(2, (768, 512))      # [left half white, right half white]
    preview = layout_preview(["Holmes", "Watson"], (768, 512))
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFont

from studio.core.errors import ParameterError
from studio.core.params import MAX_REFERENCES

# What the prompt says of each region, by how many characters share the image.
REGION_WORDS = {
    1: ("",),
    2: ("on the left", "on the right"),
    3: ("on the left", "in the centre", "on the right"),
}
# The preview's colour per region, in order (light enough for black names on them).
REGION_COLOURS = ((255, 196, 140), (150, 205, 255), (190, 235, 160))


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_REFERENCES:
        raise ParameterError(
            f"A scene has 1 to {MAX_REFERENCES} characters with portraits, not {count}."
        )


def region_boxes(count: int, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The (left, top, right, bottom) box of each of `count` side-by-side regions of `size`."""
    _check_count(count)
    width, height = size
    edges = [round(width * index / count) for index in range(count + 1)]
    return [(edges[i], 0, edges[i + 1], height) for i in range(count)]


def region_masks(count: int, size: tuple[int, int]) -> list[Image.Image]:
    """One L mask of `size` per region, white inside it, black elsewhere."""
    masks = []
    for box in region_boxes(count, size):
        mask = Image.new("L", size, 0)
        mask.paste(255, box)
        masks.append(mask)
    return masks


def layout_preview(names: list[str], size: tuple[int, int], side: int = 384) -> Image.Image:
    """The regions in colour with each character's name: what goes where, at most `side`
    pixels on the longer side."""
    scale = side / max(size)
    shown = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    picture = Image.new("RGB", shown, "white")
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=max(12, shown[1] // 12))
    for index, (name, box) in enumerate(zip(names, region_boxes(len(names), shown), strict=True)):
        draw.rectangle(box, fill=REGION_COLOURS[index], outline="white", width=2)
        centre = ((box[0] + box[2]) / 2, shown[1] / 2)
        draw.text(centre, name, fill="black", font=font, anchor="mm")
    return picture
