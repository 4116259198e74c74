"""The Marketing Assistant over HTTP (under `/studio/v1`, through `series.router`): start a campaign
from a brief and run its steps (concept -> posts -> image prompts -> images -> review), list and
fetch the saved ones, and download one as the dashboard's zip (images/, posts.csv, posts.md,
campaign.json). The chain, its cache and its checks are `studio.workflows.marketing`'s."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator

from studio.api import Studio
from studio.core.errors import CampaignError
from studio.server.state import state_of
from studio.server.views import ImageOut, episode_of, image_out, listed, not_found, season_of
from studio.workflows.marketing.campaign import LANGUAGES, PLATFORMS, STEPS, Brief, Campaign
from studio.workflows.marketing.chain import Chain
from studio.workflows.marketing.export import export_zip, missing_images

router = APIRouter(tags=["Campaigns"])
Step = Literal["concept", "posts", "image_prompts", "images", "review"]
assert Step.__args__ == STEPS  # the Literal follows the chain's steps


class BriefIn(BaseModel):
    """A campaign's brief: what it is about, where it is posted, for whom."""

    source: Literal["episode", "season", "topic"] = Field(
        "episode", description="What the campaign is about: an episode, a season or a topic."
    )
    season: int | None = Field(None, description="The season (episode and season sources).")
    episode: int | None = Field(None, description="The episode's number (episode source).")
    topic: str = Field("", max_length=200, description="The topic (topic source).")
    platforms: list[str] = Field(
        default_factory=lambda: ["Instagram", "X"],
        min_length=1,
        description=f"Where the posts go: {', '.join(PLATFORMS)}.",
    )
    audience: str = Field("fans of classic detective stories", max_length=200)
    tone: str = Field("intriguing", max_length=100)
    language: str = Field("en", description=f"The posts' language: {', '.join(LANGUAGES)}.")
    posts_per_platform: int = Field(1, ge=1, le=10)
    call_to_action: str = Field("Watch the new episode tonight", max_length=200)
    reuse_image: str | None = Field(
        None, description="A catalog image's key to use for every post instead of rendering."
    )
    post_images: dict[str, str] = Field(
        default_factory=dict,
        description="Per post (its number from 1, as text): a catalog image's key to reuse.",
    )

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, value: list[str]) -> list[str]:
        unknown = [p for p in value if p not in PLATFORMS]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}; choose among {', '.join(PLATFORMS)}")
        return list(dict.fromkeys(value))

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if value not in LANGUAGES:
            raise ValueError(f"unknown language {value!r}; use one of {', '.join(LANGUAGES)}")
        return value


class NewCampaign(BriefIn):
    """A brief, a name and how far to run the chain now."""

    name: str = Field("", max_length=120, description="Its name (default: made from the brief).")
    until: Step = Field("review", description="Run the steps up to this one (all by default).")


class RunSteps(BaseModel):
    until: Step = Field("review", description="Run the steps still to do up to this one.")


class PostImage(BaseModel):
    post: int = Field(description="The post's number, from 1.")
    platform: str
    key: str | None
    url: str | None
    reused: bool = Field(description="A catalog image reused instead of rendering.")
    source: str | None = Field(description="Where a reused image came from.")
    error: str | None = Field(description="Why it is missing.")


class CampaignListed(BaseModel):
    id: str
    name: str
    created: str
    updated: str
    url: str


class CampaignOut(BaseModel):
    id: str
    name: str
    created: str
    brief: dict[str, Any]
    steps_done: list[str]
    next_step: str | None = Field(description="The next step to run, or null when all are done.")
    concept: dict[str, Any] | None
    posts: list[dict[str, Any]] | None = Field(
        description="Each post: platform, text, hashtags, characters, limit, flags."
    )
    image_prompts: list[dict[str, Any]] | None
    images: list[PostImage] | None
    review: dict[str, Any] | None
    export_url: str = Field(description="The campaign as a zip.")


def _chain(studio: Studio) -> Chain:
    return Chain(studio.llm, studio.images, studio.series, studio.settings)


def _load(chain: Chain, campaign_id: str) -> Campaign:
    try:
        return chain.load(campaign_id)
    except CampaignError:
        saved = [row["id"] for row in chain.store.campaigns()]
        have = f"the catalog has {listed(saved)}" if saved else "the catalog has none yet"
        raise not_found(f"Campaign {campaign_id!r} does not exist; {have}.") from None


def _out(request: Request, studio: Studio, campaign: Campaign) -> CampaignOut:
    steps = campaign.steps
    images = None
    if "images" in steps:
        problems = {m.post: m.detail for m in missing_images(campaign, studio.store)}
        images = []
        for number, (post, entry) in enumerate(
            zip(steps["posts"], steps["images"], strict=False), start=1
        ):
            found = studio.store.find_image(entry["cache_key"]) if entry.get("cache_key") else None
            image: ImageOut | None = image_out(request, found) if found else None
            images.append(
                PostImage(
                    post=number,
                    platform=post["platform"],
                    key=entry.get("cache_key"),
                    url=image.url if image else None,
                    reused=bool(entry.get("reused")),
                    source=entry.get("source"),
                    error=problems.get(number),
                )
            )
    return CampaignOut(
        id=campaign.id,
        name=campaign.name,
        created=campaign.created_at,
        brief=campaign.to_dict()["brief"],
        steps_done=[s for s in STEPS if campaign.done(s)],
        next_step=campaign.next_step,
        concept=steps.get("concept"),
        posts=steps.get("posts"),
        image_prompts=steps.get("image_prompts"),
        images=images,
        review=steps.get("review"),
        export_url=str(request.url_for("studio_campaign_export", campaign_id=campaign.id)),
    )


def _run(request: Request, chain: Chain, campaign: Campaign, until: str) -> None:
    state = state_of(request)
    with state.activity.render("campaign", len(STEPS)) as render:

        def progress(step: str, done: int, total: int) -> None:
            render.number = STEPS.index(step)

        try:
            chain.run(campaign, until=until, progress=progress)
        except CampaignError as error:  # a step's input that does not fit
            raise HTTPException(422, str(error)) from None


@router.post("/campaigns", response_model=CampaignOut, status_code=201)
def start_campaign(body: NewCampaign, request: Request) -> CampaignOut:
    """Start a campaign from a brief and run its steps up to `until` (all of them by default);
    the LLM's answers and the images are cached, so the same brief costs nothing the second time."""
    studio = state_of(request).studio
    if body.source == "episode":
        if body.season is None or body.episode is None:
            raise HTTPException(422, "`season` and `episode`: an episode campaign needs both.")
        episode_of(studio.series, body.season, body.episode)
    elif body.source == "season":
        if body.season is None:
            raise HTTPException(422, "`season`: a season campaign needs its season.")
        season_of(studio.series, body.season)
    elif not body.topic.strip():
        raise HTTPException(422, "`topic`: write the campaign's topic.")
    chosen = {"reuse_image": body.reuse_image}
    chosen.update({f"post_images.{n}": key for n, key in body.post_images.items()})
    for field, key in chosen.items():
        if key and studio.store.find_image(key) is None:
            raise HTTPException(422, f"`{field}`: no image {key!r} in the catalog.")
    values = body.model_dump(exclude={"name", "until"})
    chain = _chain(studio)
    try:
        campaign = chain.start(Brief(**values), body.name)
    except CampaignError as error:
        raise HTTPException(422, str(error)) from None
    _run(request, chain, campaign, body.until)
    return _out(request, studio, campaign)


@router.get("/campaigns", response_model=list[CampaignListed])
def list_campaigns(request: Request) -> list[CampaignListed]:
    """The saved campaigns, newest first."""
    return [
        CampaignListed(
            id=row["id"],
            name=row["name"],
            created=row["created_at"],
            updated=row["updated_at"],
            url=str(request.url_for("studio_campaign", campaign_id=row["id"])),
        )
        for row in state_of(request).studio.store.campaigns()
    ]


@router.get("/campaigns/{campaign_id}", name="studio_campaign", response_model=CampaignOut)
def get_campaign(campaign_id: str, request: Request) -> CampaignOut:
    """A campaign: its brief and each step's output so far."""
    studio = state_of(request).studio
    return _out(request, studio, _load(_chain(studio), campaign_id))


@router.post("/campaigns/{campaign_id}/run", response_model=CampaignOut)
def run_campaign(campaign_id: str, request: Request, body: RunSteps | None = None) -> CampaignOut:
    """Run a campaign's steps still to do, up to `until`."""
    studio = state_of(request).studio
    chain = _chain(studio)
    campaign = _load(chain, campaign_id)
    _run(request, chain, campaign, (body or RunSteps()).until)
    return _out(request, studio, campaign)


@router.get(
    "/campaigns/{campaign_id}/export",
    name="studio_campaign_export",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "The campaign's zip."}},
)
def export_campaign(campaign_id: str, request: Request) -> Response:
    """The campaign as a zip: images/, posts.csv, posts.md, campaign.json. Posts whose image is
    missing are marked MISSING inside; the `X-Missing-Images` header counts them."""
    studio = state_of(request).studio
    campaign = _load(_chain(studio), campaign_id)
    export = export_zip(campaign, studio.store)
    return Response(
        export.data,
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign.id}.zip"',
            "X-Missing-Images": str(len(export.missing)),
        },
    )
