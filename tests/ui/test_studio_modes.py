"""The Studio's modes driven by Streamlit's AppTest: img2img, inpaint, outpaint and variations on
the demo model at 64x64 and 2 steps, from an uploaded init image or a catalog image; only the
backend's modes and controls shown; bad uploads an error box, never an exception. And the small
functions the page uses: the canvas's drawing as a mask, the size a mode makes.

AppTest cannot draw on the canvas; tests/ui/test_browser.py paints a mask with the mouse.
"""

import io

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from studio.catalog.store import Store
from studio.core.errors import ImageInputError
from studio.core.inputs import canvas_mask, mode_size
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

STUDIO = "pages/studio.py"


def png(size=(64, 64), colour="red", mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def square_mask(size=(64, 64)) -> bytes:
    mask = Image.new("L", size, 0)
    mask.paste(255, (16, 16, 48, 48))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def studio_with_upload(mode: str, init: bytes, name: str = "in.png") -> AppTest:
    at = open_page(STUDIO)
    at.radio(key="st_mode_choice").set_value(mode).run()
    at.file_uploader(key="st_init_upload").set_value((name, init, "image/png")).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def generate(at: AppTest) -> AppTest:
    at.button(key="st_generate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_img2img_from_an_upload_takes_the_init_images_size(app_env):  # noqa: F811
    at = studio_with_upload("img2img", png((80, 64)))
    assert any("80x64 → the result is 80x64" in c.value for c in at.caption)
    assert not [n for n in at.number_input if n.key in ("st_width", "st_height")]  # from the init
    at.slider(key="st_strength_img2img").set_value(0.5)
    generate(at)
    assert not at.error, [e.value for e in at.error]
    (row,) = Store(app_env).images()
    assert (row.mode, row.strength, row.width, row.height) == ("img2img", 0.5, 80, 64)
    assert row.init_image and row.mask_image is None
    assert at.button(key=f"st_reuse_{row.id}")  # the result is shown, and can be the next init


@pytest.mark.slow
def test_inpaint_with_an_uploaded_mask(app_env):  # noqa: F811
    at = studio_with_upload("inpaint", png())
    generate(at)  # nothing painted on the canvas yet
    assert any("The mask is empty" in e.value for e in at.error)
    assert not Store(app_env).images()
    at.radio(key="st_mask_from").set_value("Upload").run()
    at.file_uploader(key="st_mask_upload").set_value(("mask.png", square_mask(), "image/png"))
    generate(at.run())
    assert not at.error, [e.value for e in at.error]
    (row,) = Store(app_env).images()
    assert (row.mode, row.strength) == ("inpaint", 1.0)
    assert row.init_image and row.mask_image
    mask = Store(app_env).input_image(row.mask_image)
    assert mask.getpixel((32, 32)) == 255 and mask.getpixel((2, 2)) == 0
    assert row.inpaint_padding is None  # the whole picture, unless asked
    at.checkbox(key="st_only_masked").check().run()
    at.slider(key="st_mask_padding").set_value(16)
    generate(at.run())
    assert not at.error, [e.value for e in at.error]
    paddings = {image.inpaint_padding for image in Store(app_env).images()}
    assert paddings == {None, 16}


@pytest.mark.slow
def test_outpaint_adds_the_chosen_sides(app_env):  # noqa: F811
    at = studio_with_upload("outpaint", png())
    at.multiselect(key="st_outpaint_sides").set_value(["left", "down"]).run()
    at.select_slider(key="st_outpaint_left").set_value(64)
    at.select_slider(key="st_outpaint_down").set_value(128).run()
    assert any("64x64 → the result is 128x192" in c.value for c in at.caption)
    generate(at)
    assert not at.error, [e.value for e in at.error]
    (row,) = Store(app_env).images()
    assert (row.mode, row.width, row.height) == ("outpaint", 128, 192)
    assert row.outpaint == (64, 0, 0, 128) and row.strength is None


@pytest.mark.slow
def test_variations_show_as_a_grid(app_env):  # noqa: F811
    at = studio_with_upload("variation", png(colour="navy"))
    at.slider(key="st_variations_n").set_value(3)
    at.slider(key="st_strength_variation").set_value(0.5)  # 2 steps x 0.35 would denoise nothing
    generate(at.run())
    assert not at.error, [e.value for e in at.error]
    rows = Store(app_env).images()
    assert [r.mode for r in rows] == ["variation"] * 3
    assert len({r.seed for r in rows}) == 3 and len({r.init_image for r in rows}) == 1
    assert len([b for b in at.button if b.key and b.key.startswith("st_reuse_")]) == 3


@pytest.mark.slow
def test_send_a_catalog_image_to_the_studio_as_init_image(app_env):  # noqa: F811
    at = open_page(STUDIO)
    at.text_area(key="st_prompt").set_value("a lighthouse at dusk")
    generate(at)
    (made,) = Store(app_env).images()
    at.switch_page("pages/gallery.py").run()
    at.button(key=f"init_ga_{made.id}").click().run()  # the card's "Send to Studio as init image"
    assert not at.exception, [e.value for e in at.exception]
    assert at.radio(key="st_mode_choice").value == "img2img"
    assert at.radio(key="st_init_from").value == "Catalog image"
    assert at.selectbox(key="st_init_catalog").value == made.id
    generate(at.switch_page(STUDIO).run())  # AppTest reruns its own page, not st.switch_page's
    assert not at.error, [e.value for e in at.error]
    _, derived = Store(app_env).images()
    assert derived.mode == "img2img" and derived.init_image
    assert derived.prompt == "a lighthouse at dusk"  # the Studio's controls kept their values
    at.switch_page("pages/gallery.py").run()
    at.switch_page(STUDIO).run()  # the mode and the init image outlive a visit to another page
    assert at.radio(key="st_mode_choice").value == "img2img"
    assert at.selectbox(key="st_init_catalog").value == made.id
    at.switch_page("pages/gallery.py").run()
    at.button(key=f"send_ga_{made.id}").click().run()  # plain "Send to Studio": reproduce it
    assert at.radio(key="st_mode_choice").value == "txt2img"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "init", "mask", "message"),
    [
        ("img2img", b"no pixels in here", None, "not an image"),
        ("img2img", png()[:60], None, "The init image"),  # truncated
        ("inpaint", png(), png((32, 32), "white"), "The mask is 32x32 but the image is 64x64"),
        ("inpaint", png(), b"GIF89a but not really", "The mask"),
    ],
)
def test_bad_uploads_are_an_error_not_an_exception(app_env, mode, init, mask, message):  # noqa: F811
    at = studio_with_upload(mode, init)
    if mask is not None:
        at.radio(key="st_mask_from").set_value("Upload").run()
        at.file_uploader(key="st_mask_upload").set_value(("mask.png", mask, "image/png")).run()
        generate(at)
    assert any(message in e.value for e in at.error), [e.value for e in at.error]
    assert not Store(app_env).images()


@pytest.mark.slow
def test_only_the_backends_modes_and_controls_are_shown(app_env, monkeypatch):  # noqa: F811
    at = open_page(STUDIO)
    assert at.radio(key="st_mode_choice").options == [
        "Text to image",
        "Image to image",
        "Inpaint",
        "Outpaint",
        "Variations",
    ]
    monkeypatch.setenv("STUDIO_IMAGE_MODEL", "openai:dall-e-2")  # no img2img, no outpaint
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    at = open_page(STUDIO)
    assert not at.error, [e.value for e in at.error]
    assert at.radio(key="st_mode_choice").options == ["Text to image", "Inpaint", "Variations"]
    widgets = (at.slider, at.selectbox, at.text_area, at.number_input)
    keys = {widget.key for kind in widgets for widget in kind}
    assert {"st_cfg", "st_steps", "st_sampler", "st_negative_prompt", "st_width"}.isdisjoint(keys)
    assert at.selectbox(key="st_size").options == ["256x256", "512x512", "1024x1024"]
    assert not at.tabs  # no comparison grid: nothing for it to vary
    at.radio(key="st_mode_choice").set_value("variation").run()
    assert not at.exception and at.file_uploader(key="st_init_upload")


# The page's helpers -----------------------------------------------------------------------------


def test_canvas_mask_is_white_where_painted_at_the_images_size():
    drawing = np.zeros((512, 384, 4), dtype=np.uint8)  # the canvas: 8x the 48x64 image
    drawing[128:256, 64:192] = (255, 40, 160, 153)  # translucent paint, any colour
    mask = canvas_mask(drawing, (48, 64))
    assert (mask.mode, mask.size) == ("L", (48, 64))
    assert mask.getbbox() == (8, 16, 24, 32)
    assert sorted(colour for _, colour in mask.getcolors()) == [0, 255]


def test_canvas_mask_refuses_an_empty_or_too_thin_drawing():
    with pytest.raises(ImageInputError, match="empty"):
        canvas_mask(None, (64, 64))
    with pytest.raises(ImageInputError, match="empty"):
        canvas_mask(np.zeros((64, 64, 4), dtype=np.uint8), (64, 64))
    hairline = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
    hairline.putpixel((100, 100), (255, 255, 255, 255))
    with pytest.raises(ImageInputError, match="wider brush"):
        canvas_mask(hairline, (64, 64))


def test_mode_size_rounds_to_8_and_adds_the_outpaint():
    assert mode_size((64, 64)) == (64, 64)
    assert mode_size((100, 75)) == (96, 72)
    assert mode_size((64, 64), {"left": 64, "right": 128, "down": 8}) == (256, 72)
