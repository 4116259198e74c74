"""The public API, `open_studio`, as a user scripts it: every mode, caching, bad input."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from studio import open_studio
from studio.core.errors import ImageInputError, ParameterError, RenderError, StudioError
from studio.core.metadata import parse_parameters, read_png_metadata

SMALL = {"image_model": "demo", "steps": 2, "width": 64, "height": 64, "device": "cpu"}


@pytest.fixture
def studio(tmp_path, shared_cache):
    with open_studio(data_dir=tmp_path / "out", cache_dir=shared_cache, **SMALL) as opened:
        yield opened


@pytest.fixture
def picture(tmp_path):
    """A 64x64 picture with some structure, saved as in.png."""
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (200, 40, 40)
    pixels[16:48, 16:48] = (30, 30, 220)
    path = tmp_path / "in.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def mask(tmp_path):
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[8:40, 8:40] = 255  # white: repaint
    path = tmp_path / "mask.png"
    Image.fromarray(pixels, "L").save(path)
    return path


def test_txt2img_is_stored_with_its_parameters_and_cached(studio):
    first = studio.generate("a lighthouse at night", seed=1)
    assert first.path.is_file() and not first.cached and len(first.key) == 64
    again = studio.generate("a lighthouse at night", seed=1)
    assert again.cached and again.key == first.key and again.path == first.path
    parameters, provenance = read_png_metadata(first.path.read_bytes())
    assert parse_parameters(parameters)["Seed"] == "1"
    assert provenance["request"]["prompt"] == "a lighthouse at night"
    assert first.record.mode == "txt2img" and first.record.target == "studio"


def test_every_mode_records_its_inputs_and_is_deterministic(tmp_path, shared_cache, picture, mask):
    def run(folder):
        with open_studio(data_dir=folder, cache_dir=shared_cache, **SMALL) as studio:
            return [
                studio.generate("stormy sea", mode="img2img", init_image=picture, strength=0.6),
                studio.generate("a red door", mode="inpaint", init_image=picture, mask=mask),
                studio.generate(
                    "the coast", mode="outpaint", init_image=picture, outpaint={"left": 32}
                ),
            ]

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    img2img, inpaint, outpaint = first
    assert [r.record.mode for r in first] == ["img2img", "inpaint", "outpaint"]
    assert img2img.record.strength == 0.6 and img2img.record.init_image
    assert inpaint.record.mask_image and inpaint.record.strength == 1.0
    assert outpaint.record.outpaint == (32, 0, 0, 0)
    assert Image.open(outpaint.path).size == (96, 64)
    # Same inputs, same pixels, in two fresh catalogs.
    assert [r.record.sha256 for r in first] == [r.record.sha256 for r in second]
    with open_studio(data_dir=tmp_path / "a", cache_dir=shared_cache, **SMALL) as studio:
        again = studio.generate("stormy sea", mode="img2img", init_image=picture, strength=0.6)
    assert again.cached and again.key == img2img.key  # the same request: the catalog's image
    infotext = parse_parameters(read_png_metadata(img2img.path.read_bytes())[0])
    assert infotext["Denoising strength"] == "0.6"
    # Inpainting keeps what the mask keeps (black), exactly.
    before = np.asarray(Image.open(picture).convert("RGB"))
    after = np.asarray(Image.open(inpaint.path).convert("RGB"))
    keep = np.asarray(Image.open(mask)) == 0
    assert (after[keep] == before[keep]).all() and (after[~keep] != before[~keep]).any()


def test_variations_use_the_images_own_prompt_and_new_seeds(studio):
    original = studio.generate("a violin on a windowsill", seed=5)
    variations = studio.variations(original.path, n=3, steps=4)  # 4 x 0.35: one step
    assert len({v.key for v in variations}) == 3
    assert {v.record.prompt for v in variations} == {"a violin on a windowsill"}
    assert len({v.record.seed for v in variations}) == 3
    assert {v.record.mode for v in variations} == {"variation"}


def test_images_of_every_kind_are_converted(studio, tmp_path):
    cases = {
        "cmyk.jpg": Image.new("CMYK", (64, 64), (0, 255, 255, 0)),
        "palette.png": Image.new("P", (64, 64), 3),
        "grey16.png": Image.fromarray(np.full((64, 64), 40000, dtype=np.uint16)),
        "alpha.png": Image.new("RGBA", (64, 64), (255, 0, 0, 0)),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        request = studio.request("x", mode="img2img", init_image=tmp_path / name, strength=0.5)
        assert studio.images.input_image(request.init_image).mode == "RGB", name
    alpha = studio.request("x", mode="img2img", init_image=tmp_path / "alpha.png", strength=0.5)
    assert studio.images.input_image(alpha.init_image).getpixel((0, 0)) == (255, 255, 255)


def _bomb_png() -> bytes:
    """A tiny PNG whose header claims 20000x20000 pixels."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", 20000, 20000)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


@pytest.mark.parametrize(
    ("make_input", "message"),
    [
        (lambda p: p.write_bytes(b"these are not pixels"), "not an image the studio can read"),
        (lambda p: p.write_bytes(_png_bytes()[:100]), "damaged or truncated"),
        (lambda p: p.write_bytes(_bomb_png()), "too large to open safely"),
    ],
)
def test_bad_init_images_are_one_clear_error(studio, tmp_path, make_input, message):
    path = tmp_path / "bad.png"
    make_input(path)
    with pytest.raises(ImageInputError, match=message):
        studio.generate("x", mode="img2img", init_image=path, strength=0.5)
    with pytest.raises(ImageInputError, match="does not exist"):
        studio.generate("x", mode="img2img", init_image=tmp_path / "nope.png", strength=0.5)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_parameters_are_refused_before_any_render(studio, picture, mask, tmp_path):
    Image.new("L", (32, 32), 255).save(tmp_path / "small-mask.png")
    cases = [
        (dict(mode="img2img", init_image=picture, strength=1.5), "`strength` has to be"),
        (dict(mode="img2img", init_image=picture, strength=0), "`strength` has to be"),
        (dict(mode="inpaint", init_image=picture, mask=tmp_path / "small-mask.png"),
         "The mask is 32x32 but the image is 64x64"),
        (dict(mode="inpaint", init_image=picture), "Inpainting needs a mask"),
        (dict(mode="outpaint", init_image=picture, outpaint={"left": 0}), "amount above 0"),
        (dict(mode="outpaint", init_image=picture, outpaint={"left": 4096}), "at most 1024"),
        (dict(mode="outpaint", init_image=picture, outpaint={"sideways": 64}), "Unknown outpaint"),
        (dict(mode="sketch", init_image=picture), "Unknown mode 'sketch'"),
        (dict(mode="img2img", strength=0.5), "needs an init image"),
    ]  # fmt: skip
    for options, message in cases:
        with pytest.raises(StudioError, match=message):
            studio.generate("x", **options)
    assert studio.store.images() == []


def test_a_backend_asked_for_a_mode_it_lacks_says_what_it_does(tmp_path, shared_cache, picture):
    with (
        open_studio(data_dir=tmp_path, image_model="openai:dall-e-3") as studio,
        pytest.raises(ParameterError, match="cannot do img2img; it does txt2img"),
    ):
        studio.generate("x", mode="img2img", init_image=picture, strength=0.5)


def test_a_dead_llm_server_does_not_lose_a_render(tmp_path, shared_cache):
    """Rendering never asks the LLM: with its server down, the image is made and kept."""
    dead = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    with open_studio(
        data_dir=tmp_path, cache_dir=shared_cache, llm_base_url=dead, **SMALL
    ) as studio:
        made = studio.generate("a lighthouse", seed=3)
        assert made.path.is_file() and studio.store.find_image(made.key) is not None


def test_sizes_that_are_not_multiples_of_8_are_refused_with_the_fix(studio):
    with pytest.raises(RenderError, match="divisible by 8"):
        studio.generate("x", width=100)


def test_init_images_of_any_size_are_fitted_and_their_masks_follow(studio, tmp_path):
    Image.new("RGB", (100, 70), "teal").save(tmp_path / "odd.png")
    Image.new("RGB", (3000, 2000), "olive").save(tmp_path / "big.png")
    mask = Image.new("L", (100, 70), 0)
    mask.paste(255, (10, 10, 50, 50))
    mask.save(tmp_path / "odd-mask.png")
    odd = studio.request("x", mode="inpaint", init_image=tmp_path / "odd.png",
                         mask=tmp_path / "odd-mask.png")  # fmt: skip
    assert (odd.width, odd.height) == (96, 64)
    assert studio.images.input_image(odd.mask_image).size == (96, 64)
    big = studio.request("x", mode="img2img", init_image=tmp_path / "big.png", strength=0.5)
    assert (big.width, big.height) == (2048, 1360)
    made = studio.generate("x", mode="img2img", init_image=tmp_path / "odd.png", strength=0.5)
    assert Image.open(made.path).size == (96, 64)


def test_users_scripts_keep_their_imports():
    import inspect

    import studio
    import studio.core.errors as core_errors
    import studio.errors as public_errors
    from studio.errors import StudioError

    assert callable(studio.open_studio) and studio.Studio.__name__ == "Studio"
    assert StudioError is core_errors.StudioError
    classes = {n for n, c in vars(core_errors).items() if inspect.isclass(c)}
    assert classes <= set(public_errors.__all__)
