"""One image on demand, for the dashboard: the call into the image service (the same one the
batch job uses) with the dashboard's provenance."""

from __future__ import annotations

from studio.core.params import RenderRequest
from studio.core.targets import STUDIO_TARGET, PromptSpec, Target
from studio.images.backends.base import StepCallback
from studio.images.service import ImageResult, ImageService, ImageTask


def generate_image(
    images: ImageService,
    request: RenderRequest,
    target: Target = STUDIO_TARGET,
    spec: PromptSpec | None = None,
    on_step: StepCallback | None = None,
) -> ImageResult:
    """The image for `request`: the catalog's if it was made before, else rendered and stored
    as the target's next image. Never asks the LLM anything."""
    provenance = {"made_in": "dashboard"}
    if spec is not None:
        provenance |= {"prompt_style": spec.style, "rationale": spec.rationale}
    return images.make_one(ImageTask(request, target, provenance=provenance), on_step=on_step)
