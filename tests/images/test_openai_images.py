"""The OpenAI Images backend against tests.support.fakes' Images API on 127.0.0.1: generate, edit,
variation, capability refusals, and every failure the brief names, with its message.

Timeouts and backoffs are fractions of a second; nothing leaves the machine.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import replace

import pytest
from PIL import Image

from studio.core.config import Settings, load_settings
from studio.core.errors import (
    ConfigError,
    ImageInputError,
    ImagesUnavailableError,
    OpenAIImagesError,
    ParameterError,
    PromptRefusedError,
    RateLimitedError,
    RenderError,
)
from studio.core.inputs import content_hash, png_bytes
from studio.core.params import RenderRequest
from studio.images.backends.openai_images import OpenAIImagesBackend, openai_mask
from studio.images.backends.registry import open_image_backend
from tests.support.fakes import (
    CONTENT_POLICY,
    MODERATION_BLOCKED,
    RATE_LIMITED,
    FakeImagesAPI,
    FakeOpenAIServer,
    ImageFailure,
    fake_image_colour,
)

KEY = "sk-test-7f3a9c-do-not-show"
PROMPT = "a lighthouse at night"
SQUARE = RenderRequest(PROMPT, width=1024, height=1024)


@pytest.fixture(autouse=True)
def no_images_settings(monkeypatch):
    for name in ("STUDIO_IMAGES_BASE_URL", "STUDIO_IMAGES_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


def make(url: str, model: str = "gpt-image-1", **options) -> OpenAIImagesBackend:
    options = {"api_key": KEY, "timeout": 2.0, "backoff": 0.01, **options}
    return OpenAIImagesBackend(model, url, **options)


class Inputs(dict):
    """Input images by sha256, as the catalog keeps them: `inputs=Inputs()` to render."""

    def add(self, image: Image.Image) -> str:
        sha = content_hash(png_bytes(image))
        self[sha] = image
        return sha


def half_mask(size: int = 1024) -> Image.Image:
    """White (repaint) on the left half, black (keep) on the right."""
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (0, 0, size // 2, size))
    return mask


def no_secret(text: str, *secrets: str) -> bool:
    return all(secret not in text for secret in (KEY, *secrets))


# Settings --------------------------------------------------------------------------------------


def test_image_model_setting_picks_the_backend_and_its_server(monkeypatch):
    monkeypatch.setenv("STUDIO_IMAGE_MODEL", "openai:gpt-image-1")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://llm.local:8000/v1")
    backend = open_image_backend(load_settings())
    assert isinstance(backend, OpenAIImagesBackend)
    assert backend.model == "gpt-image-1" and backend.label == "gpt-image-1 (OpenAI)"
    assert backend.where() == "http://llm.local:8000/v1"  # the LLM's server when no other is set
    assert not backend.placeholder and backend.notes == []
    caps = backend.capabilities
    assert caps.modes == ("txt2img", "img2img", "inpaint")
    assert caps.sizes == ((1024, 1024), (1536, 1024), (1024, 1536))
    assert caps.samplers == () and not caps.seeds and not caps.negative_prompt
    assert not caps.steps_and_cfg and caps.max_batch == 1

    monkeypatch.setenv("STUDIO_IMAGES_BASE_URL", "https://images.local/v1")
    monkeypatch.setenv("STUDIO_IMAGES_TIMEOUT", "42")
    backend = open_image_backend(load_settings())
    assert backend.where() == "https://images.local/v1" and backend.timeout == 42


def test_settings_that_cannot_work_are_refused(monkeypatch):
    with pytest.raises(ConfigError, match="names no model"):
        OpenAIImagesBackend.from_settings(Settings(image_model="openai:"))
    monkeypatch.setenv("STUDIO_IMAGE_MODEL", "openai:dall-e-3")
    monkeypatch.setenv("STUDIO_IMAGES_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match=r"STUDIO_IMAGES_TIMEOUT sets images_timeout to 'soon'"):
        load_settings()
    monkeypatch.setenv("STUDIO_IMAGES_TIMEOUT", "-3")
    with pytest.raises(ConfigError, match=r"`images_timeout` has to be a positive .*STUDIO_IMAGES"):
        load_settings()


def test_capabilities_per_model():
    dalle3 = make("http://x/v1", "dall-e-3").capabilities
    assert dalle3.modes == ("txt2img",)
    assert not (dalle3.strength or dalle3.steps_and_cfg or dalle3.negative_prompt or dalle3.seeds)
    assert dalle3.sizes == ((1024, 1024), (1792, 1024), (1024, 1792))
    dalle2 = make("http://x/v1", "dall-e-2").capabilities
    assert dalle2.modes == ("txt2img", "inpaint", "variation")
    assert dalle2.sizes == ((256, 256), (512, 512), (1024, 1024))
    other = make("http://x/v1", "flux-schnell")
    assert other.capabilities.modes == ("txt2img",) and other.capabilities.sizes == ()
    assert "not an OpenAI image model the studio knows" in other.notes[0]
    assert make("http://x/v1", "gpt-image-1-mini").capabilities.modes == (
        "txt2img",
        "img2img",
        "inpaint",
    )
    assert make("http://x/v1").count_tokens("three short words") == 3


# Making images ---------------------------------------------------------------------------------


def test_generate_with_gpt_image_1(server):
    steps = []
    request = RenderRequest(PROMPT, negative_prompt="fog", width=1536, height=1024, seed=7)
    [image] = make(server.url).render([request], on_step=lambda *a: steps.append(a))
    assert image.mode == "RGB" and image.size == (1536, 1024)
    sent = f"{PROMPT} Avoid: fog."  # the negative prompt, folded into the prompt
    assert image.getpixel((10, 10)) == fake_image_colour(sent)
    assert "revised_prompt" not in image.info
    assert steps == [(1, 1, None)]
    [call] = server.images.calls
    assert call.endpoint == "generations"
    assert call.fields == {"model": "gpt-image-1", "prompt": sent, "n": 1, "size": "1536x1024"}
    assert call.authorization == f"Bearer {KEY}"  # the key, sent as OpenAI wants it


def test_dall_e_3_returns_its_revised_prompt(server):
    request = RenderRequest(PROMPT, width=1792, height=1024)
    [image] = make(server.url, "dall-e-3").render([request])
    assert image.size == (1792, 1024)
    assert image.info["revised_prompt"] == f"A detailed picture of {PROMPT}"
    [call] = server.images.calls
    assert call.fields["response_format"] == "b64_json" and call.fields["model"] == "dall-e-3"


def test_inpaint_sends_the_mask_transparent_where_ours_is_white(server):
    inputs = Inputs()
    original = Image.new("RGB", (1024, 1024), (10, 120, 200))
    mask = half_mask()
    request = RenderRequest(
        "a red door",
        mode="inpaint",
        strength=0.8,
        init_image=inputs.add(original),
        mask_image=inputs.add(mask),
        width=1024,
        height=1024,
    )
    [image] = make(server.url).render([request], inputs=inputs.__getitem__)
    [call] = server.images.calls
    assert call.endpoint == "edits"
    assert call.fields == {"model": "gpt-image-1", "prompt": "a red door", "n": "1",
                           "size": "1024x1024"}  # fmt: skip
    sent_mask = call.files["mask"]
    assert sent_mask.mode == "RGBA" and sent_mask.size == mask.size
    transparent = sent_mask.getchannel("A").point(lambda a: 255 if a == 0 else 0)
    assert transparent.tobytes() == mask.tobytes()
    assert call.files["image"].convert("RGB").getpixel((0, 0)) == (10, 120, 200)
    # The fake repaints where the mask is transparent, and keeps the rest.
    assert image.getpixel((100, 500)) == fake_image_colour("a red door")
    assert image.getpixel((900, 500)) == (10, 120, 200)


def test_openai_mask_alone():
    mask = Image.new("L", (4, 1))
    mask.putdata([0, 127, 128, 255])
    assert list(openai_mask(mask).getchannel("A").tobytes()) == [255, 255, 0, 0]


def test_img2img_is_an_edit_without_a_mask(server):
    inputs = Inputs()
    init = inputs.add(Image.new("RGB", (1536, 1024), "white"))
    request = RenderRequest(
        "stormy sea", mode="img2img", strength=0.6, init_image=init, width=1536, height=1024
    )
    [image] = make(server.url).render([request], inputs=inputs.get)
    assert image.size == (1536, 1024)
    [call] = server.images.calls
    assert call.endpoint == "edits" and set(call.files) == {"image"}
    assert call.fields["prompt"] == "stormy sea" and "strength" not in call.fields


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the client's, for DALL-E 2
def test_dall_e_2_variation(server):
    inputs = Inputs()
    init = inputs.add(Image.new("RGB", (512, 512), (200, 30, 30)))
    request = RenderRequest("", mode="variation", strength=0.5, init_image=init, width=512,
                            height=512)  # fmt: skip
    [image] = make(server.url, "dall-e-2").render([request], inputs=inputs.get)
    assert image.size == (512, 512) and image.getpixel((3, 3)) == (200, 30, 30)
    [call] = server.images.calls
    assert call.endpoint == "variations" and "prompt" not in call.fields
    assert call.fields == {"model": "dall-e-2", "n": "1", "response_format": "b64_json",
                           "size": "512x512"}  # fmt: skip


# Refused before any call -----------------------------------------------------------------------


def test_what_a_model_cannot_do_is_refused_before_any_call(server):
    inputs = Inputs()
    init = inputs.add(Image.new("RGB", (1024, 1024)))
    mask = inputs.add(half_mask())
    inpaint = RenderRequest("x", mode="inpaint", strength=1, init_image=init, mask_image=mask)
    with pytest.raises(ParameterError, match=r"dall-e-3 \(OpenAI\) cannot do inpaint"):
        make(server.url, "dall-e-3").render([inpaint], inputs=inputs.get)
    with pytest.raises(ParameterError, match="makes only these sizes: 1024x1024, 1536x1024"):
        make(server.url).render([RenderRequest(PROMPT, width=512, height=512)])
    img2img = RenderRequest("x", mode="img2img", strength=0.5, init_image=init)
    with pytest.raises(ParameterError, match="dall-e-2 .* cannot do img2img"):
        make(server.url, "dall-e-2").render([img2img], inputs=inputs.get)
    with pytest.raises(ParameterError, match="at most 1,000 characters"):
        make(server.url, "dall-e-2").render([RenderRequest("word " * 300, width=256, height=256)])
    wide = inputs.add(Image.new("RGB", (768, 512)))
    variation = RenderRequest("", mode="variation", strength=0.5, init_image=wide)
    with pytest.raises(ParameterError, match="square images only.*768x512"):
        make(server.url, "dall-e-2").render([variation], inputs=inputs.get)
    # A batch with one bad request makes no call at all.
    with pytest.raises(ParameterError):
        make(server.url).render([SQUARE, RenderRequest(PROMPT, width=512, height=512)])
    assert server.images.calls == []


def test_missing_or_bad_inputs_are_refused_before_any_call(server):
    inputs = Inputs()
    init = inputs.add(Image.new("RGB", (1024, 1024)))
    small_mask = inputs.add(half_mask(512))
    request = RenderRequest("x", mode="img2img", strength=0.5, init_image=init, width=1024,
                            height=1024)  # fmt: skip
    with pytest.raises(RenderError, match="no init image"):
        make(server.url).render([request])
    with pytest.raises(ImageInputError, match="not among the studio's input images"):
        make(server.url).render([request], inputs=Inputs().__getitem__)
    inpaint = replace(request, mode="inpaint", strength=1, mask_image=small_mask)
    with pytest.raises(ImageInputError, match="mask is 512x512 but the image is 1024x1024"):
        make(server.url).render([inpaint], inputs=inputs.get)
    assert server.images.calls == []


# Cache keys and provenance ---------------------------------------------------------------------


def test_cache_key_covers_what_is_sent_and_the_take():
    backend = make("http://user:pw@images.local/v1")
    key = backend.cache_key(SQUARE)
    assert key == make("http://elsewhere/v1").cache_key(SQUARE)
    # Not sent, so no new call: sampler settings. (A negative prompt is: folded into the prompt.)
    same = RenderRequest(PROMPT, steps=50, cfg=3.0, width=1024, height=1024)
    assert backend.cache_key(same) == key
    # Another prompt, size, model or take (seed) is another paid call.
    assert backend.cache_key(RenderRequest("other", width=1024, height=1024)) != key
    assert backend.cache_key(RenderRequest(PROMPT, width=1536, height=1024)) != key
    assert backend.cache_key(RenderRequest(PROMPT, width=1024, height=1024, seed=1)) != key
    assert make("http://x/v1", "dall-e-3").cache_key(SQUARE) != key
    provenance = backend.provenance(SQUARE)
    assert provenance["image_model"] == {"model": "gpt-image-1", "kind": "openai", "revision": ""}
    assert provenance["placeholder"] is False
    assert provenance["base_url"] == "http://images.local/v1"
    assert no_secret(json.dumps(provenance) + key, "pw")


# Failures --------------------------------------------------------------------------------------


def test_no_key_for_openai_says_to_set_it():
    backend = OpenAIImagesBackend("gpt-image-1")  # OpenAI itself; no OPENAI_API_KEY (conftest)
    assert backend.where() == "https://api.openai.com/v1"
    with pytest.raises(ImagesUnavailableError, match="set OPENAI_API_KEY"):
        backend.render([SQUARE])  # refused before any call: nothing leaves the machine


def test_a_refused_key_is_never_shown(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer(images=FakeImagesAPI(key="sk-the-right-one")) as server:
        with pytest.raises(ImagesUnavailableError) as caught:
            OpenAIImagesBackend("gpt-image-1", server.url).render([SQUARE])
        assert server.images.calls[0].authorization == f"Bearer {KEY}"  # read from the env
    message = str(caught.value)
    assert "refused the request" in message and "check OPENAI_API_KEY" in message
    assert "invalid_api_key" in message and no_secret(message)  # the server quoted it; we don't


@pytest.mark.parametrize(
    ("model", "failure"), [("dall-e-3", CONTENT_POLICY), ("gpt-image-1", MODERATION_BLOCKED)]
)
def test_a_refused_prompt_says_to_rephrase_and_is_not_retried(model, failure):
    with FakeOpenAIServer(images=FakeImagesAPI(fail_always=failure)) as server:
        with pytest.raises(PromptRefusedError) as caught:
            make(server.url, model).render([SQUARE])
        assert len(server.images.calls) == 1
    message = str(caught.value)
    assert f"{model} (OpenAI) refused the prompt" in message and "Rephrase it" in message
    assert failure.code in message and failure.message[:40] in message
    assert no_secret(message)


def test_rate_limited_twice_then_an_image(caplog):
    images = FakeImagesAPI(fail_next=[RATE_LIMITED, RATE_LIMITED])
    with FakeOpenAIServer(images=images) as server, caplog.at_level(logging.WARNING):
        [image] = make(server.url, tries=3).render([SQUARE])
    assert image.getpixel((0, 0)) == fake_image_colour(PROMPT)
    assert len(images.calls) == 3
    retries = [r.getMessage() for r in caplog.records if "trying again" in r.getMessage()]
    assert len(retries) == 2 and "HTTP 429 rate_limit_exceeded" in retries[0]
    assert "try 2 of 3" in retries[0] and all(no_secret(line) for line in retries)


def test_rate_limited_always_gives_up_saying_try_again_later():
    with FakeOpenAIServer(images=FakeImagesAPI(fail_always=RATE_LIMITED)) as server:
        lines: list[str] = []
        with pytest.raises(RateLimitedError) as caught:
            make(server.url, tries=3, on_status=lines.append).render([SQUARE])
        assert len(server.images.calls) == 3 and len(lines) == 2
    message = str(caught.value)
    assert "429" in message and "3 tries" in message and "try again later" in message
    assert no_secret(message)


def test_rate_limited_gives_up_within_the_deadline():
    """A Retry-After past the deadline: no sleeping into it, one try, then the advice."""
    wait_long = ImageFailure(429, "rate_limit_exceeded", "Slow down.", retry_after=30)
    with FakeOpenAIServer(images=FakeImagesAPI(fail_always=wait_long)) as server:
        started = time.monotonic()
        with pytest.raises(RateLimitedError, match="try again later"):
            make(server.url, tries=5, deadline=1.0).render([SQUARE])
        assert time.monotonic() - started < 1.0
        assert len(server.images.calls) == 1


def test_out_of_quota_is_not_retried():
    no_credit = ImageFailure(429, "insufficient_quota", "You exceeded your current quota.")
    with FakeOpenAIServer(images=FakeImagesAPI(fail_always=no_credit)) as server:
        with pytest.raises(RateLimitedError, match="out of credit.*billing"):
            make(server.url).render([SQUARE])
        assert len(server.images.calls) == 1


def test_a_server_error_is_retried_then_reported():
    with FakeOpenAIServer(images=FakeImagesAPI(fail_next=[500])) as server:
        assert make(server.url).render([SQUARE])[0].size == (1024, 1024)
    failing = FakeOpenAIServer(images=FakeImagesAPI(fail_always=503))
    with failing as server, pytest.raises(OpenAIImagesError, match="kept failing.*HTTP 503"):
        make(server.url, tries=3).render([SQUARE])
    assert len(failing.images.calls) == 3


def test_an_unknown_model_names_the_setting():
    with FakeOpenAIServer(images=FakeImagesAPI(models=["dall-e-2"])) as server:
        with pytest.raises(ImagesUnavailableError) as caught:
            make(server.url).render([SQUARE])
        assert len(server.images.calls) == 1
    message = str(caught.value)
    assert "no model 'gpt-image-1'" in message and "model_not_found" in message
    assert "image_model (STUDIO_IMAGE_MODEL)" in message and "openai:dall-e-2" in message


def test_a_server_that_never_answers_is_not_asked_twice():
    """A timed-out request may still be making (and charging for) its image."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        started = time.monotonic()
        with pytest.raises(ImagesUnavailableError) as caught:
            make(url, timeout=0.3).render([SQUARE])
        assert time.monotonic() - started < 1.5
    message = str(caught.value)
    assert f"The image server at {url} did not answer within 0.3 s" in message
    assert "not asked again" in message and "images_timeout (STUDIO_IMAGES_TIMEOUT)" in message


def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        return listener.getsockname()[1]


def test_a_server_that_is_down_names_the_setting_and_never_its_credentials(monkeypatch):
    port = closed_port()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    settings = Settings(
        image_model="openai:gpt-image-1", llm_base_url=f"http://user:s3cret@127.0.0.1:{port}/v1"
    )
    backend = OpenAIImagesBackend.from_settings(settings)
    backend.backoff = 0.01
    lines: list[str] = []
    backend.on_status = lines.append
    with pytest.raises(ImagesUnavailableError) as caught:
        backend.render([SQUARE])
    message = str(caught.value)
    assert f"No image server answered at http://127.0.0.1:{port}/v1" in message
    assert "3 tries" in message and "llm_base_url (OPENAI_BASE_URL)" in message
    assert "images_base_url (STUDIO_IMAGES_BASE_URL) for images alone" in message
    assert len(lines) == 2
    for text in [message, *lines, json.dumps(backend.provenance(SQUARE)), backend.where()]:
        assert no_secret(text, "s3cret", "user:"), text


def test_the_settings_that_decide_the_backend_make_the_same_backend(monkeypatch):
    """The dashboard shares one backend per `backend_settings`: they must carry all it reads."""
    from dataclasses import replace

    from studio.images.backends.registry import backend_settings

    monkeypatch.setenv("STUDIO_IMAGE_MODEL", "openai:dall-e-2")
    monkeypatch.setenv("STUDIO_IMAGES_BASE_URL", "https://images.local/v1")
    monkeypatch.setenv("STUDIO_IMAGES_TIMEOUT", "42")
    settings = load_settings()
    shared = open_image_backend(replace(Settings(), **dict(backend_settings(settings))))
    assert shared.where() == "https://images.local/v1" and shared.timeout == 42
