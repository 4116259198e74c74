"""The contract every chat backend meets: `ChatRequest` (messages, schema, sampling) in,
the text of one answer out (`ChatBackend`), and the default model a server is asked for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from studio.core.remote import DEFAULT_OPENAI_BASE_URL

Messages = list[dict[str, str]]
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[tuple[str, str], ...]  # (role, content) pairs
    schema: dict[str, Any] = field(hash=False)
    max_tokens: int = 512
    temperature: float = 0.7
    seed: int = 0
    repeat_penalty: float = 1.1  # small models repeat themselves without it

    def message_dicts(self) -> Messages:
        return [{"role": role, "content": content} for role, content in self.messages]


class ChatBackend(Protocol):
    """Anything that turns a chat request into the text of one answer."""

    def identity(self) -> str:
        """The model's name, as it goes into cache keys and provenance."""
        ...

    def complete(self, request: ChatRequest) -> str: ...


def default_model(base_url: str) -> str:
    """gpt-4o-mini on OpenAI itself; "" elsewhere: the only model the server serves."""
    return DEFAULT_OPENAI_MODEL if base_url.rstrip("/") == DEFAULT_OPENAI_BASE_URL else ""
