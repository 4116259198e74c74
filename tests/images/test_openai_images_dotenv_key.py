"""The OpenAI Images backend finds OPENAI_API_KEY where the settings are: the environment, else
`.env` in the working folder (the tests run in tmp_path, so `.env` is the test's own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.core.config import load_settings
from studio.core.errors import ImagesUnavailableError
from studio.core.params import RenderRequest
from studio.images.backends.openai_images import OpenAIImagesBackend
from studio.images.backends.registry import open_image_backend
from tests.support.fakes import FakeImagesAPI, FakeOpenAIServer

KEY = "sk-dotenv-images-93b1-never-show-me"
SQUARE = RenderRequest("a lighthouse at night", width=1024, height=1024)


@pytest.fixture(autouse=True)
def no_images_settings(monkeypatch):
    for name in ("STUDIO_IMAGES_BASE_URL", "STUDIO_IMAGES_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def test_a_key_only_in_dotenv_reaches_the_images_server():
    with FakeOpenAIServer(images=FakeImagesAPI(key=KEY)) as server:
        Path(".env").write_text(f"OPENAI_BASE_URL={server.url}\nOPENAI_API_KEY={KEY}\n")
        backend = open_image_backend(load_settings({"image_model": "openai:gpt-image-1"}))
        assert isinstance(backend, OpenAIImagesBackend) and backend.where() == server.url
        [image] = backend.render([SQUARE])
    assert image.size == (1024, 1024)
    assert [call.authorization for call in server.images.calls] == [f"Bearer {KEY}"]


def test_openai_itself_takes_a_key_from_dotenv_as_its_key():
    backend = OpenAIImagesBackend("gpt-image-1")  # OpenAI's own server; no key anywhere
    with pytest.raises(ImagesUnavailableError, match="set OPENAI_API_KEY"):
        backend._check_key()
    Path(".env").write_text(f"OPENAI_API_KEY={KEY}\n")
    OpenAIImagesBackend("gpt-image-1")._check_key()  # no network: only whether a key is there
