"""Inpainting only the masked area (AUTOMATIC1111's "Only masked"): the mask's bounding box with
some pixels of context, widened to the image's shape, is cut out and scaled to the request's
size, inpainted there at full resolution, then scaled back and pasted under the mask, so a small
face in a large picture gets every pixel of the model's attention. Torch-free (PIL)."""

from __future__ import annotations

from PIL import Image

Box = tuple[int, int, int, int]  # left, upper, right, lower


def crop_box(mask: Image.Image, padding: int) -> Box:
    """The mask's white bounding box grown by `padding` on each side and widened (or heightened)
    to the mask's own aspect ratio, kept inside the picture."""
    width, height = mask.size
    found = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    if found is None:  # nothing to repaint: the whole picture
        return 0, 0, width, height
    left, upper = max(0, found[0] - padding), max(0, found[1] - padding)
    right, lower = min(width, found[2] + padding), min(height, found[3] + padding)
    box_w, box_h = right - left, lower - upper
    if box_w / box_h < width / height:  # too tall for the picture's shape: widen it
        box_w = min(width, round(box_h * width / height))
    else:
        box_h = min(height, round(box_w * height / width))
    centre_x, centre_y = (left + right) / 2, (upper + lower) / 2
    left = int(min(max(0, round(centre_x - box_w / 2)), width - box_w))
    upper = int(min(max(0, round(centre_y - box_h / 2)), height - box_h))
    return left, upper, left + box_w, upper + box_h


def masked_area(
    image: Image.Image, mask: Image.Image, padding: int
) -> tuple[Image.Image, Image.Image, Box]:
    """The area to inpaint, scaled to the picture's size: (image, mask, its box in the picture)."""
    box = crop_box(mask, padding)
    size = image.size
    area = image.crop(box).resize(size, Image.Resampling.LANCZOS)
    area_mask = mask.crop(box).resize(size, Image.Resampling.NEAREST)
    return area, area_mask, box


def paste_area(result: Image.Image, image: Image.Image, mask: Image.Image, box: Box) -> Image.Image:
    """`result` (the inpainted area at the picture's size) scaled back into `box` of `image`,
    under the mask only: every pixel outside the mask stays the original's."""
    patch = result.resize((box[2] - box[0], box[3] - box[1]), Image.Resampling.LANCZOS)
    pasted = image.copy()
    pasted.paste(patch, box[:2], mask.crop(box))
    return pasted
