"""Storyboards: an episode's key moments in story order, each an image prompt that names its
people through their descriptors, rendered as a strip (for a recap post or a carousel).

The LLM gets the episode as JSON data and the number of moments, which follows the summary: one
per sentence, 4 to 6 for a full summary, fewer for a short one (no padding). Every panel uses the
same seed and style, so the strip reads as one piece.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from studio.catalog.records import PromptRecord, StoredImage
from studio.catalog.store import Store
from studio.core.dataset import Episode, Series
from studio.core.targets import PromptSpec, Target
from studio.llm.client import LLM, JSONAnswer
from studio.writing.english import english_answer, english_nested
from studio.writing.period import period_answer
from studio.writing.prompting import (
    SHORT_TEXT,
    TokenCounter,
    base_negative,
    cast_names,
    cast_schema,
    data_block,
    episode_data,
    fit_parts,
    fit_text,
    kept_cast,
    load_template,
    merge_phrases,
    picture_cast,
)

MIN_MOMENTS, MAX_MOMENTS = 4, 6
STORYBOARD_STYLE = "cinematic storyboard frame, muted colours, film still"
MOMENT_PARTS = ("subject", "setting", "lighting", "composition")


def moment_count(summary: str) -> int:
    """How many moments a summary holds: one per sentence, at most MAX_MOMENTS; a summary of
    MIN_MOMENTS sentences or more gets at least MIN_MOMENTS."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", summary.strip()) if len(s.split()) >= 3]
    return max(1, min(MAX_MOMENTS, len(sentences)))


def storyboard_schema(moments: int, names: Sequence[str]) -> dict[str, Any]:
    moment = {
        "type": "object",
        "properties": {
            "title": {"type": "string", "minLength": 2, "maxLength": 80},
            "cast": cast_schema(names),
            **{part: SHORT_TEXT for part in MOMENT_PARTS},
        },
        "required": ["title", "cast", *MOMENT_PARTS],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "moments": {
                "type": "array",
                "items": moment,
                "minItems": moments,
                "maxItems": moments,
            }
        },
        "required": ["moments"],
        "additionalProperties": False,
    }


@dataclass(frozen=True)
class Moment:
    title: str
    spec: PromptSpec
    cast: tuple[str, ...] = ()  # the characters described in its prompt


@dataclass(frozen=True)
class StoryboardPrompts:
    moments: list[Moment]
    key: str  # the LLM answer's cache key: names the storyboard
    template_hash: str
    cached: bool
    answers: dict[str, str]


def write_storyboard(
    llm: LLM,
    series: Series,
    episode: Episode,
    count: TokenCounter,
    looks: Mapping[str, str] | None = None,
    style: str = STORYBOARD_STYLE,
    refresh: bool = False,
) -> StoryboardPrompts:
    """The LLM's key moments of `episode`, in story order, as prompts with descriptors."""
    template = load_template("storyboard.md")
    moments = moment_count(episode.summary)
    messages = template.messages(
        series_title=series.title,
        moments=str(moments),
        episode_json=data_block(episode_data(series, episode)),
    )
    schema = storyboard_schema(moments, list(dict.fromkeys(episode.characters)))
    answer = llm.generate_json(messages, schema, max_tokens=220 * moments, refresh=refresh)
    answer = english_nested(llm, answer, MOMENT_PARTS, cast_names(series), refresh)[0]
    answer = period_answer(answer, MOMENT_PARTS, series)
    negative = storyboard_negative(count)
    result: list[Moment] = []
    answers = {answer.key: answer.text}
    for number, item in enumerate(answer.data["moments"]):
        texts = [str(item.get(part, "")) for part in MOMENT_PARTS]
        cast = picture_cast(series, item["cast"], looks or {}, texts=texts)
        title = " ".join(item["title"].split())
        parts = {p: item[p] for p in MOMENT_PARTS}
        prompt = fit_parts({**parts, "style": style}, count, people=cast)
        same = next((m for m in result if _same_prompt(m.spec.prompt, prompt)), None)
        if same is not None:  # never two frames of one picture: this moment is drawn again
            parts, rewrite = rewrite_moment(llm, series, episode, title, same, parts, refresh)
            answers[rewrite.key] = rewrite.text
            prompt = fit_parts({**parts, "style": style}, count, people=cast)
            if any(_same_prompt(m.spec.prompt, prompt) for m in result):
                shot = DISTINCT_SHOTS[number % len(DISTINCT_SHOTS)]
                prompt = fit_parts({**parts, "composition": shot, "style": style}, count,
                                   people=cast)  # fmt: skip
        spec = PromptSpec(prompt, negative, style, title)
        result.append(Moment(title, spec, kept_cast(prompt, cast)))
    return StoryboardPrompts(result, answer.key, template.sha256, answer.cached, answers)


# Camera positions a repeated moment takes when even its rewrite repeats another's picture.
DISTINCT_SHOTS = ("extreme close-up", "over-the-shoulder shot", "high angle wide shot",
                  "low angle shot", "silhouette against the light", "aerial view")  # fmt: skip


def _same_prompt(first: str, second: str) -> bool:
    return " ".join(first.lower().split()) == " ".join(second.lower().split())


def rewrite_moment(
    llm: LLM,
    series: Series,
    episode: Episode,
    title: str,
    same: Moment,
    parts: Mapping[str, str],
    refresh: bool = False,
) -> tuple[dict[str, str], JSONAnswer]:
    """A different picture of the moment `title`, whose picture repeats `same`'s."""
    data = {
        "episode": episode.title,
        "summary": episode.summary,
        "this_moment": title,
        "other_moment": same.title,
        "picture_both_had": dict(parts),
    }
    messages = load_template("storyboard_moment.md").messages(moment_json=data_block(data))
    schema = {
        "type": "object",
        "properties": {part: SHORT_TEXT for part in MOMENT_PARTS},
        "required": list(MOMENT_PARTS),
        "additionalProperties": False,
    }
    answer = llm.generate_json(messages, schema, max_tokens=160, refresh=refresh)
    answer = english_answer(llm, answer, MOMENT_PARTS, cast_names(series), refresh)[0]
    return {part: str(answer.data[part]) for part in MOMENT_PARTS}, answer


def moment_records(
    episode: Episode, board: StoryboardPrompts, llm_model: str
) -> list[PromptRecord]:
    """The catalog's records of a storyboard: one per moment, keyed `<answer key>:<index>`."""
    return [
        PromptRecord(
            f"{board.key}:{index}",
            Target("storyboard", episode.season, episode.episode, str(index)),
            moment.spec,
            llm_model,
            board.template_hash,
            [{"question": f"Moment {index + 1}", "answer": moment.title}],
        )
        for index, moment in enumerate(board.moments)
    ]


@dataclass
class Storyboard:
    """A storyboard as the catalog holds it: its moments and each one's newest image."""

    key: str
    moments: list[PromptRecord]
    images: list[StoredImage | None] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return bool(self.images) and all(image is not None for image in self.images)


def stored_storyboard(store: Store, season: int, episode: int) -> Storyboard | None:
    """The newest storyboard of an episode in the catalog, or None."""
    records = store.prompts(target="storyboard", season=season, episode=episode)
    if not records:
        return None
    key = records[-1].key.rsplit(":", 1)[0]
    moments = sorted(
        (r for r in records if r.key.rsplit(":", 1)[0] == key),
        key=lambda r: int(r.target.style or 0),
    )
    images: list[StoredImage | None] = [None] * len(moments)
    for image in store.images(target="storyboard", season=season, episode=episode):
        index = image.provenance.get("moment")
        mine = image.provenance.get("storyboard") == key
        if mine and isinstance(index, int) and 0 <= index < len(images):
            images[index] = image  # oldest first: the newest wins
    return Storyboard(key, moments, images)


def strip(pictures: Sequence[Image.Image], gap: int = 8, height: int = 384) -> Image.Image:
    """The pictures side by side, scaled to one height, on a dark strip."""
    scaled = [
        p.convert("RGB").resize((max(1, round(p.width * height / p.height)), height))
        for p in pictures
    ]
    width = sum(p.width for p in scaled) + gap * (len(scaled) + 1)
    canvas = Image.new("RGB", (width, height + 2 * gap), (24, 24, 24))
    x = gap
    for picture in scaled:
        canvas.paste(picture, (x, gap))
        x += picture.width + gap
    return canvas


def storyboard_png(paths: Sequence[Any]) -> bytes:
    """The strip of the PNG files at `paths`, as PNG bytes."""
    pictures = []
    for path in paths:
        with Image.open(path) as image:
            pictures.append(image.convert("RGB"))
    buffer = io.BytesIO()
    strip(pictures).save(buffer, format="PNG")
    return buffer.getvalue()


def panels_zip(paths: Sequence[Any], stem: str) -> bytes:
    """The panels as separate PNGs in a zip, numbered in story order."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for index, path in enumerate(paths, start=1):
            with open(path, "rb") as handle:
                archive.writestr(f"{stem}-{index:02d}.png", handle.read())
    return buffer.getvalue()


def storyboard_negative(count: TokenCounter) -> str:
    return fit_text(merge_phrases(base_negative(), "text, captions, speech bubbles"), count)
