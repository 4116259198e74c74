"""The cast at work: each character's look (written by the LLM once, kept, editable), their
portrait, its sha256 as an IP-Adapter reference, scenes of up to three characters (each portrait
limited to its side of the image), and alternate realities of a character or a scene (the LLM says
what the reality changes; img2img keeps the person)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from studio.catalog.records import CharacterRecord, StoredImage
from studio.core.config import setting
from studio.core.errors import ParameterError
from studio.core.params import CLIP_WINDOW, MAX_REFERENCES
from studio.core.targets import Target
from studio.images.backends.base import StepCallback
from studio.images.regions import REGION_WORDS
from studio.images.service import ImageResult
from studio.workflows.batch import derive_seed, look_answers, portrait_job
from studio.workflows.host import StudioHost, catalog_image
from studio.writing.cast import (
    check_name,
    current_looks,
    keeps_look,
    save_look,
    write_look,
)
from studio.writing.cast import portrait_of as newest_portrait
from studio.writing.revisions import reality_prompt


def looks(studio: StudioHost) -> dict[str, str]:
    """name -> the descriptor every prompt uses for that character."""
    return current_looks(studio.store, studio.series, studio.backend.count_tokens)


def character_look(studio: StudioHost, name: str, refresh: bool = False) -> CharacterRecord:
    """`name`'s current look; the LLM writes one (from the description and the episodes'
    summaries) when the catalog has none, or when `refresh` (a person's edit stays)."""
    name = check_name(studio.series, name)
    current = studio.store.character(name)
    if keeps_look(current, refresh):
        return current  # type: ignore[return-value]
    look = write_look(studio.llm, studio.series, name, studio.backend.count_tokens, refresh)
    return save_look(studio.store, look)


def character_portrait(
    studio: StudioHost, name: str, on_step: StepCallback | None = None, force: bool = False
) -> ImageResult:
    """The portrait of `name`'s current look (written first when there is none)."""
    record = character_look(studio, name)
    answers = look_answers(studio.store, record)
    job = portrait_job(studio.settings, record, studio.llm.model, answers)
    return studio.images.make([job], force=force, on_step=on_step)[0]


def portrait_of(studio: StudioHost, name: str) -> StoredImage | None:
    """The newest portrait of `name`'s current look, else of any earlier look, else None."""
    return newest_portrait(studio.store, name)


def reference_of(studio: StudioHost, name: str) -> str | None:
    """The sha256 of `name`'s portrait as an IP-Adapter reference image (stored in the
    catalog's inputs), or None when they have no portrait yet."""
    portrait = portrait_of(studio, name)
    if portrait is None:
        return None
    return studio.images.add_input(studio.store.image_path(portrait), "reference image")


def scene_prompt(scene: str, descriptors: Sequence[str]) -> str:
    """The scene, then each character's descriptor with where they stand (left, centre,
    right), so the prompt and the portraits' regions agree."""
    words = REGION_WORDS[len(descriptors)]
    people = [f"{d} {where}".strip() for d, where in zip(descriptors, words, strict=True)]
    return ", ".join([scene.strip().rstrip(".,"), *people])


def cast_scene(
    studio: StudioHost,
    names: Sequence[str],
    scene: str,
    *,
    on_step: StepCallback | None = None,
    **options: Any,
) -> ImageResult:
    """A scene with up to three characters, the most important first: each one's portrait (made
    first where there is none) conditions the image through the IP-Adapter, limited to their
    side of it (left, centre, right: `studio.images.regions`), and the prompt gives each one's
    descriptor with where they stand. `options`: RenderRequest fields (reference_scale: how
    strongly the portraits steer; the scale setting unless given)."""
    picked = list(dict.fromkeys(check_name(studio.series, name) for name in names))
    if not 1 <= len(picked) <= MAX_REFERENCES:
        raise ParameterError(
            f"A scene takes 1 to {MAX_REFERENCES} different characters, not {len(picked)}."
        )
    if not scene.strip():
        raise ParameterError("Describe the scene: where the characters are and what they do.")
    if not studio.backend.capabilities.ip_adapter:
        raise ParameterError(
            f"Scenes with the characters' portraits need an IP-Adapter; set "
            f"{setting('ip_adapter')} (e.g. h94/IP-Adapter)."
        )
    descriptors = [character_look(studio, name).descriptor for name in picked]
    references = []
    for name in picked:
        if portrait_of(studio, name) is None:
            character_portrait(studio, name, on_step=on_step)
        references.append(reference_of(studio, name))
    prompt = scene_prompt(scene, descriptors)
    if studio.backend.count_tokens(prompt) > CLIP_WINDOW:  # three looks may not fit in 77
        options.setdefault("long_prompt", True)
    if len(picked) > 1:
        size = (options.get("width", studio.settings.width),
                options.get("height", studio.settings.height))  # fmt: skip
        options["extra_references"] = tuple(references[1:])
        options["reference_masks"] = studio.images.add_regions(len(picked), size)
    provenance = {
        "cast": picked,
        "scene": scene.strip(),
        "references": [
            {"character": name, "region": where or "the whole image"}
            for name, where in zip(picked, REGION_WORDS[len(picked)], strict=True)
        ],
    }
    return studio.generate(
        prompt,
        reference_image=references[0],
        reference_scale=options.pop("reference_scale", studio.settings.reference_scale),
        provenance=provenance,
        on_step=on_step,
        **options,
    )


def alternate_reality(
    studio: StudioHost,
    name: str | None = None,
    reality: str = "film noir",
    *,
    image_key: str | None = None,
    strength: float = 0.6,
    on_step: StepCallback | None = None,
    **options: Any,
) -> ImageResult:
    """Character `name` (from their portrait), or the catalog image `image_key`, in another
    `reality`: the LLM writes what the reality changes; img2img keeps the person."""
    count = studio.backend.count_tokens
    if (name is None) == (image_key is None):
        raise ParameterError("Give a character's name or an image's key, one of the two.")
    if name is not None:
        name = check_name(studio.series, name)
        look = character_look(studio, name)
        source = portrait_of(studio, name) or character_portrait(studio, name).record
        made = reality_prompt(
            studio.llm, studio.series, reality, count, descriptor=look.descriptor,
            negative_prompt=source.negative_prompt,
        )  # fmt: skip
        target, cast = Target("reality", style=name), [name]
        lineage = {"character": name, "descriptor_version": look.version}
    else:
        source = catalog_image(studio.store, image_key)
        known = looks(studio)
        cast = list(source.provenance.get("cast") or [])
        made = reality_prompt(
            studio.llm, studio.series, reality, count,
            descriptor=known.get(cast[0], "") if cast else "",
            scene=source.prompt, negative_prompt=source.negative_prompt,
        )  # fmt: skip
        target, lineage = Target("reality", source.season, source.episode), {}
    seed = options.pop("seed", derive_seed(studio.settings.seed, f"reality:{made.reality}", 0))
    provenance = {
        "reality": {**lineage, "reality": made.reality, "from": source.cache_key},
        "cast": cast,
        "prompt_key": made.key,
        "llm_answers": made.answers,
        "llm_model": studio.llm.model,
    }
    return studio.generate(
        made.spec.prompt,
        negative_prompt=made.spec.negative_prompt,
        mode="img2img",
        init_image=studio.store.image_path(source),
        strength=strength,
        seed=seed,
        target=target,
        provenance=provenance,
        on_step=on_step,
        **options,
    )
