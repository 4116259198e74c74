"""The Marketing Assistant's campaign chain: concept -> posts -> image prompts -> images -> review.

Each step's output is the next step's input, is kept in the campaign, can be edited (validated
against the step's schema), and an edit clears only the steps after it. LLM answers and images are
cached like the batch job's, so running a step again with the same inputs costs nothing.

    chain = Chain(llm, images, series, settings)      # images: the studio's ImageService
    campaign = chain.start(Brief(source="episode", season=1, episode=3, platforms=["X"]))
    chain.run(campaign)                       # every step still to do, in order
    chain.edit(campaign, "posts", {...})      # clears image_prompts, images and review
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jsonschema

from studio.core.config import Settings
from studio.core.dataset import Series
from studio.core.errors import CampaignError, RenderError
from studio.core.params import RenderRequest
from studio.core.targets import Target
from studio.images.service import ImageResult, ImageService, ImageTask
from studio.llm.client import LLM
from studio.workflows.batch import derive_seed
from studio.workflows.marketing.campaign import (
    CONCEPT_SCHEMA,
    EDITED_IMAGE_PROMPTS_SCHEMA,
    EDITED_POSTS_SCHEMA,
    IMAGE_PROMPT_SCHEMA,
    LANGUAGES,
    PLATFORMS,
    SHORTEN_SCHEMA,
    STEPS,
    TEXT_FIELD,
    Brief,
    Campaign,
    aspect_size,
    check_post,
    hashtag,
    post_full_text,
    posts_schema,
    source_material,
    tidy_cut,
)
from studio.workflows.marketing.export import review
from studio.workflows.marketing.reuse import describe
from studio.writing.prompting import base_negative, fit_text, load_template, merge_phrases

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
        data["hashtags"] = [t for t in dict.fromkeys(map(hashtag, data["hashtags"])) if t]
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
                "properties": {"text": {**TEXT_FIELD, "maxLength": max(20, room)}},
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

    def _reused(self, brief: Brief, number: int) -> dict[str, Any] | None:
        """Post `number`'s entry of the images step when it reuses a catalog image, else None."""
        key = brief.post_images.get(str(number)) or brief.reuse_image
        if not key:
            return None
        row = self.store.find_image(key)
        if row is None:
            raise CampaignError(
                f"The image chosen for post {number} is no longer in the catalog; choose another."
            )
        return {"cache_key": row.cache_key, "path": row.path, "reused": True,
                "source": describe(row)}  # fmt: skip

    def _images(self, campaign: Campaign, progress: Progress) -> list[dict[str, Any]]:
        brief, posts = campaign.brief, campaign.steps["posts"]
        entries = [self._reused(brief, number) for number in range(1, len(posts) + 1)]
        s = self.settings
        jobs, rendered = [], []
        for index, (post, prompt) in enumerate(
            zip(posts, campaign.steps["image_prompts"], strict=True)
        ):
            if entries[index] is not None:
                continue
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
            jobs.append(ImageTask(request, target, provenance={"made_in": "dashboard"}))
            rendered.append(index)
        done = len(posts) - len(jobs)
        progress("images", done, len(posts))
        if not jobs:  # every post reuses a stored image: nothing to render
            return entries

        def on_result(_result: ImageResult) -> None:
            nonlocal done
            done += 1
            progress("images", done, len(posts))

        # One batched call: posts of the same size share a pipeline call.
        results = self.images.make(jobs, on_result=on_result, keep_going=True)
        if all(result.record is None for result in results):
            raise RenderError(results[0].error)  # nothing rendered at all: the step failed
        for index, result in zip(rendered, results, strict=True):
            entries[index] = (
                {
                    "cache_key": result.record.cache_key,
                    "path": result.record.path,
                    "reused": False,
                }  # fmt: skip
                if result.record is not None
                else {"cache_key": None, "path": None, "reused": False, "error": result.error}
            )
        return entries

    def _review(self, campaign: Campaign, progress: Progress) -> dict[str, Any]:
        return review(campaign, self.store)
