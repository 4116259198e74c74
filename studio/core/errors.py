"""The studio's error hierarchy: every message says what went wrong and how to fix it.

The CLI turns a `StudioError` into one line and an exit code; anything else is a bug.
"""


class StudioError(Exception):
    """An expected failure whose message tells the user what to do next."""


class ConfigError(StudioError):
    """A setting has a value that cannot work."""


class DatasetError(StudioError):
    """The series data cannot be used at all (bad rows alone never raise this)."""


class LLMError(StudioError):
    """The LLM could not produce a usable answer."""


class LLMUnavailableError(LLMError):
    """No LLM can be reached: no server answers and the embedded model is missing."""


class LLMInterrupted(KeyboardInterrupt):
    """An LLM call given up because the run was interrupted (Ctrl-C), raised in each thread
    that was waiting for one. A KeyboardInterrupt, not a StudioError: nothing carries on."""


class RenderError(StudioError):
    """The image model could not be loaded or could not render."""


class ContentRefusedError(RenderError):
    """The image backend's own safety system refused the request (or its input image)."""


class ImageInputError(StudioError):
    """An image given to the studio (an upload, a file) cannot be read."""


class CatalogError(StudioError):
    """The catalog cannot be opened or written; the message names the file and the fix."""


def one_line(text: str, name: str, limit: int, empty: str) -> str:
    """`text` on one line; a `StudioError` when it is empty (saying `empty`) or longer than
    `limit` characters (naming it `name`): the check of every short text a person types."""
    text = " ".join(str(text or "").split())
    if not text:
        raise StudioError(empty)
    if len(text) > limit:
        raise StudioError(f"The {name} is {len(text):,} characters long; keep it under {limit:,}.")
    return text


class RenderCancelledError(RenderError):
    """A render was cancelled by whoever asked for it; nothing was stored."""


class ParameterError(RenderError):
    """A render parameter is outside what the studio accepts."""


class LoraError(RenderError):
    """A LoRA that is not there, is not a LoRA, or does not fit the image model."""


class OpenAIImagesError(RenderError):
    """OpenAI Images could not make an image; the message says what to do."""


class ImagesUnavailableError(OpenAIImagesError):
    """No usable Images API: no key, a refused key, no server answering, no such model."""


class PromptRefusedError(OpenAIImagesError, ContentRefusedError):
    """The server's safety system refused the prompt (or the input image); the image service
    records the refusal in the catalog (`studio.images.safety`), with no image."""


class RateLimitedError(OpenAIImagesError):
    """The server kept answering 429 Too Many Requests until the tries or the deadline ran out."""


class RayUnavailableError(ConfigError):
    """Ray is not installed, or no cluster answers at the configured address."""


class EmbeddingError(StudioError):
    """The embeddings backend could not be reached or answered nonsense."""


class LibraryImportError(StudioError):
    """A CSV that cannot be imported at all; nothing was added."""


class LibraryServerError(StudioError):
    """The library's PostgreSQL server cannot be reached or used; the message says what to do."""


class CampaignError(StudioError):
    """A bad brief, an edit that does not fit its step's schema, or a step run out of order."""
