"""The Marketing Assistant's campaign chain: concept -> posts -> image prompts -> images -> review.

Each step's output is the next step's input, is kept in the campaign, can be edited (validated
against the step's schema), and an edit clears only the steps after it. LLM answers and images are
cached like the batch job's, so running a step again with the same inputs costs nothing.

    chain = Chain(llm, images, series, settings)      # images: the studio's ImageService
    campaign = chain.start(Brief(source="episode", season=1, episode=3, platforms=["X"]))
    chain.run(campaign)                       # every step still to do, in order
    chain.edit(campaign, "posts", {...})      # clears image_prompts, images and review
    export = export_zip(campaign, store)      # export.data: the zip; export.missing: its gaps

A post whose image is gone (its PNG deleted from the data folder, its catalog row removed, or its
render failed) is never dropped in silence: `missing_images` says which and why, the review lists
them, and the zip marks them MISSING in posts.md and posts.csv.
"""

from __future__ import annotations

import csv
import io
import json
import math
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import jsonschema

from studio.catalog.store import Store
from studio.core.config import Settings
from studio.core.dataset import Series
from studio.core.errors import CampaignError, RenderError
from studio.core.params import LIMITS, RenderRequest, Target
from studio.images.service import ImageJob, ImageResult, ImageService
from studio.llm.client import LLM
from studio.workflows.batch import derive_seed
from studio.writing.prompting import (
    base_negative,
    episode_data,
    fit_text,
    load_template,
    merge_phrases,
    season_data,
)

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
_TEXT = {"type": "string", "minLength": 2}
CONCEPT_SCHEMA = {
    "type": "object",
    "properties": {
        "hook": {**_TEXT, "maxLength": 120},
        "key_message": {**_TEXT, "maxLength": 240},
        "hashtag_strategy": {**_TEXT, "maxLength": 240},
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
        "prompt": {**_TEXT, "maxLength": 400},
        "negative_prompt": {"type": "string", "maxLength": 240},
    },
    "required": ["prompt", "negative_prompt"],
    "additionalProperties": False,
}
SHORTEN_SCHEMA = {
    "type": "object",
    "properties": {"text": _TEXT},
    "required": ["text"],
    "additionalProperties": False,
}


def posts_schema(platform: Platform, count: int) -> dict[str, Any]:
    post = {
        "type": "object",
        "properties": {
            "text": {**_TEXT, "maxLength": platform.target},
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
            "text": _TEXT,
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


def _hashtag(tag: str) -> str:
    word = "".join(tag.split()).lstrip("#")
    return f"#{word}" if word else ""


def check_post(post: dict[str, Any]) -> dict[str, Any]:
    """The post with its hashtags normalised, its length counted and its problems flagged."""
    platform = PLATFORMS[post["platform"]]
    hashtags = [t for t in dict.fromkeys(_hashtag(t) for t in post["hashtags"]) if t]
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


Progress = Callable[[str, int, int], None]  # (step, done, total)


class Chain:
    """Runs a campaign's steps with the studio's LLM, image service and catalog."""

    def __init__(self, llm: LLM, images: ImageService, series: Series, settings: Settings):
        self.llm, self.images, self.store = llm, images, images.store
        self.series, self.settings = series, settings

    # Campaigns ----------------------------------------------------------------------------

    def start(self, brief: Brief, name: str = "") -> Campaign:
        brief.check(self.series)
        if brief.source == "episode":
            label = f"S{brief.season:02d}E{brief.episode:02d}"
        elif brief.source == "season":
            label = f"Season {brief.season}"
        else:
            label = brief.topic.strip()[:40]
        created = datetime.now(UTC).isoformat(timespec="seconds")
        campaign = Campaign(
            uuid.uuid4().hex[:12],
            name or f"{label} · {', '.join(brief.platforms)} · {brief.language}",
            brief,
            {},
            created,
        )
        self.save(campaign)
        return campaign

    def save(self, campaign: Campaign) -> None:
        self.store.save_campaign(campaign.id, campaign.name, campaign.to_dict())

    def load(self, campaign_id: str) -> Campaign:
        data = self.store.campaign(campaign_id)
        if data is None:
            raise CampaignError(f"No campaign {campaign_id} in the catalog.")
        return Campaign.from_dict(data)

    # Steps --------------------------------------------------------------------------------

    def run(self, campaign: Campaign, until: str = "review", progress: Progress | None = None):
        """Run every step not done yet, in order, up to and including `until`."""
        while campaign.next_step and STEPS.index(campaign.next_step) <= STEPS.index(until):
            self.run_step(campaign, campaign.next_step, progress)
        return campaign

    def run_step(self, campaign: Campaign, step: str, progress: Progress | None = None) -> Any:
        if step not in STEPS:
            raise CampaignError(f"Unknown step {step!r}; the steps are {', '.join(STEPS)}.")
        missing = [s for s in STEPS[: STEPS.index(step)] if not campaign.done(s)]
        if missing:
            raise CampaignError(f"Run {missing[0]} before {step}.")
        output = getattr(self, f"_{step}")(campaign, progress or (lambda *_: None))
        campaign.steps[step] = output
        campaign.clear_after(step)
        self.save(campaign)
        return output

    def edit(self, campaign: Campaign, step: str, output: Any) -> None:
        """Replace a step's output by the user's; the steps after it will run again."""
        schema = {
            "concept": CONCEPT_SCHEMA,
            "posts": EDITED_POSTS_SCHEMA,
            "image_prompts": EDITED_IMAGE_PROMPTS_SCHEMA,
        }.get(step)
        if schema is None:
            raise CampaignError(f"The {step} step is made, not written: run it again instead.")
        if not campaign.done(step):
            raise CampaignError(f"Run {step} before editing it.")
        try:
            jsonschema.validate(output, schema)
        except jsonschema.ValidationError as exc:
            where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
            raise CampaignError(
                f"The edited {step} is not valid at {where}: {exc.message}"
            ) from None
        if step == "posts":
            output = [check_post(post) for post in output]
        if step == "image_prompts" and len(output) != len(campaign.steps["posts"]):
            raise CampaignError(
                f"Give one image prompt per post: {len(campaign.steps['posts'])}, "
                f"not {len(output)}."
            )
        campaign.steps[step] = output
        campaign.clear_after(step)
        self.save(campaign)

    def _common(self, campaign: Campaign) -> dict[str, str]:
        brief = campaign.brief
        return {
            "series_title": self.series.title,
            "source_json": json.dumps(source_material(brief, self.series), ensure_ascii=False),
        }

    def _concept(self, campaign: Campaign, progress: Progress) -> dict[str, Any]:
        brief = campaign.brief
        progress("concept", 0, 1)
        brief_data = {
            "platforms": brief.platforms,
            "audience": brief.audience,
            "tone": brief.tone,
            "language": LANGUAGES[brief.language],
            "call_to_action": brief.call_to_action,
        }
        messages = load_template("marketing_concept.md").messages(
            **self._common(campaign),
            brief_json=json.dumps(brief_data, ensure_ascii=False),
            language=LANGUAGES[brief.language],
        )
        data = self.llm.generate_json(messages, CONCEPT_SCHEMA, max_tokens=400).data
        for key in ("hook", "key_message", "hashtag_strategy"):
            data[key] = tidy_cut(data[key], CONCEPT_SCHEMA["properties"][key]["maxLength"])
        data["hashtags"] = [t for t in dict.fromkeys(map(_hashtag, data["hashtags"])) if t]
        progress("concept", 1, 1)
        return data

    def _posts(self, campaign: Campaign, progress: Progress) -> list[dict[str, Any]]:
        brief, concept = campaign.brief, campaign.steps["concept"]
        template = load_template("marketing_posts.md")
        posts: list[dict[str, Any]] = []
        for number, name in enumerate(brief.platforms):
            progress("posts", number, len(brief.platforms))
            platform = PLATFORMS[name]
            messages = template.messages(
                **self._common(campaign),
                platform=name,
                platform_style=platform.style,
                max_text=str(platform.target),
                max_words=str(platform.target // 7),
                max_hashtags=str(platform.max_hashtags),
                count=str(brief.posts_per_platform),
                language=LANGUAGES[brief.language],
                audience=brief.audience,
                tone=brief.tone,
                call_to_action=brief.call_to_action,
                concept_json=json.dumps(concept, ensure_ascii=False),
            )
            answer = self.llm.generate_json(
                messages,
                posts_schema(platform, brief.posts_per_platform),
                max_tokens=min(1800, 120 + brief.posts_per_platform * platform.target // 2),
            )
            for post in answer.data["posts"]:
                text = tidy_cut(post["text"], platform.target)
                posts.append(self._repair(check_post({**post, "platform": name, "text": text})))
        progress("posts", len(brief.platforms), len(brief.platforms))
        return posts

    def _repair(self, post: dict[str, Any]) -> dict[str, Any]:
        """Bring a post within its limits: drop extra hashtags, then ask the LLM for less text."""
        if not post["flags"]:
            return post
        platform = PLATFORMS[post["platform"]]
        post = check_post({**post, "hashtags": post["hashtags"][: platform.max_hashtags]})
        if post["flags"]:
            room = platform.limit - (len(post_full_text(post)) - len(post["text"].strip()))
            messages = load_template("marketing_shorten.md").messages(
                platform=platform.name,
                max_text=str(max(20, room)),
                length=str(len(post["text"])),
                post_json=json.dumps({"text": post["text"]}, ensure_ascii=False),
            )
            schema = {
                **SHORTEN_SCHEMA,
                "properties": {"text": {**_TEXT, "maxLength": max(20, room)}},
            }
            shorter = self.llm.generate_json(messages, schema, max_tokens=400).data["text"]
            post = check_post({**post, "text": shorter})
        return {**post, "repaired": True}

    def _visual_context(self, campaign: Campaign) -> dict[str, Any]:
        brief = campaign.brief
        context = source_material(brief, self.series)
        rows = (
            self.store.prompts(target="episode", season=brief.season, episode=brief.episode)
            if brief.source == "episode"
            else self.store.prompts(target="season", season=brief.season)
            if brief.source == "season"
            else []
        )
        if rows:
            context["existing_image_prompt"] = rows[-1].spec.prompt
        return context

    def _image_prompts(self, campaign: Campaign, progress: Progress) -> list[dict[str, str]]:
        template = load_template("marketing_image_prompt.md")
        context = json.dumps(self._visual_context(campaign), ensure_ascii=False)
        posts = campaign.steps["posts"]

        count = self.images.backend.count_tokens

        prompts = []
        for number, post in enumerate(posts):
            progress("image_prompts", number, len(posts))
            messages = template.messages(
                series_title=self.series.title,
                platform=post["platform"],
                aspect=PLATFORMS[post["platform"]].aspect,
                context_json=context,
                post_json=json.dumps({"text": post["text"]}, ensure_ascii=False),
            )
            data = self.llm.generate_json(messages, IMAGE_PROMPT_SCHEMA, max_tokens=300).data
            prompts.append(
                {
                    "prompt": fit_text(" ".join(data["prompt"].split()), count),
                    "negative_prompt": fit_text(
                        merge_phrases(data["negative_prompt"], base_negative()), count
                    ),
                }
            )
        progress("image_prompts", len(posts), len(posts))
        return prompts

    def _images(self, campaign: Campaign, progress: Progress) -> list[dict[str, Any]]:
        brief, posts = campaign.brief, campaign.steps["posts"]
        if brief.reuse_image:
            row = self.store.find_image(brief.reuse_image)
            if row is None:
                raise CampaignError("The image chosen for reuse is no longer in the catalog.")
            progress("images", len(posts), len(posts))
            return [{"cache_key": row["cache_key"], "path": row["path"], "reused": True}] * len(
                posts
            )
        s = self.settings
        jobs = []
        for post, prompt in zip(posts, campaign.steps["image_prompts"], strict=True):
            width, height = aspect_size(PLATFORMS[post["platform"]].aspect, s.width)
            request = RenderRequest(
                prompt=prompt["prompt"],
                negative_prompt=prompt["negative_prompt"],
                sampler=s.sampler,
                steps=s.steps,
                cfg=s.cfg,
                width=width,
                height=height,
                seed=derive_seed(s.seed, prompt["prompt"], 0),
            )
            target = Target("campaign", brief.season, brief.episode, post["platform"])
            jobs.append(ImageJob(request, target, provenance={"made_in": "dashboard"}))
        done = 0
        progress("images", 0, len(posts))

        def on_result(_result: ImageResult) -> None:
            nonlocal done
            done += 1
            progress("images", done, len(posts))

        # One batched call: posts of the same size share a pipeline call.
        results = self.images.make(jobs, on_result=on_result, keep_going=True)
        if all(result.record is None for result in results):
            raise RenderError(results[0].error)  # nothing rendered at all: the step failed
        return [
            {"cache_key": result.record.cache_key, "path": result.record.path, "reused": False}
            if result.record is not None
            else {"cache_key": None, "path": None, "reused": False, "error": result.error}
            for result in results
        ]

    def _review(self, campaign: Campaign, progress: Progress) -> dict[str, Any]:
        return review(campaign, self.store)


@dataclass(frozen=True)
class MissingImage:
    """A post whose image cannot go into the export, and why."""

    post: int  # the post's number, from 1
    platform: str
    reason: str  # completes "its image …"
    fix: str

    @property
    def detail(self) -> str:
        return f"its image {self.reason} — {self.fix}"

    @property
    def message(self) -> str:
        return f"Post {self.post} ({self.platform}): {self.detail}"


RERUN_IMAGES = "rerun the images step"
REUSE_GONE = "choose another image to reuse or render new ones in a new campaign"


def _image_problem(store: Store, image: dict[str, Any] | None) -> tuple[str, str] | None:
    """Why `image`, an entry of the images step, is not in the catalog and on disk now."""
    if image is None:
        return "was never made", RERUN_IMAGES
    fix = REUSE_GONE if image.get("reused") else RERUN_IMAGES
    key = image.get("cache_key")
    if not key:
        return f"failed to render ({image.get('error') or 'no image was recorded'})", fix
    if store.find_image(key) is not None:  # the row, and its file on disk
        return None
    rows = store.images(cache_key=key)
    if not rows:
        return "is missing from the catalog", fix
    return f"file is missing from the data folder ({rows[0]['path']})", fix


def missing_images(campaign: Campaign, store: Store) -> list[MissingImage]:
    """Each post whose image is not in the catalog and on disk right now, in post order.

    Cheap (a catalog look-up and a file check per post, no image read): the page calls it on every
    rerun; the review and the export use it too.
    """
    posts = campaign.steps.get("posts", [])
    if not campaign.done("images"):
        return [MissingImage(n, p["platform"], "was not made yet", "run the images step")
                for n, p in enumerate(posts, start=1)]  # fmt: skip
    images = campaign.steps["images"]
    missing = []
    for number, post in enumerate(posts, start=1):
        image = images[number - 1] if number <= len(images) else None
        problem = _image_problem(store, image)
        if problem is not None:
            missing.append(MissingImage(number, post["platform"], *problem))
    return missing


def review(campaign: Campaign, store: Store) -> dict[str, Any]:
    """The review step's output, from the posts and the catalog as they are now."""
    posts = campaign.steps["posts"]
    missing = {m.post: m for m in missing_images(campaign, store)}
    issues = []
    for number, post in enumerate(posts, start=1):
        for flag in check_post(post)["flags"]:
            issues.append(f"Post {number} ({post['platform']}): {flag}")
        if number in missing:
            issues.append(missing[number].message)
    return {"ok": not issues, "issues": issues, "posts": len(posts)}


def crop_to_aspect(png: bytes, aspect: str) -> bytes:
    """A reused image cut to a platform's aspect ratio around its centre, metadata kept."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    image = Image.open(io.BytesIO(png))
    width_part, height_part = (int(n) for n in aspect.split(":"))
    width = min(image.width, round(image.height * width_part / height_part))
    height = min(image.height, round(image.width * height_part / width_part))
    left, top = (image.width - width) // 2, (image.height - height) // 2
    info = PngInfo()
    for key, value in getattr(image, "text", {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.crop((left, top, left + width, top + height)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def _export_png(store: Store, image: dict[str, Any], platform: str) -> bytes:
    row = store.find_image(image["cache_key"])
    if row is None:
        raise FileNotFoundError("it was removed during the export")
    png = store.image_path(row).read_bytes()
    return crop_to_aspect(png, PLATFORMS[platform].aspect) if image.get("reused") else png


@dataclass(frozen=True)
class CampaignExport:
    """The campaign's zip, and the posts whose image it could not include."""

    data: bytes
    missing: list[MissingImage]


def export_zip(campaign: Campaign, store: Store) -> CampaignExport:
    """The campaign as a zip: images/, posts.csv, posts.md and campaign.json.

    A post whose image is missing still gets its row and section, marked MISSING with the reason;
    the same posts are listed in the result's `missing`.
    """
    posts = campaign.steps.get("posts", [])
    images = campaign.steps.get("images", [])
    missing = {m.post: m for m in missing_images(campaign, store)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        names: dict[int, str] = {}
        for number, post in enumerate(posts, start=1):
            if number in missing:
                continue
            image = images[number - 1]
            name = f"images/{number:02d}-{post['platform'].lower()}.png"
            try:
                png = _export_png(store, image, post["platform"])
            except (OSError, ValueError) as exc:  # gone or unreadable since the check
                reason = f"could not be read ({type(exc).__name__}: {exc})"
                missing[number] = MissingImage(number, post["platform"], reason, RERUN_IMAGES)
                continue
            archive.writestr(name, png)
            names[number] = name
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["post", "platform", "text", "hashtags", "characters", "limit", "flags",
                         "image"])  # fmt: skip
        lines = [f"# {campaign.name}", ""]
        concept = campaign.steps.get("concept")
        if concept:
            lines += [f"**Hook:** {concept['hook']}", "", f"**Key message:** "
                      f"{concept['key_message']}", ""]  # fmt: skip
        for number, post in enumerate(posts, start=1):
            checked = check_post(post)
            image = names.get(number) or f"MISSING: {missing[number].detail}"
            writer.writerow([number, post["platform"], post["text"], " ".join(checked["hashtags"]),
                             checked["characters"], checked["limit"], "; ".join(checked["flags"]),
                             image])  # fmt: skip
            lines += [f"## {number}. {post['platform']}", "", post_full_text(checked), ""]
            if number in names:
                lines += [f"![{post['platform']}]({names[number]})", ""]
            else:
                lines += [f"> **MISSING IMAGE:** {image.removeprefix('MISSING: ')}", ""]
        archive.writestr("posts.csv", table.getvalue())
        archive.writestr("posts.md", "\n".join(lines))
        saved = campaign.to_dict()
        if campaign.done("review"):  # as of this export, not as of when the review ran
            saved["steps"] = {**saved["steps"], "review": review(campaign, store)}
        archive.writestr("campaign.json", json.dumps(saved, indent=2, ensure_ascii=False))
    return CampaignExport(buffer.getvalue(), [missing[n] for n in sorted(missing)])
