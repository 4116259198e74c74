"""OpenAI Images and the negative prompt: never dropped silently. It is folded into the prompt
sent ("<prompt> Avoid: <negative prompt>."), it is in the cache key, and the stored PNG keeps it
in its A1111 parameters and says in its provenance how it was used. Against tests.support.fakes'
Images API on 127.0.0.1."""

from __future__ import annotations

import pytest
from PIL import Image

from studio.core.errors import ParameterError
from studio.core.metadata import parse_parameters, read_png_metadata
from studio.core.params import RenderRequest
from studio.images.backends.openai_images import (
    FOLDED,
    NOT_SENT,
    folded_prompt,
)
from tests.images.test_openai_images import (  # noqa: F401 - fixtures
    make,
    no_images_settings,
    server,
)
from tests.support.catalogs import small_studio
from tests.support.fakes import fake_image_colour

PROMPT = "a lighthouse at night"
FOLDED_PROMPT = "a lighthouse at night Avoid: fog, text."


def test_the_negative_prompt_is_folded_into_the_prompt():
    assert folded_prompt(RenderRequest(PROMPT, negative_prompt="fog, text")) == FOLDED_PROMPT
    # its own full stop and extra spaces are not doubled
    assert folded_prompt(RenderRequest(PROMPT, negative_prompt=" fog,  text. ")) == FOLDED_PROMPT
    assert folded_prompt(RenderRequest(PROMPT, negative_prompt="  ")) == PROMPT
    assert folded_prompt(RenderRequest(PROMPT)) == PROMPT


def test_the_server_receives_the_folded_prompt(server):  # noqa: F811
    request = RenderRequest(PROMPT, negative_prompt="fog, text", width=1024, height=1024)
    [image] = make(server.url).render([request])
    [call] = server.images.calls
    assert call.fields["prompt"] == FOLDED_PROMPT
    assert image.getpixel((10, 10)) == fake_image_colour(FOLDED_PROMPT)


def test_the_cache_key_differs_with_and_without_a_negative_prompt():
    backend = make("http://images.local/v1")
    plain = RenderRequest(PROMPT, width=1024, height=1024)
    negative = RenderRequest(PROMPT, negative_prompt="fog, text", width=1024, height=1024)
    assert backend.cache_key(plain) != backend.cache_key(negative)
    assert backend.cache_key(negative) != backend.cache_key(
        RenderRequest(PROMPT, negative_prompt="rain", width=1024, height=1024)
    )
    # no negative prompt: the key is what it was before (images already made stay cache hits)
    assert "negative_prompt" not in backend.provenance(plain)


def test_the_folded_prompt_counts_towards_the_length_limit():
    backend = make("http://images.local/v1", "dall-e-2")  # at most 1,000 characters
    request = RenderRequest("x" * 990, negative_prompt="fog, text", width=512, height=512)
    with pytest.raises(ParameterError, match="negative prompt folded into it") as error:
        backend.render([request])
    assert "1,000 characters" in str(error.value)


def test_a_variation_sends_no_negative_prompt_and_says_so(server):  # noqa: F811
    backend = make(server.url, "dall-e-2")
    request = RenderRequest("", negative_prompt="fog", mode="variation", strength=0.5,
                            init_image="ab" * 32, width=512, height=512)  # fmt: skip
    provenance = backend.provenance(request)
    assert provenance["negative_prompt"] == NOT_SENT and "prompt_sent" not in provenance
    assert "prompt" not in backend.sent_fields(request)


def test_the_stored_png_keeps_the_negative_prompt_and_says_how_it_was_used(server, tmp_path):  # noqa: F811
    with small_studio(
        tmp_path / "data", tmp_path / "cache", image_model="openai:gpt-image-1",
        images_base_url=server.url, width=1024, height=1024,
    ) as studio:  # fmt: skip
        made = studio.generate(PROMPT, negative_prompt="fog, text", seed=3)
        plain = studio.generate(PROMPT, seed=3)
        assert plain.key != made.key and not plain.cached
        again = studio.generate(PROMPT, negative_prompt="fog, text", seed=3)
        assert again.cached and again.key == made.key
    assert [call.fields["prompt"] for call in server.images.calls] == [FOLDED_PROMPT, PROMPT]
    parameters, provenance = read_png_metadata(Image.open(made.path))
    assert parameters is not None and provenance is not None
    assert "Negative prompt: fog, text" in parameters
    assert parse_parameters(parameters)["Negative prompt"] == "fog, text"
    assert provenance["negative_prompt"] == FOLDED
    assert provenance["prompt_sent"] == FOLDED_PROMPT
    assert provenance["request"]["prompt"] == PROMPT  # the request as asked, not as folded
    _, plain_provenance = read_png_metadata(Image.open(plain.path))
    assert "negative_prompt" not in plain_provenance
