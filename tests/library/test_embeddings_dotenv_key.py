"""An OpenAI-compatible embeddings server gets OPENAI_API_KEY from `.env` too, and an error it
answers with never quotes the key back."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio.core.errors import EmbeddingError
from studio.library.embeddings import OpenAIEmbeddings
from tests.support.fakes import FakeOpenAIServer
from tests.support.key_server import KeyQuotingServer

KEY = "sk-dotenv-embeddings-5d2e-never-show-me"


def test_a_key_only_in_dotenv_reaches_the_embeddings_server():
    Path(".env").write_text(f"OPENAI_API_KEY={KEY}\n")
    with FakeOpenAIServer() as server:  # no /v1/embeddings: a 404, after the key was sent
        embedder = OpenAIEmbeddings(server.url, "m")
        with pytest.raises(EmbeddingError) as caught:
            embedder.passages(["a lighthouse at night"])
    assert server.authorizations == [f"Bearer {KEY}"]
    assert "404" in str(caught.value)


def test_a_refused_key_is_not_quoted_back_in_the_error():
    Path(".env").write_text(f"OPENAI_API_KEY={KEY}\n")
    with KeyQuotingServer() as server, pytest.raises(EmbeddingError) as caught:
        OpenAIEmbeddings(server.url, "m").passages(["a lighthouse at night"])
    message = str(caught.value)
    assert "Incorrect API key provided: ***" in message and KEY not in message
