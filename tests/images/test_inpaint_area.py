"""Inpainting only the masked area (A1111's "Only masked"): the crop, the paste, and the whole
path through the studio with the demo model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio import open_studio
from studio.core.errors import ParameterError
from studio.core.metadata import parse_parameters, read_png_metadata
from studio.core.params import RenderRequest
from studio.images.inpaint_area import crop_box, masked_area, paste_area


def square_mask(size=(64, 64), box=(40, 8, 56, 24)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


def test_the_crop_is_the_masks_box_with_padding_in_the_pictures_shape():
    assert crop_box(square_mask(), 0) == (40, 8, 56, 24)
    assert crop_box(square_mask(), 4) == (36, 4, 60, 28)
    assert crop_box(square_mask(), 20) == (20, 0, 64, 44)  # kept inside the picture, square
    wide = crop_box(square_mask((128, 64), (60, 10, 68, 50)), 0)  # tall mask, wide picture
    assert (wide[2] - wide[0]) == 2 * (wide[3] - wide[1]) and wide[0] <= 60 and wide[2] >= 68
    assert crop_box(Image.new("L", (64, 64), 0), 8) == (0, 0, 64, 64)  # nothing white


def test_paste_keeps_every_pixel_outside_the_mask():
    picture = Image.new("RGB", (64, 64), (200, 40, 40))
    mask = square_mask()
    area, area_mask, box = masked_area(picture, mask, 4)
    assert area.size == area_mask.size == (64, 64)
    pasted = paste_area(Image.new("RGB", (64, 64), (0, 255, 0)), picture, mask, box)
    inside = np.asarray(mask) == 255
    assert (np.asarray(pasted)[~inside] == (200, 40, 40)).all()
    assert (np.asarray(pasted)[inside] == (0, 255, 0)).all()


def test_the_request_checks_inpaint_padding():
    base = RenderRequest("x", mode="inpaint", init_image="a", mask_image="b", strength=1.0)
    for bad in (-1, 4096, 1.5, True):
        with pytest.raises(ParameterError, match="inpaint_padding"):
            RenderRequest(**{**base.__dict__, "inpaint_padding": bad}).check()
    with pytest.raises(ParameterError, match="takes no `inpaint_padding`"):
        RenderRequest("x", inpaint_padding=8).check()
    assert "inpaint_padding" not in base.key_fields()  # old keys stay


def test_only_masked_through_the_studio(tmp_path, shared_cache):
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (200, 40, 40)
    picture = Image.fromarray(pixels)
    mask = square_mask()
    values = {"image_model": "demo", "steps": 2, "width": 64, "height": 64, "device": "cpu"}
    with open_studio(data_dir=tmp_path / "out", cache_dir=shared_cache, **values) as studio:
        options = {"mode": "inpaint", "init_image": picture, "mask": mask, "seed": 3}
        masked = studio.generate("a green square", inpaint_padding=8, **options)
        whole = studio.generate("a green square", **options)
        assert masked.key != whole.key
        keep = np.asarray(mask) == 0
        after = np.asarray(masked.image())
        assert np.array_equal(after[keep], pixels[keep])
        assert not np.array_equal(after[~keep], np.asarray(whole.image())[~keep])
        assert studio.store.find_image(masked.key).inpaint_padding == 8
        fields = parse_parameters(read_png_metadata(masked.path.read_bytes())[0])
        assert fields["Inpaint area"] == "Only masked" and fields["Masked area padding"] == "8"
        again = studio.generate("a green square", inpaint_padding=8, **options)
        assert again.cached and np.array_equal(np.asarray(again.image()), after)
