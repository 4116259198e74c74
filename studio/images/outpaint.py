"""The outpaint canvas: an image pasted onto a bigger size, the new area filled and masked, with a
soft seam into the original so the join blends. Torch-free (numpy and PIL); the diffusers renderer
inpaints the canvas at full strength and composites the result under the blend mask."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from studio.core.inputs import to_rgb

OUTPAINT_SEAM = 16  # pixels of the original that outpainting repaints along each extended edge
OUTPAINT_BLUR = 4  # Gaussian blur radius of the outpaint mask: the seam's softness


def outpaint_canvas(
    image: Image.Image, amounts: Sequence[int]
) -> tuple[Image.Image, Image.Image, Image.Image]:
    """(canvas, mask, blend mask) for outpainting `image` by (left, right, up, down) pixels.

    The canvas is `image` pasted onto the bigger size, the new area filled with its edge pixels
    repeated. The mask (white = repaint) covers the new area and `OUTPAINT_SEAM` pixels of the
    original along each extended edge; the blend mask is that mask blurred, and fully white over
    the new area, for compositing the result: the original stays exact away from the seam.
    """
    left, right, up, down = amounts
    width, height = image.size
    pixels = np.asarray(to_rgb(image))
    canvas = np.pad(pixels, ((up, down), (left, right), (0, 0)), mode="edge")
    new_area = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    new_area[up : up + height, left : left + width] = 0
    seam_x, seam_y = min(OUTPAINT_SEAM, width // 4), min(OUTPAINT_SEAM, height // 4)
    mask = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    top, bottom = up + (seam_y if up else 0), up + height - (seam_y if down else 0)
    first, last = left + (seam_x if left else 0), left + width - (seam_x if right else 0)
    mask[top:bottom, first:last] = 0
    blurred = Image.fromarray(mask).filter(ImageFilter.GaussianBlur(OUTPAINT_BLUR))
    blend = np.maximum(np.asarray(blurred), new_area)
    return Image.fromarray(canvas), Image.fromarray(mask), Image.fromarray(blend)
