"""Guidance on every mode and control pictures of any shape (issue 27, items 1 and 2).

A ControlNet steers img2img, inpaint, outpaint and variations as it steers txt2img (diffusers'
ControlNet img2img and inpaint pipelines on the loaded components); the comparison grid and the
prompt interpolation keep the control image in every cell and frame; a picture of another shape is
fitted by AUTOMATIC1111's three resize modes, which the PNG parameters and the catalog record. On
the demo model with the tiny ControlNet, at 64x64; the Studio page driven by AppTest."""

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.api import open_studio
from studio.catalog.records import record_from_png
from studio.catalog.store import Store
from studio.core.metadata import parse_parameters
from studio.core.params import RenderRequest
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model
from studio.images.control import control_map
from studio.images.grid import grid_requests, parse_axis
from studio.images.service import ImageTask
from tests.support.catalogs import SMALL_ENV
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

BASE = RenderRequest("a lighthouse on a cliff", "blurry", "Euler", 4, 7.0, 64, 64, 3)
GUIDE = dict(
    control_image="line", control_type="scribble", control_scale=1.0, control_start=0.0,
    control_end=1.0,
)  # fmt: skip


def sketch(size=(64, 64), lines=((0.1, 0.1, 0.9, 0.8),)) -> Image.Image:
    """Dark strokes on white; `lines` in fractions of the size."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    w, h = size
    for x0, y0, x1, y1 in lines:
        draw.line([(x0 * w, y0 * h), (x1 * w, y1 * h)], fill="black", width=3)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def renderer(shared_cache):
    model = resolve_image_model("demo", shared_cache)
    return Renderer(model, "cpu", controlnets={"scribble": "demo"})


@pytest.fixture(scope="module")
def inputs():
    noise = np.random.default_rng(0).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (0, 0, 32, 64))  # repaint the left half
    return {
        "line": control_map(sketch(), "scribble", (64, 64)).convert("RGB"),
        "wide": control_map(sketch(), "scribble", (128, 64)).convert("RGB"),
        "init": Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)),
        "small": Image.fromarray(noise),  # 48x64, outpainted by 80 pixels to the right
        "mask": mask,
    }


MODES = {
    "img2img": dict(mode="img2img", init_image="init", strength=0.7),
    "inpaint": dict(mode="inpaint", init_image="init", mask_image="mask", strength=0.9),
    "variation": dict(mode="variation", init_image="init", strength=0.5),
    "outpaint": dict(mode="outpaint", init_image="small", outpaint=(0, 80, 0, 0), width=128),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_is_guided_by_the_control_image(renderer, inputs, mode):
    plain = dataclasses.replace(BASE, **MODES[mode])
    control = "wide" if plain.width == 128 else "line"
    guided = dataclasses.replace(plain, **{**GUIDE, "control_image": control})
    guided.check()  # no longer "works with txt2img, not img2img"

    def pixels(request):
        return np.asarray(renderer.render([request], inputs=inputs.__getitem__)[0]).astype(int)

    unguided, first, again = pixels(plain), pixels(guided), pixels(guided)
    assert (first == again).all()  # deterministic
    assert np.abs(first - unguided).mean() > 2, mode  # the control image steers the pixels
    scale0 = pixels(dataclasses.replace(guided, control_scale=0.0))
    assert (scale0 == unguided).all()  # scale 0: the unguided image, so nothing else changed
    assert renderer.cache_key(guided) != renderer.cache_key(plain)
    if mode == "inpaint":  # the kept half stays the init image's, guided or not
        assert (first[:, 40:] == np.asarray(inputs["init"])[:, 40:]).all()


def test_a_wide_picture_fits_by_each_resize_mode():
    # A 128x64 sketch: a vertical stroke near its left edge and one at its centre.
    wide = sketch((128, 64), lines=((0.06, 0.1, 0.06, 0.9), (0.5, 0.1, 0.5, 0.9)))
    maps = {
        mode: np.asarray(control_map(wide, "scribble", (64, 64), resize=mode))
        for mode in ("just resize", "crop and resize", "resize and fill")
    }
    assert all(m.shape == (64, 64) for m in maps.values())
    columns = {mode: set(np.flatnonzero(m[32] > 127)) for mode, m in maps.items()}
    # Just resize: both strokes, squeezed to half the width (x 8 -> 4, x 64 -> 32).
    assert columns["just resize"] & {3, 4, 5} and columns["just resize"] & {31, 32, 33}
    # Crop and resize: the centre 64 columns at full scale: the left stroke is cut away.
    assert not columns["crop and resize"] & set(range(12)) and columns["crop and resize"]
    # Resize and fill: all of it at half size (64x32) in the middle, black (no lines) above and
    # below, as the map's border is.
    fill = maps["resize and fill"]
    assert not fill[:15].any() and not fill[49:].any()
    assert columns["resize and fill"] & {3, 4, 5} and columns["resize and fill"] & {31, 32, 33}
    # A depth map is filled with its border's colour: a light ground stays light.
    ground = Image.new("L", (128, 64), 200)
    ground.paste(90, (48, 16, 80, 48))
    depth = np.asarray(
        control_map(ground, "depth", (64, 64), preprocess=False, resize="resize and fill")
    )
    assert depth[0, 0] == 200 and depth[63, 63] == 200 and depth[32, 32] == 90
    with pytest.raises(Exception, match="Unknown control resize mode 'stretch'"):
        control_map(wide, "scribble", (64, 64), resize="stretch")
    with pytest.raises(Exception, match="too thin to steer anything"):
        control_map(sketch((640, 8)), "scribble", (64, 64), resize="resize and fill")


@pytest.fixture
def studio(tmp_path, monkeypatch):
    for name, value in SMALL_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STUDIO_CONTROLNETS", "scribble=demo")
    with open_studio(data_dir=tmp_path / "data") as opened:
        yield opened


def test_the_resize_mode_is_in_the_png_the_catalog_and_a_rebuilt_catalog(studio):
    wide = png(sketch((96, 64)))
    made = studio.generate("a lighthouse", seed=3, control_image=wide,
                           control_resize="resize and fill")  # fmt: skip
    assert made.record.control_resize == "resize and fill"
    info = parse_parameters(made.image().info["parameters"])
    assert "Resize Mode: Resize and Fill, " in info["ControlNet 0"]
    assert record_from_png(made.path).control_resize == "resize and fill"
    assert Store(studio.settings.data_dir).find_image(made.key).control_resize == "resize and fill"
    # Another mode fits the picture otherwise: another control image, another image.
    cropped = studio.generate("a lighthouse", seed=3, control_image=wide)
    assert cropped.record.control_resize == "crop and resize"
    assert cropped.record.control_image != made.record.control_image
    assert cropped.key != made.key


def test_img2img_and_variations_through_the_studio_are_guided(studio):
    init = png(Image.new("RGB", (64, 48), (40, 90, 160)))
    made = studio.generate("a lighthouse", mode="img2img", init_image=init, strength=0.8,
                           control_image=png(sketch()))  # fmt: skip
    record = made.record
    assert (record.mode, record.control_type) == ("img2img", "scribble")
    size = (record.width, record.height)
    assert size[0] > size[1]  # the init image's shape, so the square sketch was cropped to it
    assert studio.store.input_image(record.control_image).size == size
    assert "ControlNet 0" in parse_parameters(made.image().info["parameters"])
    variations = studio.variations(init, n=2, prompt="a lighthouse", strength=0.5,
                                   guide={"control_image": png(sketch())})  # fmt: skip
    controls = {v.record.control_image for v in variations}
    assert controls == {record.control_image} and len({v.key for v in variations}) == 2


def test_the_grid_and_the_interpolation_keep_the_control_image(studio):
    guided = studio.request("a lighthouse", seed=3, control_image=png(sketch()), control_scale=0.8)
    cells = grid_requests(guided, parse_axis("Seed", "1, 2"), parse_axis("CFG scale", "3, 7"))
    results = studio.images.make([ImageTask(cell) for cell in cells])
    assert {r.record.control_image for r in results} == {guided.control_image}
    assert {r.record.control_scale for r in results} == {0.8}
    morph = studio.interpolate(guided, "a castle", 3)
    frames = [r.record for r in morph.results]
    assert [f.control_image for f in frames] == [guided.control_image] * 3
    assert morph.blends == [0.0, 0.5, 1.0]
    # The first frame is the guided request's own image.
    assert studio.generate("a lighthouse", seed=3, control_image=png(sketch()),
                           control_scale=0.8).key == morph.results[0].key  # fmt: skip


def guided_page(mode: str | None = None):
    at = open_page("pages/studio.py")
    if mode is not None:
        at.radio(key="st_mode_choice").set_value(mode).run()
        init = png(Image.new("RGB", (64, 48), (40, 90, 160)))
        at.file_uploader(key="st_init_upload").set_value(("in.png", init, "image/png")).run()
    at.checkbox(key="st_cn_on").check().run()
    at.radio(key="st_cn_from").set_value("Upload").run()
    at.file_uploader(key="st_cn_upload_scribble").set_value(
        ("sketch.png", png(sketch((128, 128))), "image/png")
    ).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_the_studio_page_guides_img2img_the_grid_and_the_interpolation(app_env, monkeypatch):  # noqa: F811
    monkeypatch.setenv("STUDIO_CONTROLNETS", "scribble=demo")
    at = guided_page("img2img")
    at.button(key="st_generate").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    (row,) = Store(app_env).images()
    assert (row.mode, row.control_type) == ("img2img", "scribble")
    assert Store(app_env).input_image(row.control_image).size == (row.width, row.height)
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert any(c.startswith("Control image (scribble") for c in captions), captions

    at = guided_page()  # txt2img: the grid and the interpolation, guided
    at.text_input(key="st_grid_x_CFG scale").set_value("3, 7").run()
    at.button(key="st_grid_render").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    cells = [r for r in Store(app_env).images() if r.mode == "txt2img"]
    assert len(cells) == 2 and all(r.control_image for r in cells)
    at.slider(key="st_morph_frames").set_value(3).run()
    at.button(key="st_morph_render").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    frames = [r for r in Store(app_env).images() if r.blend_prompt is not None]
    assert frames and all(r.control_image == cells[0].control_image for r in frames)
