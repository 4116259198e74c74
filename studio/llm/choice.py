"""Which chat backend the settings pick, decided without a network call: a server when
llm_base_url or OPENAI_API_KEY (from the environment or .env) is set, else the embedded model.
`make_backend` makes it; `default_concurrency` says how many calls it takes at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from studio.core.config import Settings, openai_api_key, source_of
from studio.core.remote import DEFAULT_OPENAI_BASE_URL, redact_url
from studio.llm.base import ChatBackend, default_model
from studio.llm.embedded import EMBEDDED_MODEL_NAME, EmbeddedBackend
from studio.llm.openai_compat import OpenAIBackend


@dataclass(frozen=True)
class BackendChoice:
    """The backend the settings pick, decided without a network call (for `make_backend` and
    for the dashboard's sidebar, which must name the backend actually used)."""

    kind: str  # "openai" (any OpenAI-compatible server) or "embedded"
    base_url: str = field(default="", repr=False)  # may hold credentials: show `url`
    model: str = ""  # the model asked for; "" on a server: the only model it serves

    @property
    def url(self) -> str:
        return redact_url(self.base_url)

    def describe(self) -> str:
        """One line for people, e.g. "OpenAI-compatible server `https://...` (model x)"."""
        if self.kind == "embedded":
            from studio.llm.embedded import embedded_placement

            where = embedded_placement()
            return f"embedded ({self.model or EMBEDDED_MODEL_NAME}) {where}"
        model = f"model {self.model}" if self.model else "the model it serves"
        return f"OpenAI-compatible server `{self.url}` ({model})"


def choose_backend(settings: Settings) -> BackendChoice:
    """A server when llm_base_url (OPENAI_BASE_URL, --llm-base-url) or OPENAI_API_KEY (the
    environment's or .env's) is set, else the embedded model."""
    if settings.llm_base_url or openai_api_key():
        base_url = settings.llm_base_url or DEFAULT_OPENAI_BASE_URL
        return BackendChoice("openai", base_url, settings.llm_model or default_model(base_url))
    return BackendChoice("embedded", model=EMBEDDED_MODEL_NAME)


def backend_description(settings: Settings) -> str:
    """The backend `make_backend(settings)` makes, in words, credentials left out."""
    return choose_backend(settings).describe()


def make_backend(settings: Settings, on_status: Callable[[str], None] | None = None) -> ChatBackend:
    """The backend `choose_backend(settings)` picks; `on_status` hears what a server call waits
    for (see OpenAIBackend)."""
    choice = choose_backend(settings)
    if choice.kind == "openai":
        return OpenAIBackend(
            choice.model,
            choice.base_url,
            timeout=settings.llm_timeout,
            on_status=on_status,
            url_setting=source_of(settings, "llm_base_url"),  # messages name where it was set
            concurrency=default_concurrency(settings),
            fixed_concurrency=bool(settings.llm_concurrency),
        )
    return EmbeddedBackend(settings.cache_dir, slots=default_concurrency(settings))


# LLM calls at once when the setting says 0: a server answers many requests together (OpenAI,
# vLLM; Ollama and llama.cpp queue what they cannot take); the embedded model on a 2-core machine
# gains nothing from parallel slots and its answers would then depend on timing.
SERVER_CONCURRENCY = 8
EMBEDDED_CONCURRENCY = 1


def default_concurrency(settings: Settings) -> int:
    """How many LLM calls the batch job makes at once: llm_concurrency, or the backend's
    default when it is 0."""
    if settings.llm_concurrency:
        return settings.llm_concurrency
    if choose_backend(settings).kind == "openai":
        return SERVER_CONCURRENCY
    return EMBEDDED_CONCURRENCY
