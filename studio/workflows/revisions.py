"""Change requests: a new image from a catalog image changed as a person asks, the LLM
reasoning in visible steps kept with the new image; the old image and prompt stay."""

from __future__ import annotations

from dataclasses import replace

from studio.catalog.records import PromptRecord
from studio.core.targets import Target
from studio.images.backends.base import StepCallback
from studio.images.service import ImageResult, ImageTask
from studio.workflows.characters import looks
from studio.workflows.host import StudioHost, catalog_image
from studio.writing.revisions import check_request, revise_prompt


def revise(
    studio: StudioHost, image_key: str, request: str, on_step: StepCallback | None = None
) -> ImageResult:
    """A new image from catalog image `image_key` changed as `request` says: the LLM reasons
    in visible steps, kept with the new image; the old image and prompt stay."""
    request = check_request(request)
    source = catalog_image(studio.store, image_key)
    revision = revise_prompt(
        studio.llm, studio.series, source, request, studio.backend.count_tokens, looks(studio)
    )
    where = source.target_of  # kept apart, so the target's own newest prompt stays its own
    studio.store.add_prompt(
        PromptRecord(
            revision.key,
            Target("revision", where.season, where.episode, where.style),
            revision.spec,
            studio.llm.model,
            revision.template_hash,
            revision.trace,
        )
    )
    provenance = {
        "revision": {"from": source.cache_key, "request": request, "trace": revision.trace},
        "cast": list(revision.cast),
        "prompt_key": revision.key,
        "llm_answers": revision.answers,
        "llm_model": studio.llm.model,
        "rationale": revision.spec.rationale,
    }
    request_ = replace(source.request, prompt=revision.spec.prompt)
    job = ImageTask(request_, source.target_of, provenance=provenance)
    return studio.images.make_one(job, on_step=on_step)
