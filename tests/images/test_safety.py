"""The safety filter: a tiny diffusers StableDiffusionSafetyChecker (and a tiny transformers
classifier) built from config and saved as safetensors, images from the fake OpenAI Images server
(one solid colour per prompt), the verdicts in the catalog and the PNG, the blur and Reveal in the
Gallery, a checker that cannot load, and OpenAI's refusals.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import streamlit as st
import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from PIL import Image
from streamlit.testing.v1 import AppTest
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

from studio.api import open_studio
from studio.catalog.records import CLEAR, FLAGGED, REFUSED, UNCHECKED
from studio.catalog.store import Store
from studio.core.errors import ConfigError, PromptRefusedError
from studio.core.params import RenderRequest
from studio.images.backends.openai_images import OpenAIImagesBackend
from studio.images.safety import SafetyFilter, blurred, refusal_picture
from studio.images.service import ImageService, ImageTask
from tests.support.apptests import run
from tests.support.fakes import CONTENT_POLICY, FakeImagesAPI, FakeOpenAIServer, fake_image_colour

APP = str(Path(__file__).resolve().parents[2] / "dashboard.py")
BAD = "a lighthouse at night, flagged"  # the tiny checker's one concept is this prompt's colour
GOOD = "a quiet harbour at dawn"
SIZE = 256  # dall-e-2's smallest


def solid(prompt: str) -> Image.Image:
    return Image.new("RGB", (SIZE, SIZE), fake_image_colour(prompt))


def _embed(model: StableDiffusionSafetyChecker, processor, image: Image.Image) -> torch.Tensor:
    pixels = processor(images=[image], return_tensors="pt").pixel_values
    with torch.no_grad():
        return model.visual_projection(model.vision_model(pixels)[1])[0]


@pytest.fixture(scope="module")
def checkers(tmp_path_factory) -> dict[str, Path]:
    return build_checkers(tmp_path_factory.mktemp("checkers"))


def build_checkers(root: Path) -> dict[str, Path]:
    """Folders of tiny checkers under `root`: "discerning" flags BAD's colour and not GOOD's;
    "classifier" is an image classifier whose nsfw label always wins."""
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "vocab_size": 99, "max_position_embeddings": 16},
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
        projection_dim=8,
    )  # fmt: skip
    model = StableDiffusionSafetyChecker(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32)
    bad, good = _embed(model, processor, solid(BAD)), _embed(model, processor, solid(GOOD))
    similarity = float(torch.nn.functional.cosine_similarity(bad, good, dim=0))
    assert similarity < 0.999, "the two colours must look different to the tiny checker"
    with torch.no_grad():
        model.concept_embeds.copy_(bad.expand_as(model.concept_embeds))
        # BAD's cosine with its concept is 1, GOOD's is `similarity`: a threshold between.
        model.concept_embeds_weights.fill_((1 + similarity) / 2)
        model.special_care_embeds_weights.fill_(2.0)  # no "special care" adjustment
    folders = {"discerning": root / "discerning"}
    model.save_pretrained(folders["discerning"], safe_serialization=True)
    processor.save_pretrained(folders["discerning"])

    labels = {0: "normal", 1: "nsfw"}
    vit = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, image_size=32, patch_size=8,
                    id2label=labels, label2id={v: k for k, v in labels.items()})  # fmt: skip
    classifier = ViTForImageClassification(vit).eval()
    with torch.no_grad():
        classifier.classifier.weight.zero_()
        classifier.classifier.bias.copy_(torch.tensor([-4.0, 4.0]))
    folders["classifier"] = root / "classifier"
    classifier.save_pretrained(folders["classifier"], safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folders["classifier"])
    return folders


@pytest.fixture(scope="module")
def server():
    with FakeOpenAIServer() as fake:
        yield fake


def backend(url: str) -> OpenAIImagesBackend:
    return OpenAIImagesBackend("dall-e-2", url, api_key="sk-test", timeout=5.0, backoff=0.01)


def request(prompt: str, seed: int = 1) -> RenderRequest:
    return RenderRequest(prompt, width=SIZE, height=SIZE, seed=seed)


def test_saved_checker_is_safetensors_only(checkers):
    assert (checkers["discerning"] / "model.safetensors").is_file()
    assert not list(checkers["discerning"].glob("*.bin"))


def test_flagged_and_clear_images_are_recorded_and_the_pixels_kept(tmp_path, checkers, server):
    store = Store(tmp_path / "data")
    service = ImageService(store, backend(server.url), SafetyFilter(str(checkers["discerning"])))
    flagged, clear = service.make([ImageTask(request(BAD)), ImageTask(request(GOOD))])

    bad = store.safety(flagged.key)
    assert bad.status == FLAGGED and bad.hidden and bad.score > 0
    assert "NSFW concept" in bad.reason and bad.checker == str(checkers["discerning"])
    good = store.safety(clear.key)
    assert good.status == CLEAR and not good.hidden and good.score < 0
    for result, prompt in ((flagged, BAD), (clear, GOOD)):  # never blacked out
        image = result.image()
        assert image.getpixel((10, 10)) == fake_image_colour(prompt)
        assert image.getextrema() == tuple((c, c) for c in fake_image_colour(prompt))
        with Image.open(result.path) as png:
            assert (
                json.loads(png.info["studio"])["safety"]["status"]
                == store.safety(result.key).status
            )


def test_no_filter_records_no_verdict_and_a_rebuilt_catalog_keeps_the_flag(
    tmp_path, checkers, server
):
    store = Store(tmp_path / "data")
    plain = ImageService(store, backend(server.url)).make_one(ImageTask(request(GOOD, seed=7)))
    assert store.safety(plain.key) is None
    flagged = ImageService(
        store, backend(server.url), SafetyFilter(str(checkers["discerning"]))
    ).make_one(ImageTask(request(BAD, seed=7)))
    store.close()
    with sqlite3.connect(tmp_path / "data" / "catalog.sqlite") as db:  # lose both rows
        db.execute("DELETE FROM images")
        db.execute("DELETE FROM image_flags")
    reopened = Store(tmp_path / "data")
    assert reopened.opened.adopted == 2
    assert reopened.safety(flagged.key).status == FLAGGED  # from the PNG's provenance
    assert reopened.safety(plain.key) is None


def test_classifier_checker_flags_by_its_nsfw_label(checkers):
    verdict = SafetyFilter(f"classifier:{checkers['classifier']}").check(solid(GOOD))
    assert verdict.status == FLAGGED and verdict.score > 0.99
    assert "nsfw" in verdict.reason


def test_a_classifier_without_a_flagged_label_is_refused(tmp_path, checkers):
    with pytest.raises(ConfigError) as caught:
        SafetyFilter(f"classifier:{checkers['discerning']}").load()  # not a classifier
    assert "STUDIO_SAFETY_CHECKER" in str(caught.value)


def test_a_checker_that_cannot_load_names_the_setting_and_images_are_made_unchecked(
    tmp_path, server
):
    missing = tmp_path / "no-such-checker"
    safety = SafetyFilter(str(missing))
    with pytest.raises(ConfigError) as caught:
        safety.load()
    message = str(caught.value)
    assert "safety_checker (STUDIO_SAFETY_CHECKER)" in message and str(missing) in message
    store = Store(tmp_path / "data")
    made = ImageService(store, backend(server.url), safety).make_one(ImageTask(request(GOOD)))
    verdict = store.safety(made.key)
    assert made.path.is_file() and verdict.status == UNCHECKED
    assert "STUDIO_SAFETY_CHECKER" in verdict.reason


def test_a_refusal_is_recorded_with_no_image(tmp_path):
    images = FakeImagesAPI(fail_always=CONTENT_POLICY)
    with FakeOpenAIServer(images=images) as refusing:
        service = ImageService(Store(tmp_path / "data"), backend(refusing.url))
        with pytest.raises(PromptRefusedError):
            service.make_one(ImageTask(request(BAD)))
        result = service.make([ImageTask(request(BAD, seed=2))], keep_going=True)[0]
    assert result.record is None and "refused the prompt" in result.error
    store = service.store
    assert store.images() == [] and not list(store.images_dir.rglob("*.png"))
    refused = store.refusals()
    assert [(prompt, verdict.status) for _, prompt, verdict, _ in refused] == [
        (BAD, REFUSED),
        (BAD, REFUSED),
    ]
    assert CONTENT_POLICY.code in refused[0][2].reason and refused[0][2].hidden


def test_blur_hides_detail_and_the_refusal_picture_keeps_the_aspect():
    image = Image.new("RGB", (128, 128), "black")
    image.paste((255, 255, 255), (0, 0, 64, 128))  # a sharp edge
    soft = blurred(image)
    assert soft.size == image.size and 20 < soft.getpixel((64, 64))[0] < 235
    assert refusal_picture(1792, 1024).size == (512, 293)


# The dashboard -------------------------------------------------------------------------------


@pytest.fixture
def dashboard_env(monkeypatch, tmp_path, checkers, server):
    monkeypatch.setenv("STUDIO_IMAGE_MODEL", "openai:dall-e-2")
    monkeypatch.setenv("STUDIO_IMAGES_BASE_URL", server.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("STUDIO_WIDTH", str(SIZE))
    monkeypatch.setenv("STUDIO_HEIGHT", str(SIZE))
    monkeypatch.setenv("STUDIO_SAFETY_CHECKER", str(checkers["discerning"]))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield
    st.cache_resource.clear()


def gallery() -> AppTest:
    at = run(AppTest.from_file(APP, default_timeout=60))
    return run(at.switch_page("pages/gallery.py"))


def click(at: AppTest, key: str) -> None:
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]


def test_gallery_blurs_a_flagged_image_until_revealed(dashboard_env):
    with open_studio() as studio:  # the settings' checker, as the batch job and pages use it
        made = studio.images.make([ImageTask(request(BAD)), ImageTask(request(GOOD))])
    flagged_id = made[0].record.id
    at = gallery()
    hidden = [w.value for w in at.warning if "Hidden by the safety filter" in w.value]
    assert len(hidden) == 1 and "NSFW concept" in hidden[0]
    assert [b.key for b in at.button if b.label == "Reveal"] == [f"reveal_ga_{flagged_id}_show"]
    click(at, f"reveal_ga_{flagged_id}_show")
    assert not [w for w in at.warning if "Hidden by the safety filter" in w.value]
    assert at.button(key=f"reveal_ga_{flagged_id}_hide")  # and back
    click(at, f"reveal_ga_{flagged_id}_hide")
    assert [w for w in at.warning if "Hidden by the safety filter" in w.value]


def test_gallery_notes_unchecked_images_and_lists_refusals(dashboard_env, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_SAFETY_CHECKER", str(tmp_path / "missing"))
    with open_studio() as studio:
        studio.images.make_one(ImageTask(request(GOOD)))
        with FakeOpenAIServer(images=FakeImagesAPI(fail_always=CONTENT_POLICY)) as refusing:
            refused = ImageService(studio.store, backend(refusing.url))
            refused.make([ImageTask(request(BAD))], keep_going=True)
    at = gallery()
    notes = [c.value for c in at.caption if "Not checked by the safety filter" in c.value]
    assert len(notes) == 1 and "STUDIO_SAFETY_CHECKER" in notes[0]
    refusals = [w.value for w in at.warning if w.value.startswith("Refused by the image server")]
    assert len(refusals) == 1 and CONTENT_POLICY.code in refusals[0]
    assert not at.error


def _refused_page() -> None:
    from studio import ui
    from studio.core.errors import PromptRefusedError

    with ui.guard("Generating the image"):
        raise PromptRefusedError("dall-e-2 (OpenAI) refused the prompt (HTTP 400). Rephrase it.")


def test_a_refusal_on_a_page_is_shown_as_a_refused_card_not_an_error():
    at = run(AppTest.from_function(_refused_page, default_timeout=30))
    assert not at.error
    assert [w.value for w in at.warning] == [
        "Refused by the image server: dall-e-2 (OpenAI) refused the prompt (HTTP 400). Rephrase it."
    ]
