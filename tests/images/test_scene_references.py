"""Several characters in one scene (issue 27, item 7): up to three IP-Adapter references, each
limited to its region of the image by diffusers' IP-Adapter masks; one reference stays the default.

On the demo model with the tiny untrained adapter (its regions are 4x4 latents at 64x64, so the
masks' effect is measured as "the pixels change", not as faces in places): the renderer, the
request's checks and key, the PNG and catalog, `Studio.cast_scene`, the batch job with
`scene_references`, and the Characters page's "Characters together" driven by AppTest."""

import dataclasses

import numpy as np
import pytest
from PIL import Image

from studio.catalog.records import record_from_png
from studio.core.config import load_settings
from studio.core.errors import ConfigError, ParameterError
from studio.core.metadata import parse_parameters
from studio.core.params import RenderRequest
from studio.images.regions import layout_preview, region_boxes, region_masks
from tests.images.test_ip_adapter import FACE, OTHER_FACE, adapter, adapter_folder, renderer  # noqa: F401
from tests.images.test_render_modes import add_input, inputs, pixels
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

THIRD_FACE = add_input(Image.new("RGB", (48, 48), (20, 160, 60)))
LEFT, RIGHT = (add_input(mask) for mask in region_masks(2, (64, 64)))
WHITE = add_input(Image.new("L", (64, 64), 255))
THIRDS = tuple(add_input(mask) for mask in region_masks(3, (64, 64)))
BASE = RenderRequest("two detectives by the fire", "blurry", "Euler", 2, 7.0, 64, 64, 3)
ONE = dataclasses.replace(BASE, reference_image=FACE, reference_scale=0.8)
TWO = dataclasses.replace(ONE, extra_references=(OTHER_FACE,), reference_masks=(LEFT, RIGHT))


def render(renderer, request):  # noqa: F811
    return pixels(renderer.render([request], inputs=inputs)[0])


def test_regions_split_the_image_side_by_side():
    assert region_boxes(2, (64, 48)) == [(0, 0, 32, 48), (32, 0, 64, 48)]
    assert region_boxes(3, (90, 30)) == [(0, 0, 30, 30), (30, 0, 60, 30), (60, 0, 90, 30)]
    masks = [np.asarray(m) for m in region_masks(3, (96, 64))]
    assert sum(m // 255 for m in masks).tolist() == np.ones((64, 96)).tolist()  # a partition
    assert masks[0][:, :32].all() and not masks[0][:, 32:].any()
    preview = layout_preview(["Sherlock Holmes", "Dr. John Watson"], (768, 512))
    assert preview.size == (384, 256)
    assert preview.getpixel((10, 128)) != preview.getpixel((374, 128))  # a colour per region
    with pytest.raises(ParameterError, match="1 to 3 characters"):
        region_masks(4, (64, 64))


def test_two_references_each_in_its_region_render_deterministically(renderer):  # noqa: F811
    two = render(renderer, TWO)
    assert (two == render(renderer, TWO)).all()
    one = render(renderer, ONE)
    assert np.abs(two - one).mean() > 0.3  # the second portrait takes part
    swapped = render(renderer, dataclasses.replace(TWO, reference_masks=(RIGHT, LEFT)))
    assert np.abs(two - swapped).mean() > 0.3  # and where each one applies matters
    three = dataclasses.replace(
        ONE, extra_references=(OTHER_FACE, THIRD_FACE), reference_masks=THIRDS
    )
    assert np.abs(render(renderer, three) - two).mean() > 0.3
    # One reference limited to the whole image is the plain one reference.
    whole = dataclasses.replace(ONE, reference_masks=(WHITE,))
    assert (render(renderer, whole) == one).all()
    # Scale 0: the model's own pixels, as without any reference.
    zero = dataclasses.replace(TWO, reference_scale=0.0)
    assert (render(renderer, zero) == render(renderer, BASE)).all()


def test_a_batch_never_mixes_reference_sets(renderer):  # noqa: F811
    other = dataclasses.replace(TWO, seed=4)
    swapped = dataclasses.replace(TWO, reference_masks=(RIGHT, LEFT))
    assert TWO.batch_group() == other.batch_group() != swapped.batch_group()
    assert ONE.batch_group() != TWO.batch_group()
    together = renderer.render([TWO, ONE, swapped], inputs=inputs)
    for request, image in zip([TWO, ONE, swapped], together, strict=True):
        assert (pixels(image) == render(renderer, request)).all()


def test_requests_check_several_references():
    TWO.check()
    bad = [
        (dict(extra_references=(OTHER_FACE,), reference_masks=None), "need a region each"),
        (dict(reference_masks=(LEFT,)), "one mask .* per reference image, 2 in all"),
        (
            dict(
                extra_references=(OTHER_FACE, THIRD_FACE, FACE), reference_masks=THIRDS + (WHITE,)
            ),
            "at most 3 reference images",
        ),
        (dict(extra_references=[OTHER_FACE]), "tuple of input images' sha256s"),
        (dict(reference_image=None, reference_scale=None), "need a first reference image"),
    ]
    for values, message in bad:
        with pytest.raises(ParameterError, match=message):
            dataclasses.replace(TWO, **values).check()


def test_keys_change_with_the_references_and_regions_and_old_keys_stay(renderer):  # noqa: F811
    keys = {
        renderer.cache_key(r)
        for r in [
            ONE,
            TWO,
            dataclasses.replace(TWO, reference_masks=(RIGHT, LEFT)),
            dataclasses.replace(TWO, extra_references=(THIRD_FACE,)),
        ]
    }
    assert len(keys) == 4
    assert "extra_references" not in ONE.key_fields() and "reference_masks" not in ONE.key_fields()


@pytest.fixture
def studio(tmp_path, shared_cache, adapter_folder):  # noqa: F811
    with small_studio(
        tmp_path / "data", shared_cache, chat=FakeBackend(), ip_adapter=str(adapter_folder)
    ) as opened:
        yield opened


@pytest.mark.slow
def test_a_scene_with_two_characters_through_the_studio(studio):
    made = studio.cast_scene(["Sherlock Holmes", "Dr. John Watson"], "by the fire at 221B")
    record = made.record
    looks = studio.looks()
    assert record.prompt == (
        f"by the fire at 221B, {looks['Sherlock Holmes']} on the left, "
        f"{looks['Dr. John Watson']} on the right"
    )
    assert record.reference_image == studio.reference_of("Sherlock Holmes")
    assert record.extra_references == (studio.reference_of("Dr. John Watson"),)
    masks = [np.asarray(studio.store.input_image(sha)) for sha in record.reference_masks]
    assert [m.shape for m in masks] == [(64, 64), (64, 64)]
    assert masks[0][:, :32].all() and not masks[0][:, 32:].any() and masks[1][:, 32:].all()
    assert record.provenance["cast"] == ["Sherlock Holmes", "Dr. John Watson"]
    assert [r["region"] for r in record.provenance["references"]] == ["on the left", "on the right"]
    assert len(studio.store.images(target="character")) == 2  # the portraits were made first
    info = parse_parameters(made.image().info["parameters"])
    assert info["IP-Adapter image hash"] == (
        f"{record.reference_image[:10]}, {record.extra_references[0][:10]}"
    )
    assert info["IP-Adapter masks"] == ", ".join(sha[:10] for sha in record.reference_masks)
    row = studio.store.find_image(made.key)
    assert row.request == record.request == record_from_png(made.path).request
    assert made.key in {r.cache_key for r in studio.store.images_with("Dr. John Watson")}
    again = studio.cast_scene(["Sherlock Holmes", "Dr. John Watson"], "by the fire at 221B")
    assert again.cached and again.key == made.key
    alone = studio.cast_scene(["Sherlock Holmes"], "by the fire at 221B")
    assert alone.record.extra_references is None and alone.record.reference_masks is None
    with pytest.raises(ParameterError, match="1 to 3 different characters, not 4"):
        studio.cast_scene(
            ["Sherlock Holmes", "Dr. John Watson", "Mrs. Hudson", "Inspector Lestrade"], "a room"
        )
    with pytest.raises(ParameterError, match="Describe the scene"):
        studio.cast_scene(["Sherlock Holmes"], "  ")


def test_a_scene_needs_an_ip_adapter(tmp_path, shared_cache):
    with (
        small_studio(tmp_path / "plain", shared_cache, chat=FakeBackend()) as plain,
        pytest.raises(ParameterError, match="STUDIO_IP_ADAPTER"),
    ):
        plain.cast_scene(["Sherlock Holmes"], "by the fire")


def test_the_scene_references_setting_is_checked(monkeypatch):
    assert load_settings().scene_references == 1  # one reference stays the default
    monkeypatch.setenv("STUDIO_SCENE_REFERENCES", "4")
    with pytest.raises(ConfigError, match="STUDIO_SCENE_REFERENCES"):
        load_settings()


@pytest.mark.slow
def test_the_batch_job_conditions_on_two_characters_with_scene_references(
    tmp_path,
    shared_cache,
    adapter_folder,  # noqa: F811
):
    from studio.core.config import SAMPLE_SERIES
    from studio.core.dataset import load_series
    from studio.workflows.batch import Selection, run_job

    series = load_series(SAMPLE_SERIES)[0]
    selection = Selection(episodes={(1, 1)})
    with small_studio(
        tmp_path / "data",
        shared_cache,
        chat=FakeBackend(),
        ip_adapter=str(adapter_folder),
        scene_references=2,
    ) as studio:
        summary = run_job(series, selection, studio.settings, studio.llm, studio.images)
        assert not summary.failed
        (image,) = studio.store.images(target="episode", season=1, episode=1)
        cast = image.provenance["cast"]
        assert len(cast) >= 2
        assert [r["character"] for r in image.provenance["references"]] == cast[:2]
        assert image.reference_image == studio.reference_of(cast[0])
        assert image.extra_references == (studio.reference_of(cast[1]),)
        assert len(image.reference_masks) == 2


@pytest.mark.slow
def test_the_characters_page_makes_a_scene_of_two(app_env, monkeypatch, shared_cache):  # noqa: F811
    from studio.catalog.store import Store
    from studio.images.backends.diffusers.demo import build_demo_ip_adapter

    at = open_page("pages/characters.py")
    assert any("With an IP-Adapter" in i.value for i in at.info)  # no adapter: says what it needs
    monkeypatch.setenv("STUDIO_IP_ADAPTER", str(build_demo_ip_adapter(shared_cache / "ipa")))
    at = open_page("pages/characters.py")
    at.multiselect(key="ch_scene_names").set_value(["Sherlock Holmes", "Dr. John Watson"]).run()
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert "Who stands where" in captions
    at.button(key="ch_scene_make").click().run()
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]
    (scene,) = [r for r in Store(app_env).images(target="studio")]
    assert scene.provenance["cast"] == ["Sherlock Holmes", "Dr. John Watson"]
    assert scene.extra_references and len(scene.reference_masks) == 2
