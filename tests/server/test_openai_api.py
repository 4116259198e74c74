"""OpenAI's Images API as its real client, `openai`, calls it: against a server on a free
localhost port over the demo model."""

from __future__ import annotations

import base64
import io
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import numpy as np
import openai
import pytest
import requests
from PIL import Image

from studio.core.metadata import parse_parameters, read_png_metadata
from studio.server.auth import parse_accounts
from studio.server.background import BackgroundServer
from studio.server.openai_images import signed
from tests.server.conftest import server_settings


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decoded(item) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json)))


def test_generate_stores_the_images_and_the_same_request_again_is_a_cache_hit(server, client):
    ask = {"model": "demo", "prompt": "a lighthouse at night", "n": 2, "size": "64x64",
           "response_format": "b64_json"}  # fmt: skip
    first = client.images.generate(**ask)
    assert len(first.data) == 2 and first.size == "64x64" and first.output_format == "png"
    assert abs(first.created - time.time()) < 60
    pictures = [decoded(item) for item in first.data]
    assert all(p.size == (64, 64) for p in pictures)
    seeds = [int(parse_parameters(p.info["parameters"])["Seed"]) for p in pictures]
    assert seeds == [42, 43]  # the settings' seed, then the next
    stored = server.state.studio.store.images()
    assert len(stored) == 2 and {(s.target, s.style) for s in stored} == {("api", "OpenAI")}
    _, provenance = read_png_metadata(server.state.studio.store.image_path(stored[0]).read_bytes())
    assert provenance["api"] == "v1/images/generations"
    calls = len(server.state.studio.backend.calls)
    again = client.images.generate(**ask)
    assert len(server.state.studio.backend.calls) == calls  # no render
    assert [i.b64_json for i in again.data] == [i.b64_json for i in first.data]
    assert len(server.state.studio.store.images()) == 2


def test_url_format_is_signed_and_works_without_credentials(tmp_path, shared_cache):
    settings = server_settings(tmp_path, shared_cache)
    with BackgroundServer(settings, accounts=parse_accounts("alice:pw")) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="pw", max_retries=0)
        assert [m.id for m in client.models.list()] == ["demo"]
        made = client.images.generate(  # dall-e-3: an alias of the model served; url by default
            model="dall-e-3", prompt="a red door", size="64x64", quality="hd", style="vivid",
            extra_body={"negative_prompt": "blurry", "seed": 7},
        )  # fmt: skip
        [item] = made.data
        assert item.b64_json is None and item.url.startswith(f"{server.url}/v1/images/files/")
        fetched = requests.get(item.url)  # no credentials: the signature lets it through
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        [stored] = server.state.studio.store.images()
        assert fetched.content == server.state.studio.store.image_path(stored).read_bytes()
        parameters = parse_parameters(Image.open(io.BytesIO(fetched.content)).info["parameters"])
        assert parameters["Negative prompt"] == "blurry" and parameters["Seed"] == "7"

        base, query = item.url.split("?")
        values = {k: v[0] for k, v in parse_qs(query).items()}
        forged = {**values, "signature": "0" * 64}
        assert requests.get(f"{base}?{urlencode(forged)}").status_code == 401
        later = {**values, "expires": str(int(values["expires"]) + 10)}
        assert requests.get(f"{base}?{urlencode(later)}").status_code == 401
        assert requests.get(base).status_code == 401
        assert requests.get(base, headers={"Authorization": "Bearer pw"}).status_code == 200
        assert int(values["expires"]) - time.time() > 3500  # an hour ahead
        path = urlsplit(item.url).path
        assert signed(server.state, path, query)
        stale = int(time.time()) - 1
        assert not signed(server.state, path, urlencode({**values, "expires": stale}))


def test_edit_repaints_the_masks_transparent_area_and_keeps_the_rest(server, client, picture):
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (8, 8, 40, 40))  # transparent: edit here, as OpenAI's masks
    made = client.images.edit(
        image=("picture.png", png_of(picture), "image/png"),
        mask=("mask.png", png_of(mask), "image/png"),
        prompt="a green square", size="64x64", response_format="b64_json",
    )  # fmt: skip
    [item] = made.data
    after = np.asarray(decoded(item).convert("RGB"))
    before = np.asarray(picture)
    keep = np.ones((64, 64), dtype=bool)
    keep[8:40, 8:40] = False
    assert np.array_equal(before[keep], after[keep])
    assert not np.array_equal(before[~keep], after[~keep])
    [stored] = server.state.studio.store.images()
    assert stored.target == "api" and stored.mode == "inpaint"

    # no mask: the image's own transparent area is edited (sent as OpenAI's `image[]` list)
    holed = picture.convert("RGBA")
    holed.paste((0, 0, 0, 0), (8, 8, 40, 40))
    again = client.images.edit(
        image=[("holed.png", png_of(holed), "image/png"), ("other.png", png_of(picture))],
        prompt="a green square", size="64x64", response_format="b64_json",
    )  # fmt: skip
    after = np.asarray(decoded(again.data[0]).convert("RGB"))
    assert np.array_equal(before[keep], after[keep])
    assert again.model_extra["notes"] == ["2 images given; the first was used"]


def test_edit_without_transparency_redraws_the_whole_image(client, picture):
    made = client.images.edit(image=("p.png", png_of(picture), "image/png"), prompt="at dusk",
                              response_format="b64_json")  # fmt: skip
    result = decoded(made.data[0])
    assert result.size == (64, 64)  # the image's own size when none is asked
    assert parse_parameters(result.info["parameters"])["Mode"] == "img2img"
    assert "whole image" in made.model_extra["notes"][0]


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the client's, not ours
def test_variations_keep_the_prompt_inside_the_png(server, client):
    source = client.images.generate(prompt="a quiet harbour", size="64x64",
                                    response_format="b64_json")  # fmt: skip
    png = base64.b64decode(source.data[0].b64_json)
    varied = client.images.create_variation(
        image=("harbour.png", png, "image/png"),
        n=2,
        response_format="b64_json",
        extra_body={"strength": 0.5},  # the extension: 2 steps x 0.35 (the default) makes none
    )
    assert len(varied.data) == 2
    for item in varied.data:
        parameters = parse_parameters(decoded(item).info["parameters"])
        assert parameters["Prompt"] == "a quiet harbour" and parameters["Mode"] == "variation"
    assert sorted(s.mode for s in server.state.studio.store.images()) == [
        "txt2img", "variation", "variation"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("ask", "words"),
    [
        ({"n": 11}, ["`n`", "10"]),
        ({"size": "100x100"}, ["`size`", "divisible by 8"]),
        ({"size": "4096x4096"}, ["`size`", "2048"]),
        ({"size": "big"}, ["`size`", "WIDTHxHEIGHT"]),
        ({"response_format": "png"}, ["`response_format`", "b64_json"]),
        ({"prompt": "x" * 2500}, ["prompt", "2,000"]),
        ({"prompt": "  "}, ["prompt is empty"]),
        ({"extra_body": {"seed": -5}}, ["`seed`"]),
    ],
)
def test_bad_requests_are_400s_that_name_the_field(client, ask, words):
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.generate(**{"prompt": "a cat", "size": "64x64", **ask})
    assert caught.value.status_code == 400
    message = caught.value.body["message"]
    assert all(word in message for word in words), message
    assert caught.value.body["type"] == "invalid_request_error"


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_bad_uploads_are_400s_that_name_the_field(client, picture):
    image = ("p.png", png_of(picture), "image/png")
    with pytest.raises(openai.BadRequestError, match=r"`mask` is 32x32 but `image` is 64x64"):
        client.images.edit(image=image, mask=("m.png", png_of(picture.resize((32, 32)))),
                           prompt="x")  # fmt: skip
    with pytest.raises(openai.BadRequestError, match=r"`image`"):
        client.images.create_variation(image=("notes.txt", b"not a picture", "text/plain"))
    with pytest.raises(openai.BadRequestError, match=r"`mask` has no transparent area"):
        client.images.edit(image=image, mask=("m.png", png_of(Image.new("L", (64, 64)))),
                           prompt="x")  # fmt: skip
    with pytest.raises(openai.BadRequestError, match=r"`n`"):
        client.images.create_variation(image=image, n=0)


def test_models_list_and_unknown_models(server, client):
    [served] = client.models.list().data
    assert (served.id, served.object, served.owned_by) == ("demo", "model", "series-studio")
    assert client.models.retrieve("demo").id == "demo"
    assert client.models.retrieve("gpt-image-1").id == "gpt-image-1"  # an alias
    with pytest.raises(openai.NotFoundError) as caught:
        client.images.generate(model="sdxl-turbo", prompt="a cat", size="64x64")
    assert "`sdxl-turbo`" in caught.value.body["message"]
    assert "`demo`" in caught.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("sdxl-turbo")
    missing = requests.get(f"{server.url}/v1/images/files/{'0' * 64}.png")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
