"""The denoising strip on the demo model at 64x64 and 6 steps: a frame every k steps and the last,
ceil(steps / k) of them, the last one the image itself (full VAE); collected during a new image's
one render, or by rendering a catalog image again with its seed (checked pixel for pixel); kept
with the image, so a second ask renders nothing; the same in another catalog; bad choices and a
backend without intermediate steps refused with the fix; the Studio page's expander."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from studio.api import Studio
from studio.catalog.store import Store
from studio.core.config import load_settings
from studio.core.errors import ParameterError
from studio.core.params import RenderRequest
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model, resolve_preview_vae
from studio.images.backends.openai_images import OpenAIImagesBackend
from tests.images.test_fast_path import build_tiny_taesd
from tests.support.apptests import errors, run
from tests.support.fakes import FakeBackend
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

STEPS = 6


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


class CountingRenderer:
    """Counts the renders of a renderer (wrapping its `render`)."""

    def __init__(self, renderer: Renderer):
        self.calls = 0
        original = renderer.render

        def render(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        renderer.render = render


@pytest.fixture(scope="module")
def renderer(tmp_path_factory, shared_cache):
    """The demo model with a tiny TAESD as its preview VAE, loaded once for the module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        folder = build_tiny_taesd(tmp_path_factory.mktemp("taesd") / "taesd")
        return Renderer(
            resolve_image_model("demo", shared_cache),
            "cpu",
            preview_vae=resolve_preview_vae(str(folder), shared_cache),
        )


@pytest.fixture(scope="module")
def counter(renderer):
    return CountingRenderer(renderer)


def open_on(folder, backend) -> Studio:
    settings = load_settings(
        {"width": 64, "height": 64, "steps": STEPS, "data_dir": folder, "image_model": "demo"}
    )
    return Studio(settings, backend=backend, chat_backend=FakeBackend())


@pytest.fixture
def studio(tmp_path, renderer, counter):
    with open_on(tmp_path / "data", renderer) as studio:
        yield studio


@pytest.mark.slow
def test_a_new_image_keeps_the_strip_collected_during_its_one_render(studio, counter, tmp_path):
    before = counter.calls
    strip = studio.denoising_strip(studio.request("a lighthouse at night", seed=1), every=4)
    assert counter.calls == before + 1  # the image and its strip from one render
    assert strip.steps == (4, 6) and strip.total == STEPS  # every 4th, and the last
    assert len(strip.steps) == math.ceil(STEPS / 4) and len(strip.frames()) == 2
    assert strip.max_difference is None and "collected while the image was rendered" in strip.note
    record = studio.store.find_image(strip.cache_key)
    with Image.open(studio.store.image_path(record)) as image:
        final = pixels(image)
    first, last = (pixels(frame) for frame in strip.frames())
    assert np.abs(last - final).max() <= 1  # the full VAE's last frame is the image
    assert np.abs(first - final).max() > 0  # and the earlier one is not yet
    assert strip.path.parent.parent == tmp_path / "data" / "strips"
    assert strip.image().size == (2 * 64, 64 + 16)  # two frames, a label band under them

    again = studio.denoising_strip(strip.cache_key, every=4)
    assert counter.calls == before + 1 and again.reused and again.path == strip.path
    with open_on(tmp_path / "data", studio.backend) as reopened:  # kept in the catalog
        kept = reopened.stored_strip(strip.cache_key, 4, "vae")
    assert kept is not None and kept.steps == (4, 6) and kept.png() == strip.png()
    assert studio.stored_strip(strip.cache_key, 3, "vae") is None  # another k is another strip


def test_a_catalog_image_is_rendered_again_with_its_seed_and_checked(studio, counter, tmp_path):
    made = studio.generate("a red door in the fog", seed=2)
    before = counter.calls
    strip = studio.denoising_strip(made.record, every=2)
    assert counter.calls == before + 1
    assert strip.steps == (2, 4, 6) and strip.max_difference == 0
    assert "exactly the stored image's pixels" in strip.note
    final = pixels(made.image())
    distances = [np.abs(pixels(frame) - final).mean() for frame in strip.frames()]
    assert distances[0] > distances[1] > distances[2] < 0.01  # noise becoming the image

    # The same image in another catalog gives the same strip: it is deterministic.
    with open_on(tmp_path / "other", studio.backend) as other:
        fresh = other.denoising_strip(other.request("a red door in the fog", seed=2), every=2)
    assert fresh.cache_key == strip.cache_key and fresh.max_difference is None
    assert np.array_equal(pixels(fresh.image()), pixels(strip.image()))


def test_the_preview_decoder_uses_the_tiny_preview_vae(studio):
    request = studio.request("a castle", seed=3)
    preview = studio.denoising_strip(request, every=3, decoder="preview")
    full = studio.denoising_strip(request, every=3, decoder="vae")  # a re-render: it is stored
    assert preview.steps == full.steps == (3, 6) and preview.decoder == "preview"
    assert [frame.size for frame in preview.frames()] == [(64, 64), (64, 64)]
    assert not np.array_equal(pixels(preview.image()), pixels(full.image()))  # another decoder
    assert "tiny preview VAE" in preview.note and full.max_difference == 0


def test_bad_choices_are_refused_before_any_render(studio, counter, shared_cache):
    request = studio.request("a lighthouse", seed=4)
    before = counter.calls
    for every in (0, STEPS + 1, 2.5, True):
        with pytest.raises(ParameterError, match=rf"from 1 to the image's {STEPS} steps, but is"):
            studio.denoising_strip(request, every=every)
    with pytest.raises(ParameterError, match=r"'vae' \(the model's full VAE\).*not 'taesd'"):
        studio.denoising_strip(request, decoder="taesd")
    with pytest.raises(ParameterError, match="No image with key 'nope'"):
        studio.denoising_strip("nope")
    plain = Renderer(resolve_image_model("demo", shared_cache), "cpu")  # loads nothing yet
    with (
        open_on(studio.store.data_dir, plain) as no_preview,
        pytest.raises(ParameterError, match=r"preview_vae \(STUDIO_PREVIEW_VAE\)"),
    ):
        no_preview.denoising_strip(request, decoder="preview")
    assert counter.calls == before and not Store(studio.store.data_dir).images()


def test_a_backend_without_intermediate_steps_says_so(tmp_path):
    backend = OpenAIImagesBackend("gpt-image-1", "http://127.0.0.1:9/v1", api_key="sk-test")
    with open_on(tmp_path / "data", backend) as studio:
        request = RenderRequest("a lighthouse", width=1024, height=1024)
        with pytest.raises(ParameterError) as refused:
            studio.denoising_strip(request)
    message = str(refused.value)
    assert "gpt-image-1 (OpenAI) returns only finished images" in message
    assert "image_model (STUDIO_IMAGE_MODEL)" in message


@pytest.mark.slow
def test_the_studio_page_makes_shows_and_keeps_the_strip(app_env):  # noqa: F811
    at = open_page("pages/studio.py")
    at.button(key="st_generate").click()
    run(at)
    (row,) = Store(app_env).images()
    assert at.expander and any(e.label == "Denoising strip" for e in at.expander)
    assert at.number_input(key=f"st_strip_every_{row.id}").max == row.steps == 2
    at.number_input(key=f"st_strip_every_{row.id}").set_value(1)
    at.button(key=f"st_strip_make_{row.id}").click()
    run(at)
    assert not errors(at)
    assert any("exactly the stored image's pixels" in c.value for c in at.caption)
    assert Store(app_env).find_strip(row.cache_key, 1, "vae")["steps"] == [1, 2]
    run(at)  # shown again from the catalog: no button to press
    assert not [b for b in at.button if b.key == f"st_strip_make_{row.id}"]
    assert any("exactly the stored image's pixels" in c.value for c in at.caption)
    at.radio(key=f"st_strip_decoder_{row.id}").set_value("preview")
    run(at)
    at.button(key=f"st_strip_make_{row.id}").click()
    run(at)
    assert any("preview_vae (STUDIO_PREVIEW_VAE)" in e for e in errors(at))
