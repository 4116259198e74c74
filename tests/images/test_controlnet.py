"""Guided generation (ControlNet) on the demo model with a tiny ControlNet built from its unet's
config: the control image steers the pixels, deterministically; scale, start and end change
them; keys, PNG fields and catalog rows carry the control image's hash and settings; control maps
made from sketches, pictures (Canny) and depth maps; the errors for bad input and settings; and
the Studio page's "Guided generation" controls driven by AppTest (tests/ui/test_browser.py draws a
sketch with the mouse)."""

import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from studio.api import open_studio
from studio.catalog.records import record_from_png
from studio.catalog.store import Store
from studio.core.config import load_settings, parse_controlnets
from studio.core.errors import ConfigError, ImageInputError, ParameterError, RenderError
from studio.core.metadata import parse_parameters
from studio.core.params import RenderRequest
from studio.images.backends.base import Capabilities
from studio.images.backends.diffusers.demo import build_demo_controlnet, build_demo_sdxl_model
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_controlnet, resolve_image_model
from studio.images.control import canny_map, control_map, estimate_depth
from tests.support.catalogs import SMALL_ENV
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

BASE = RenderRequest("a lighthouse on a cliff", "blurry", "Euler", 2, 7.0, 64, 64, 3)


def sketch(kind: str = "line", size=(64, 64), ground="white", ink="black") -> Image.Image:
    """Dark strokes on white, as drawn on the canvas."""
    image = Image.new("RGB", size, ground)
    draw = ImageDraw.Draw(image)
    w, h = size
    if kind == "line":
        draw.line([(w // 10, h // 10), (w * 9 // 10, h * 8 // 10)], fill=ink, width=max(2, w // 20))
    else:
        draw.ellipse([w // 5, h // 5, w * 4 // 5, h * 4 // 5], outline=ink, width=max(2, w // 20))
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def controlnet_folder(shared_cache):
    return build_demo_controlnet(shared_cache / "controlnet-tiny")


@pytest.fixture(scope="module")
def renderer(shared_cache, controlnet_folder):
    model = resolve_image_model("demo", shared_cache)
    return Renderer(model, "cpu", controlnets={"scribble": str(controlnet_folder), "canny": "demo"})


@pytest.fixture(scope="module")
def maps():
    line = control_map(sketch("line"), "scribble", (64, 64))
    ring = control_map(sketch("ring"), "scribble", (64, 64))
    return {"line": line.convert("RGB"), "ring": ring.convert("RGB")}


def guided(control_image: str = "line", **values) -> RenderRequest:
    fields = dict(control_type="scribble", control_scale=1.0, control_start=0.0, control_end=1.0)
    return dataclasses.replace(BASE, control_image=control_image, **{**fields, **values})


@pytest.fixture(scope="module")
def rendered(renderer, maps):
    """The pixels of BASE unguided and of each guided variant, rendered once for the module."""
    variants = {
        "plain": BASE,
        "line": guided(),
        "ring": guided("ring"),
        "scale0": guided(control_scale=0.0),
        "half": guided(control_scale=0.5),
        "late": guided(control_start=0.5),
        "early": guided(control_end=0.5),
    }
    return {
        name: np.asarray(renderer.render([r], inputs=maps.__getitem__)[0]).astype(int)
        for name, r in variants.items()
    }


def test_the_tiny_controlnet_is_the_demo_unets_and_built_the_same_every_time(
    controlnet_folder, tmp_path
):
    config = json.loads((controlnet_folder / "config.json").read_text())
    assert (config["cross_attention_dim"], config["block_out_channels"]) == (32, [32, 64])
    again = build_demo_controlnet(tmp_path / "again")
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        assert (again / name).read_bytes() == (controlnet_folder / name).read_bytes()


@pytest.mark.slow
def test_the_control_image_steers_the_pixels_deterministically(renderer, maps, rendered):
    line = rendered["line"]
    assert line.shape == (64, 64, 3)
    again = np.asarray(renderer.render([guided()], inputs=maps.__getitem__)[0]).astype(int)
    assert (line == again).all()
    assert np.abs(line - rendered["plain"]).mean() > 5  # guided differs from unguided
    assert np.abs(line - rendered["ring"]).max() > 5  # and follows the control image


def test_scale_and_the_guided_steps_change_the_pixels(rendered):
    assert (rendered["scale0"] == rendered["plain"]).all()  # scale 0: the unguided image
    for name in ("half", "late", "early"):
        assert (rendered[name] != rendered["line"]).any(), name
        assert (rendered[name] != rendered["plain"]).any(), name


def test_the_key_changes_with_the_control_image_and_each_setting(renderer):
    keys = {
        renderer.cache_key(r)
        for r in [
            BASE,
            guided(),
            guided("ring"),
            guided(control_scale=0.5),
            guided(control_start=0.2),
            guided(control_end=0.8),
            guided(control_type="canny"),
        ]
    }
    assert len(keys) == 7
    assert "control" not in json.dumps(BASE.key_fields())  # older keys stay the same
    assert renderer.provenance(guided())["controlnet"]["type"] == "scribble"
    assert "controlnet" not in renderer.provenance(BASE)


def test_requests_check_the_control_settings():
    guided().check()
    bad = [
        (dict(control_type="pose"), "Unknown control type"),
        (dict(control_scale=2.5), "`control_scale` has to be a number between 0 and 2"),
        (dict(control_scale=None), "`control_scale`"),
        (dict(control_start=-0.1), "`control_start` has to be a number between 0 and 1"),
        (dict(control_end=1.5), "`control_end`"),
        (dict(control_start=0.6, control_end=0.4), "`control_start` has to be below"),
        (dict(control_resize="stretch"), "Unknown control resize mode 'stretch'"),
    ]
    for values, message in bad:
        with pytest.raises(ParameterError, match=message):
            guided(**values).check()
    with pytest.raises(ParameterError, match="need a control image"):
        dataclasses.replace(BASE, control_scale=1.0).check()


def test_a_control_type_not_configured_names_the_setting(renderer, maps):
    with pytest.raises(ParameterError, match="STUDIO_CONTROLNETS"):
        renderer.render([guided(control_type="depth")], inputs=maps.__getitem__)
    with pytest.raises(ParameterError, match="no ControlNet for 'scribble'.*STUDIO_CONTROLNETS"):
        Capabilities(controlnet=()).check(guided(), "OpenAI Images")


def test_a_control_image_of_another_size_is_refused_by_the_renderer(renderer, maps):
    inputs = {**maps, "big": maps["line"].resize((96, 64))}
    with pytest.raises(ParameterError, match="control image is 96x64 but the request is 64x64"):
        renderer.render([guided("big")], inputs=inputs.__getitem__)


def test_a_controlnet_of_another_family_is_refused(shared_cache, controlnet_folder):
    sdxl = resolve_image_model(str(build_demo_sdxl_model(shared_cache / "sdxl-demo")), shared_cache)
    other = Renderer(sdxl, "cpu", controlnets={"scribble": str(controlnet_folder)})
    with pytest.raises(RenderError, match=r"STUDIO_CONTROLNETS.*text width 32.*another|family"):
        other.controlnet("scribble")
    with pytest.raises(RenderError, match="demo ControlNet fits only the demo image model"):
        resolve_controlnet("canny", "demo", sdxl)


def test_controlnet_sources_that_cannot_be_found_name_the_setting(shared_cache, tmp_path):
    model = resolve_image_model("demo", shared_cache)
    (tmp_path / "empty").mkdir()
    for name, message in [
        (str(tmp_path / "empty"), "holds no diffusers ControlNetModel"),
        ("nobody/no-such-controlnet", "not in the Hugging Face cache"),
        ("./missing", "no such folder"),
    ]:
        with pytest.raises(RenderError, match=f"STUDIO_CONTROLNETS.*{message}"):
            resolve_controlnet("canny", name, model)


def test_the_controlnets_setting_is_parsed_and_checked(monkeypatch):
    assert parse_controlnets(" scribble=a/b , canny=./c ,") == {"scribble": "a/b", "canny": "./c"}
    for text, message in [("pose=a/b", "Unknown control type 'pose'"), ("canny", "type=source")]:
        with pytest.raises(ConfigError, match=message):
            parse_controlnets(text)
    monkeypatch.setenv("STUDIO_CONTROLNETS", "scribble")
    with pytest.raises(ConfigError, match="STUDIO_CONTROLNETS"):
        load_settings()


def test_sketches_become_white_lines_on_black_whatever_their_mode():
    drawn = control_map(sketch(), "scribble", (64, 64))
    pixels = np.asarray(drawn)
    assert drawn.mode == "L" and pixels.mean() < 40  # mostly black: the ground
    assert pixels[6, 6] > 200  # the stroke, white
    light_on_dark = control_map(sketch(ground="black", ink="white"), "lineart", (64, 64))
    assert (np.asarray(light_on_dark) == pixels).all()  # already the right way round
    # A canvas drawing: black strokes on transparency (alpha laid on white), then inverted.
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(rgba).line([(6, 6), (57, 51)], fill=(0, 0, 0, 255), width=3)
    assert (np.asarray(control_map(rgba, "scribble", (64, 64))) == pixels).all()
    palette = sketch().convert("P")
    assert (np.asarray(control_map(palette, "scribble", (64, 64))) == pixels).all()


def test_control_images_of_the_same_shape_are_resized():
    big = control_map(sketch(size=(256, 256)), "scribble", (64, 64))
    assert big.size == (64, 64)
    small = control_map(sketch(size=(64, 64)), "scribble", (64, 64))
    for mode in ("just resize", "crop and resize", "resize and fill"):  # all the same there
        same = control_map(sketch(size=(128, 128)), "scribble", (64, 64), resize=mode)
        assert np.abs(np.asarray(same, int) - np.asarray(small, int)).mean() < 12, mode
    with pytest.raises(ImageInputError, match="sketch is blank"):
        control_map(Image.new("RGB", (64, 64), "white"), "scribble", (64, 64))


def test_canny_edges_and_depth_maps(tmp_path):
    picture = Image.new("RGB", (64, 64), (30, 60, 120))
    ImageDraw.Draw(picture).rectangle([16, 16, 48, 48], fill=(240, 220, 90))
    edges = np.asarray(canny_map(picture))
    assert set(np.unique(edges)) == {0, 255}
    assert edges[14:19, 30].any() and not edges[24:40, 24:40].any()  # the square's edge only
    assert (np.asarray(control_map(picture, "canny", (64, 64))) == edges).all()
    with pytest.raises(ImageInputError, match="no edges"):
        canny_map(Image.new("RGB", (64, 64), "grey"))
    with pytest.raises(ImageInputError, match="thresholds"):
        canny_map(picture, (200, 100))
    gradient = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1)))
    depth = control_map(gradient.convert("RGB"), "depth", (64, 64), preprocess=False)
    assert (np.asarray(depth) == np.asarray(gradient)).all()
    with pytest.raises(ImageInputError, match="depth map is in colour.*STUDIO_DEPTH_MODEL"):
        control_map(picture, "depth", (64, 64), preprocess=False)
    with pytest.raises(ConfigError, match="No depth model is set.*STUDIO_DEPTH_MODEL"):
        estimate_depth(picture, "")
    with pytest.raises(ConfigError, match="Could not load the depth model.*STUDIO_DEPTH_MODEL"):
        estimate_depth(picture, str(tmp_path))  # a folder without a model


def test_guided_generation_through_the_studio_is_stored_with_its_fields(tmp_path, monkeypatch):
    for name, value in SMALL_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("STUDIO_CONTROLNETS", "scribble=demo")
    with open_studio(data_dir=tmp_path / "data") as studio:
        assert studio.backend.capabilities.controlnet == ("scribble",)
        made = studio.generate(
            "a lighthouse", seed=3, control_image=png(sketch(size=(128, 128))), control_scale=0.8
        )
        record = made.record
        assert (record.control_type, record.control_scale) == ("scribble", 0.8)
        assert (record.control_start, record.control_end) == (0.0, 1.0)
        stored = studio.store.input_image(record.control_image)
        assert stored.size == (64, 64) and np.asarray(stored.convert("L"))[6, 6] > 128
        assert record.control_resize == "crop and resize"  # the default
        info = parse_parameters(made.image().info["parameters"])
        assert info["ControlNet 0"] == (
            "Module: scribble, Model: demo, Weight: 0.8, Resize Mode: Crop and Resize, "
            f"Guidance Start: 0, Guidance End: 1, Image hash: {record.control_image[:10]}"
        )
        again = studio.generate("a lighthouse", seed=3, control_image=png(sketch(size=(128, 128))),
                                control_scale=0.8)  # fmt: skip
        assert again.cached and again.key == made.key
        # The catalog row gives the same request back (REQUEST_FIELDS), also rebuilt from the PNG.
        row = Store(tmp_path / "data").find_image(made.key)
        assert row.request == record.request == record_from_png(made.path).request
        with pytest.raises(ParameterError, match="no ControlNet for 'canny'"):
            studio.generate("a lighthouse", control_image=png(sketch()), control_type="canny")
        wide = studio.request("a lighthouse", control_image=png(sketch(size=(96, 64))),
                              control_resize="resize and fill")  # fmt: skip
        assert wide.control_resize == "resize and fill"
        assert studio.store.input_image(wide.control_image).size == (64, 64)


@pytest.mark.slow
def test_the_studio_page_guides_an_image_with_an_uploaded_sketch(app_env, monkeypatch):  # noqa: F811
    monkeypatch.setenv("STUDIO_CONTROLNETS", "scribble=demo,canny=demo")
    at = open_page("pages/studio.py")
    at.checkbox(key="st_cn_on").check().run()
    assert at.selectbox(key="st_cn_type").options == [
        "Scribble (a sketch)",
        "Canny edges of a picture",
    ]
    at.radio(key="st_cn_from").set_value("Upload").run()
    at.button(key="st_generate").click().run()  # nothing uploaded yet: no unguided image either
    assert not at.exception
    assert any("Draw or upload the control image" in i.value for i in at.info)
    assert any("there is no control image" in e.value for e in at.error)
    assert not Store(app_env).images(target="studio")
    at.file_uploader(key="st_cn_upload_scribble").set_value(
        ("sketch.png", png(sketch(size=(128, 128))), "image/png")
    ).run()
    at.slider(key="st_cn_scale").set_value(0.7).run()
    at.slider(key="st_cn_range").set_value((0.0, 0.8)).run()
    at.button(key="st_generate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    row = Store(app_env).images(target="studio")[-1]
    assert (row.control_type, row.control_scale, row.control_end) == ("scribble", 0.7, 0.8)
    # A picture of another shape is fitted by the resize mode chosen, and the image says which.
    at.file_uploader(key="st_cn_upload_scribble").set_value(
        ("wide.png", png(sketch(size=(96, 64))), "image/png")
    ).run()
    at.radio(key="st_cn_resize").set_value("resize and fill").run()
    at.button(key="st_generate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    row = Store(app_env).images(target="studio")[-1]
    assert (row.control_resize, row.control_scale) == ("resize and fill", 0.7)


def test_a_configured_depth_model_estimates_the_depth(tmp_path):
    """A tiny DPT built from config, saved as a folder: the depth comes back as an L map of the
    picture's size, the same twice, and differs between pictures."""
    import torch
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    config = DPTConfig(
        image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=4,
        backbone_out_indices=[0, 1, 2, 3], num_attention_heads=4, intermediate_size=37,
        neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=32,
        reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1,
    )  # fmt: skip
    folder = tmp_path / "tiny-dpt"
    DPTForDepthEstimation(config).save_pretrained(folder, safe_serialization=True)
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(
        folder
    )
    scene = np.zeros((48, 64, 3), np.uint8)
    scene[:, 32:] = (230, 230, 230)
    picture = Image.fromarray(scene)
    depth = control_map(picture, "depth", (64, 48), preprocess=True, depth_model=str(folder))
    assert depth.mode == "L" and depth.size == (64, 48)
    again = estimate_depth(picture, str(folder))
    assert (np.asarray(again) == np.asarray(depth)).all()
    other = estimate_depth(Image.new("RGB", (64, 48), (20, 120, 40)), str(folder))
    assert (np.asarray(other) != np.asarray(depth)).any()
