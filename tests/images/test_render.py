import dataclasses

import numpy as np
import pytest

from studio.core.errors import RenderError
from studio.images.backends.diffusers.models import pick_device
from studio.images.backends.diffusers.renderer import Renderer, RenderRequest
from studio.images.backends.diffusers.schedulers import SCHEDULERS, make_scheduler
from studio.images.backends.diffusers.weights import resolve_image_model


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    return Renderer(resolve_image_model("demo", tmp_path_factory.mktemp("models")), "cpu")


def pixels(image):
    return np.asarray(image, dtype=np.int16)


REQUEST = RenderRequest("a detective on a foggy street", "blurry", "Euler", 3, 7.0, 64, 64, 11)


@pytest.mark.slow
def test_same_seed_same_pixels_other_seed_other_pixels(renderer):
    first, again = renderer.render([REQUEST]) + renderer.render([REQUEST])
    assert first.size == (64, 64)
    assert (pixels(first) == pixels(again)).all()
    other = renderer.render([dataclasses.replace(REQUEST, seed=12)])[0]
    assert (pixels(first) != pixels(other)).any()


def test_a_batch_matches_single_renders(renderer):
    requests = [REQUEST, dataclasses.replace(REQUEST, prompt="a violin", seed=5)]
    singles = [renderer.render([r])[0] for r in requests]
    renderer.batch_size = 2
    try:
        batched = renderer.render(requests)
    finally:
        renderer.batch_size = 1
    for one, many in zip(singles, batched, strict=True):
        assert np.abs(pixels(one) - pixels(many)).max() <= 2


def test_every_sampler_builds_from_the_models_config_and_renders(renderer):
    base = renderer.model.scheduler_base_config()
    for name, (scheduler_class, _) in SCHEDULERS.items():
        assert isinstance(make_scheduler(name, base), scheduler_class)
    assert make_scheduler("DPM++ 2M Karras", base).config.use_karras_sigmas is True
    images = renderer.render([dataclasses.replace(REQUEST, sampler="DPM++ 2M SDE Karras")])
    assert images[0].size == (64, 64)


def test_cache_key_covers_every_field(renderer):
    keys = {renderer.cache_key(REQUEST)}
    for change in [
        {"prompt": "x"},
        {"negative_prompt": "y"},
        {"sampler": "DDIM"},
        {"steps": 4},
        {"cfg": 5.0},
        {"width": 72},
        {"height": 72},
        {"seed": 1},
    ]:
        keys.add(renderer.cache_key(dataclasses.replace(REQUEST, **change)))
    keys.add(renderer.cache_key(REQUEST, kind="img2img"))
    assert len(keys) == 10
    assert renderer.cache_key(REQUEST) == renderer.cache_key(dataclasses.replace(REQUEST))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"width": 513}, "`height` and `width` have to be divisible by 8 but are 64 and 513."),
        ({"steps": 0}, "`steps` has to be between 1 and 150 but is 0."),
        ({"sampler": "Euler b"}, "Unknown sampler 'Euler b'; choose one of: Euler, Euler a"),
        ({"prompt": "  "}, "The prompt is empty"),
    ],
)
def test_bad_requests_fail_before_model_work(renderer, change, message):
    with pytest.raises(RenderError) as error:
        renderer.render([dataclasses.replace(REQUEST, **change)])
    assert message in str(error.value)


@pytest.mark.slow
def test_demo_model_is_built_identically(tmp_path, renderer):
    again = resolve_image_model("demo", tmp_path)
    assert again.revision != ""
    image = Renderer(again, "cpu").render([REQUEST])[0]
    assert (pixels(image) == pixels(renderer.render([REQUEST])[0])).all()


def test_model_resolution_errors(tmp_path):
    (tmp_path / "not-a-model").mkdir()
    with pytest.raises(RenderError, match="no model_index.json"):
        resolve_image_model(str(tmp_path / "not-a-model"), tmp_path)
    with pytest.raises(RenderError, match="neither a folder"):
        resolve_image_model("sd15", tmp_path)
    auto = resolve_image_model("auto", tmp_path)  # offline in tests: falls back, with a note
    assert auto.placeholder and "PLACEHOLDERS" in auto.notes[0]


def test_cpu_device_is_fp32():
    assert pick_device("cpu")[0] == "cpu"
    assert str(pick_device("cpu")[1]) == "torch.float32"
