"""What a campaign is made of: the brief (`Brief`: a season, an episode or a topic, the
platforms, the language), the platforms and their limits (`PLATFORMS`), the schemas of the
steps' answers, the `Campaign` record with its steps, the source material a brief points at,
and the checks every post gets (`check_post`: length and hashtags against the platform's limits).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from studio.core.dataset import Series
from studio.core.errors import CampaignError
from studio.core.params import LIMITS
from studio.writing.prompting import episode_data, season_data

STEPS = ("concept", "posts", "image_prompts", "images", "review")
LANGUAGES = {"en": "English", "pt-BR": "Brazilian Portuguese", "es": "Spanish"}


@dataclass(frozen=True)
class Platform:
    name: str
    limit: int  # hard limit of the post's characters, hashtags included
    max_hashtags: int
    aspect: str  # image aspect ratio, width:height
    target: int  # characters we ask the LLM for: what works on the platform, well under the limit
    style: str  # how posts read there, for the LLM


PLATFORMS = {
    p.name: p
    for p in (
        Platform("Instagram", 2200, 30, "4:5", 600, "caption under a photo, warm, emoji allowed"),
        Platform("X", 280, 3, "16:9", 200, "one punchy line, no filler"),
        Platform("TikTok", 2200, 5, "9:16", 300, "short caption for a vertical video, playful"),
        Platform("LinkedIn", 3000, 5, "16:9", 700, "professional, about the craft of the show"),
        Platform("Facebook", 63206, 5, "1:1", 500, "friendly, invites comments"),
    )
}


SMALLEST_SIDE = int(LIMITS["width"].low)  # the smallest width or height the gate takes


def aspect_size(aspect: str, base: int = 512) -> tuple[int, int]:
    """A size of about base x base pixels at `aspect`, both sides multiples of 16.

    A small base is scaled up until the shorter side is at least SMALLEST_SIDE.
    """
    width_part, height_part = (int(n) for n in aspect.split(":"))
    ratio = math.sqrt(width_part / height_part)
    width, height = base * ratio, base / ratio
    scale = max(1.0, SMALLEST_SIDE / min(width, height))
    return (
        max(SMALLEST_SIDE, round(width * scale / 16) * 16),
        max(SMALLEST_SIDE, round(height * scale / 16) * 16),
    )


# Schemas of the steps' LLM answers (and of an edited step's output).
TEXT_FIELD = {"type": "string", "minLength": 2}
CONCEPT_SCHEMA = {
    "type": "object",
    "properties": {
        "hook": {**TEXT_FIELD, "maxLength": 120},
        "key_message": {**TEXT_FIELD, "maxLength": 240},
        "hashtag_strategy": {**TEXT_FIELD, "maxLength": 240},
        "hashtags": {
            "type": "array",
            "items": {"type": "string", "minLength": 2, "maxLength": 40},
            "minItems": 1,
            "maxItems": 8,
        },
    },
    "required": ["hook", "key_message", "hashtag_strategy", "hashtags"],
    "additionalProperties": False,
}
IMAGE_PROMPT_SCHEMA = {
    "type": "object",
    "properties": {
        "prompt": {**TEXT_FIELD, "maxLength": 400},
        "negative_prompt": {"type": "string", "maxLength": 240},
    },
    "required": ["prompt", "negative_prompt"],
    "additionalProperties": False,
}
SHORTEN_SCHEMA = {
    "type": "object",
    "properties": {"text": TEXT_FIELD},
    "required": ["text"],
    "additionalProperties": False,
}


def posts_schema(platform: Platform, count: int) -> dict[str, Any]:
    post = {
        "type": "object",
        "properties": {
            "text": {**TEXT_FIELD, "maxLength": platform.target},
            "hashtags": {
                "type": "array",
                "items": {"type": "string", "minLength": 2, "maxLength": 40},
                "maxItems": platform.max_hashtags,
            },
        },
        "required": ["text", "hashtags"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "posts": {"type": "array", "items": post, "minItems": count, "maxItems": count}
        },
        "required": ["posts"],
        "additionalProperties": False,
    }


# Edited posts: any number per platform, any length (the limits are checked and flagged).
EDITED_POSTS_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "platform": {"enum": list(PLATFORMS)},
            "text": TEXT_FIELD,
            "hashtags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["platform", "text", "hashtags"],
    },
    "minItems": 1,
}
EDITED_IMAGE_PROMPTS_SCHEMA = {
    "type": "array",
    "items": IMAGE_PROMPT_SCHEMA,
}


@dataclass
class Brief:
    source: str = "episode"  # episode, season or topic
    season: int | None = None
    episode: int | None = None
    topic: str = ""
    platforms: list[str] = field(default_factory=lambda: ["Instagram", "X"])
    audience: str = "fans of classic detective stories"
    tone: str = "intriguing"
    language: str = "en"  # a key of LANGUAGES
    posts_per_platform: int = 1
    call_to_action: str = "Watch the new episode tonight"
    reuse_image: str | None = None  # cache key of a catalog image to use instead of rendering
    # Per post (its number from 1, as text): the cache key of a catalog image to reuse for it,
    # ahead of reuse_image; see reuse.reusable_images for what an episode offers.
    post_images: dict[str, str] = field(default_factory=dict)

    def check(self, series: Series) -> None:
        if self.source not in {"episode", "season", "topic"}:
            raise CampaignError(f"Unknown source {self.source!r}; use episode, season or topic.")
        if self.source == "episode" and not any(
            e.season == self.season and e.episode == self.episode for e in series.episodes
        ):
            raise CampaignError(f"No episode S{self.season}E{self.episode} in {series.title}.")
        if self.source == "season" and self.season not in series.seasons:
            raise CampaignError(f"No season {self.season} in {series.title}.")
        if self.source == "topic" and not self.topic.strip():
            raise CampaignError("Write the campaign's topic, or choose an episode or a season.")
        unknown = [p for p in self.platforms if p not in PLATFORMS]
        if unknown or not self.platforms:
            raise CampaignError(
                f"Choose platforms among {', '.join(PLATFORMS)}"
                + (f"; unknown: {', '.join(unknown)}." if unknown else ".")
            )
        if self.language not in LANGUAGES:
            raise CampaignError(
                f"Unknown language {self.language!r}; use one of {', '.join(LANGUAGES)}."
            )
        if not 1 <= self.posts_per_platform <= 10:
            raise CampaignError("Posts per platform must be between 1 and 10.")


@dataclass
class Campaign:
    id: str
    name: str
    brief: Brief
    steps: dict[str, Any] = field(default_factory=dict)  # step name -> output, in STEPS order
    created_at: str = ""

    def done(self, step: str) -> bool:
        return step in self.steps

    @property
    def next_step(self) -> str | None:
        return next((s for s in STEPS if s not in self.steps), None)

    def clear_after(self, step: str) -> None:
        for later in STEPS[STEPS.index(step) + 1 :]:
            self.steps.pop(later, None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "brief": asdict(self.brief),
            "steps": self.steps,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Campaign:
        return cls(
            data["id"], data["name"], Brief(**data["brief"]), data["steps"], data["created_at"]
        )


def tidy_cut(text: str, limit: int) -> str:
    """A text the LLM's length limit cut mid-word, ended at its last whole sentence or word.

    Constrained decoding stops a string exactly at its maxLength; a text shorter than that was not
    cut and is returned as it is.
    """
    text = " ".join(text.split())
    if len(text) < limit:
        return text
    sentence_end = max(text.rfind(mark) for mark in ".!?")
    if sentence_end >= len(text) // 2:
        return text[: sentence_end + 1]
    return text[: text.rfind(" ")].rstrip(",;:-") + "…" if " " in text else text


def post_full_text(post: dict[str, Any]) -> str:
    """What is published: the text, then the hashtags on their own line."""
    tags = " ".join(post["hashtags"])
    return f"{post['text'].strip()}\n\n{tags}" if tags else post["text"].strip()


def hashtag(tag: str) -> str:
    """`tag` as one hashtag: spaces dropped, one leading #; "" when nothing is left."""
    word = "".join(tag.split()).lstrip("#")
    return f"#{word}" if word else ""


def check_post(post: dict[str, Any]) -> dict[str, Any]:
    """The post with its hashtags normalised, its length counted and its problems flagged."""
    platform = PLATFORMS[post["platform"]]
    hashtags = [t for t in dict.fromkeys(hashtag(t) for t in post["hashtags"]) if t]
    checked = {**post, "hashtags": hashtags}
    flags = []
    if len(hashtags) > platform.max_hashtags:
        flags.append(f"{len(hashtags)} hashtags; {platform.name} allows {platform.max_hashtags}")
    length = len(post_full_text(checked))
    if length > platform.limit:
        flags.append(f"{length} characters; {platform.name} allows {platform.limit}")
    return {**checked, "characters": length, "limit": platform.limit, "flags": flags}


def source_material(brief: Brief, series: Series) -> dict[str, Any]:
    if brief.source == "episode":
        episode = next(
            e for e in series.episodes if (e.season, e.episode) == (brief.season, brief.episode)
        )
        return {"episode": f"S{episode.season:02d}E{episode.episode:02d}",
                **episode_data(series, episode)}  # fmt: skip
    if brief.source == "season":
        return {"season": brief.season, **season_data(series, brief.season)}
    return {"topic": brief.topic.strip(), "series": series.title}
