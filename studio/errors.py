"""The studio's public error hierarchy, for users' scripts: `from studio.errors import StudioError`.

The classes live in `studio.core.errors` (the package imports them from there); this module only
re-exports them, so scripts written against the flat package keep working. Nothing inside
`studio` imports it.
"""

from studio.core.errors import (
    CampaignError,
    CatalogError,
    ConfigError,
    ContentRefusedError,
    DatasetError,
    EmbeddingError,
    ImageInputError,
    ImagesUnavailableError,
    LibraryImportError,
    LibraryServerError,
    LLMError,
    LLMInterrupted,
    LLMUnavailableError,
    LoraError,
    OpenAIImagesError,
    ParameterError,
    PromptRefusedError,
    RateLimitedError,
    RayUnavailableError,
    RenderCancelledError,
    RenderError,
    StudioError,
    one_line,
)

__all__ = [
    "CampaignError",
    "CatalogError",
    "ConfigError",
    "ContentRefusedError",
    "DatasetError",
    "EmbeddingError",
    "ImageInputError",
    "ImagesUnavailableError",
    "LLMError",
    "LLMInterrupted",
    "LLMUnavailableError",
    "LibraryImportError",
    "LibraryServerError",
    "LoraError",
    "OpenAIImagesError",
    "ParameterError",
    "PromptRefusedError",
    "RateLimitedError",
    "RayUnavailableError",
    "RenderCancelledError",
    "RenderError",
    "StudioError",
    "one_line",
]
