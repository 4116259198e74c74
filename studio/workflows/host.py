"""What a workflow needs of the studio that runs it (`studio.api.Studio`, the layer above):
its settings, catalog, LLM, image service and backend, the series, and its way to make one image
from a prompt and options. Workflows take it as their first argument."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from studio.core.errors import ParameterError

if TYPE_CHECKING:
    from studio.catalog.records import StoredImage
    from studio.catalog.store import Store
    from studio.core.config import Settings
    from studio.core.dataset import Series
    from studio.core.targets import Target
    from studio.images.backends.base import ImageBackend, StepCallback
    from studio.images.service import ImageResult, ImageService
    from studio.llm.client import LLM


class StudioHost(Protocol):
    settings: Settings
    store: Store
    llm: LLM
    images: ImageService
    backend: ImageBackend
    series: Series

    def generate(
        self,
        prompt: str = "",
        *,
        target: Target = ...,
        provenance: Mapping[str, Any] | None = None,
        on_step: StepCallback | None = None,
        **options: Any,
    ) -> ImageResult: ...


def catalog_image(store: Store, key: str) -> StoredImage:
    """The catalog image with cache key `key`; a `ParameterError` naming the catalog when none."""
    found = store.find_image(key)
    if found is None:
        raise ParameterError(f"No image with key {key!r} in the catalog {store.data_dir}.")
    return found
