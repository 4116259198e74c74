"""Where the image service's renders run: here (`LocalExecutor`), or on Ray workers
(`studio.images.ray_executor.RayExecutor`, for `executor = "ray"`). Torch-free.

An executor takes the batches the image service has planned (each a list of requests that can
share a pipeline call) and yields, in any order, each batch's images or the RenderError it failed
with. It never writes anything: the image service, in the calling process, writes every file and
catalog row, so a lost worker or a retried batch cannot leave a half-written image or a duplicate.

    executor = open_executor(settings, backend)      # checks a Ray cluster answers, else raises
    for number, outcome in executor.run(batches, inputs=store.input_image):
        ...
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from studio.core.errors import RenderError
from studio.core.params import RenderRequest
from studio.images.backends.base import ImageBackend, InputResolver, StepCallback

if TYPE_CHECKING:
    from PIL import Image

    from studio.core.config import Settings


class RenderExecutor(Protocol):
    name: str

    def run(
        self,
        batches: Sequence[Sequence[RenderRequest]],
        inputs: InputResolver | None = None,
        on_step: StepCallback | None = None,
    ) -> Iterator[tuple[int, list[Image.Image] | RenderError]]:
        """(batch number, outcome) for every batch, as each is done."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """The batches one after another on `backend`, in this process (with live progress)."""

    name = "local"

    def __init__(self, backend: ImageBackend):
        self.backend = backend

    def run(
        self,
        batches: Sequence[Sequence[RenderRequest]],
        inputs: InputResolver | None = None,
        on_step: StepCallback | None = None,
    ) -> Iterator[tuple[int, list[Image.Image] | RenderError]]:
        for number, batch in enumerate(batches):
            try:
                images = self.backend.render(list(batch), on_step=on_step, inputs=inputs)
            except RenderError as exc:
                yield number, exc
                continue
            yield number, images

    def close(self) -> None:
        pass


def open_executor(settings: Settings, backend: ImageBackend) -> RenderExecutor:
    """The executor the `executor` setting names. For Ray this connects to the cluster now, so
    that a cluster that does not answer is an error before the job has written anything."""
    if settings.executor == "ray":
        from studio.images.ray_executor import RayExecutor

        return RayExecutor(settings)
    return LocalExecutor(backend)
