"""New prompts from old images: change requests by chain-of-thought, and alternate realities.

A change request ("night instead of day") goes to the LLM as JSON data beside the image's prompt;
the LLM answers in visible steps (what the request means, what must change, what must stay) and
then the new prompt's parts, whose people are written in through their descriptors as in every
prompt. The steps are kept with the new image; the old image and prompt stay (lineage, never an
overwrite). An alternate reality puts a character's look (or an episode image) in another world:
the LLM writes only what the reality changes, and the picture is redrawn from the portrait (or
the image) by img2img so that the person stays recognisable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from studio.catalog.records import StoredImage
from studio.core.dataset import Series
from studio.core.errors import one_line
from studio.core.targets import PromptSpec
from studio.llm.client import LLM
from studio.writing.english import english_answer
from studio.writing.prompting import (
    PART_ORDER,
    SHORT_TEXT,
    TokenCounter,
    cast_names,
    cast_schema,
    data_block,
    fit_parts,
    kept_cast,
    load_template,
    picture_cast,
    split_phrases,
)

MAX_REQUEST = 300  # characters in a change request
MAX_REALITY = 80
REVISION_STEPS = (
    ("meaning", "What does the request mean for the picture?"),
    ("change", "What in the prompt must change?"),
    ("keep", "What must stay as it is?"),
)
# Realities offered by name; any other text a person types is taken as a reality too.
REALITIES = ("film noir", "anime", "Renaissance fresco", "far future", "1920s newspaper")
REALITY_PARTS = ("costume", "setting", "details", "lighting", "style")


def revision_schema(names: Sequence[str]) -> dict[str, Any]:
    steps = {key: {"type": "string", "minLength": 2, "maxLength": 300} for key, _ in REVISION_STEPS}
    return {
        "type": "object",
        "properties": {
            **steps,
            **{part: SHORT_TEXT for part in PART_ORDER},
            "cast": cast_schema(names),
        },
        "required": [*steps, *PART_ORDER, "cast"],
        "additionalProperties": False,
    }


REALITY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {part: SHORT_TEXT for part in REALITY_PARTS},
    "required": list(REALITY_PARTS),
    "additionalProperties": False,
}


def check_request(text: str) -> str:
    empty = 'The change request is empty; type what to change, e.g. "night instead of day".'
    return one_line(text, "change request", MAX_REQUEST, empty)


def check_reality(text: str) -> str:
    return one_line(text, "reality", MAX_REALITY,
                    f"Pick or type a reality, e.g. {', '.join(REALITIES[:3])}.")  # fmt: skip


def image_names(series: Series, image: StoredImage) -> list[str]:
    """The characters a revision of `image` may name: its episode's, or those it describes."""
    names = list(image.provenance.get("cast") or [])
    if image.episode is not None and image.season is not None:
        for episode in series.episodes_of(image.season):
            if episode.episode == image.episode:
                names += episode.characters
    return list(dict.fromkeys(names))


@dataclass(frozen=True)
class Revision:
    spec: PromptSpec
    trace: list[dict[str, str]]  # the visible steps, as question and answer
    cast: tuple[str, ...]
    key: str  # the LLM answer's cache key
    template_hash: str
    answers: dict[str, str]
    request: str


def revise_prompt(
    llm: LLM,
    series: Series,
    image: StoredImage,
    request: str,
    count: TokenCounter,
    looks: Mapping[str, str] | None = None,
) -> Revision:
    """The LLM's new prompt for `image` after the change `request`, with its steps."""
    request = check_request(request)
    names = image_names(series, image)
    template = load_template("change_request.md")
    data = {
        "current_prompt": image.prompt,
        "characters": names,
        "change_request": request,
    }
    messages = template.messages(series_title=series.title, image_json=data_block(data))
    answer = llm.generate_json(messages, revision_schema(names), max_tokens=600)
    answer = english_answer(llm, answer, PART_ORDER, cast_names(series))[0]
    texts = [str(answer.data.get(part, "")) for part in PART_ORDER]
    cast = picture_cast(series, answer.data["cast"], looks or {}, texts=texts)
    prompt = fit_parts(answer.data, count, people=cast)
    trace = [
        {"question": question, "answer": " ".join(answer.data[key].split())}
        for key, question in REVISION_STEPS
    ]
    spec = PromptSpec(prompt, image.negative_prompt, " ".join(answer.data["style"].split()),
                      trace[0]["answer"])  # fmt: skip
    return Revision(
        spec,
        trace,
        kept_cast(prompt, cast),
        answer.key,
        template.sha256,
        {answer.key: answer.text},
        request,
    )


@dataclass(frozen=True)
class RealityPrompt:
    spec: PromptSpec
    reality: str
    key: str
    answers: dict[str, str]


def reality_prompt(
    llm: LLM,
    series: Series,
    reality: str,
    count: TokenCounter,
    descriptor: str = "",
    scene: str = "",
    negative_prompt: str = "",
) -> RealityPrompt:
    """A prompt for a character (`descriptor`, kept verbatim) or a scene (an image's prompt, its
    first phrases kept) in `reality`."""
    reality = check_reality(reality)
    template = load_template("alternate_reality.md")
    data = {"look": descriptor, "scene": scene, "reality": reality}
    messages = template.messages(series_title=series.title, reality_json=data_block(data))
    answer = llm.generate_json(messages, REALITY_SCHEMA, max_tokens=300)
    fields = ("costume", "setting", "details", "lighting", "style")
    answer = english_answer(llm, answer, fields, cast_names(series))[0]
    parts = {
        "subject": ", ".join([*split_phrases(scene)[:2], answer.data["costume"]]),
        **{part: answer.data[part] for part in ("setting", "details", "lighting", "style")},
    }
    prompt = fit_parts(parts, count, cast=[descriptor] if descriptor else [])
    spec = PromptSpec(prompt, negative_prompt, " ".join(answer.data["style"].split()), reality)
    return RealityPrompt(spec, reality, answer.key, {answer.key: answer.text})
