"""The series' own endpoints under `/studio/v1`: its seasons and episodes with their covers and
images, the catalog's PNGs and records, making an episode's or a season's images (the batch job
for that target only: same prompts, seeds and cache as `python dataprep.py`), prompt library
search and the batch jobs' runs. This router includes `cast`'s (characters, portraits,
storyboards) and `campaigns`' (the Marketing Assistant); `views` has what they share.

Handlers read the request, call the studio (`studio.api.Studio`, the workflows below it) and shape
the answer; an unknown season, episode, character, image or campaign is a 404 that names what
exists, a bad parameter a 422 that names the field. Image URLs are absolute, from the request's
base URL. Reference: docs/http-api.md#series-endpoints-studiov1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from studio.api import Studio
from studio.catalog.records import StoredImage
from studio.core.dataset import Episode
from studio.library.service import MAX_K, MAX_QUERY
from studio.server import campaigns, cast
from studio.server.state import Render, ServerState, state_of
from studio.server.views import (
    EPISODE_PATH,
    PNG_ROUTE,
    RECORD_ROUTE,
    SEASON_PATH,
    ImageOut,
    PromptOut,
    episode_of,
    image_out,
    image_url,
    not_found,
    prompt_out,
    result_out,
    season_of,
)
from studio.workflows.batch import Selection, run_job
from studio.writing.prompting import load_styles

router = APIRouter(prefix="/studio/v1", tags=["Series"])


# Answers ----------------------------------------------------------------------------------------


class SeasonOut(BaseModel):
    number: int = Field(description="The season's number.")
    id: str = Field(description="S01, S02, ...")
    title: str
    summary: str = Field(description="The data's summary, else one made of its episodes'.")
    episodes: int = Field(description="How many episodes it has.")
    images: int = Field(description="Images in the catalog: its episodes' and its own.")
    cover_url: str | None = Field(description="Its cover image (its newest style image), or null.")
    cover_key: str | None


class EpisodeOut(BaseModel):
    season: int
    episode: int
    id: str = Field(description="S01E03")
    title: str
    summary: str
    characters: list[str] = Field(description="Its cast, as the series data names them.")
    images: int = Field(description="Its images in the catalog.")
    cover_url: str | None = Field(description="Its cover (chosen, else its first image), or null.")
    cover_key: str | None


class StyleOut(BaseModel):
    style: str = Field(description="The style's key (noir, ...).")
    name: str
    prompt: PromptOut | None = Field(description="The LLM's newest prompt for it, or null.")
    images: list[ImageOut] = Field(description="Its images, oldest first.")


class SeasonDetail(SeasonOut):
    styles: list[StyleOut] = Field(description="The five season styles with their images.")
    episode_list: list[EpisodeOut]


class EpisodeDetail(EpisodeOut):
    prompt: PromptOut | None = Field(description="The LLM's newest prompt for it, or null.")


class EpisodeImages(BaseModel):
    episode: EpisodeOut
    images: list[ImageOut] = Field(description="Oldest first.")


class SeasonImages(BaseModel):
    season: int
    styles: list[StyleOut]


class MakeImages(BaseModel):
    """Options for making a target's images (the body may be left out)."""

    force: bool = Field(
        False, description="Ask the LLM and render again even where the catalog has the result."
    )


class LabelledPrompt(PromptOut):
    label: str = Field(description="What the prompt is for: S01E03, `S01 noir`.")


class MadeImages(BaseModel):
    """What making a target's images did: the batch job's counts, its prompts and images."""

    target: str
    prompts_written: int
    prompts_cached: int = Field(description="Prompts that came from the catalog: no LLM call.")
    images_rendered: int
    images_cached: int = Field(description="Images that came from the catalog: no render.")
    llm_calls: int
    seconds: float
    placeholder: bool = Field(description="The demo model made them: placeholders, not art.")
    failed: list[str] = Field(description="What failed, and why; the rest was made.")
    notes: list[str]
    prompts: list[LabelledPrompt]
    images: list[ImageOut]


class ImageRecord(ImageOut):
    parameters: dict[str, Any] = Field(description="Every field of its catalog record.")
    provenance: dict[str, Any] = Field(description="Where it came from: prompt key, LLM, ...")
    safety: dict[str, Any] | None = Field(description="The safety filter's verdict, if any.")


class HitOut(BaseModel):
    text: str = Field(description="The prompt found.")
    score: float = Field(description="Cosine similarity with the query.")
    how: str
    uses: int = Field(description="Catalog images and records that use this prompt.")
    image_key: str | None
    image_url: str | None


class SearchOut(BaseModel):
    query: str
    k: int
    hits: list[HitOut] = Field(description="Best first.")


class JobOut(BaseModel):
    id: int
    state: str = Field(description="running, finished, failed or stopped (killed or lost).")
    stage: str = Field(description="prompts, images or done.")
    selection: str = Field(description="What it was asked to make, in words.")
    executor: str
    started: str
    finished: str | None
    prompts_done: int
    prompts_total: int
    images_done: int
    images_total: int
    failures: list[str]
    seconds: dict[str, float] = Field(description="Seconds by stage (llm, render, write, total).")
    llm: str = Field(description="The LLM it asked, in words (credentials left out).")
    llm_calls: int = Field(description="Its calls that reached the LLM.")
    llm_concurrency: int = Field(
        description="How many LLM calls it made at once (0: not recorded, older jobs)."
    )


# Seasons and episodes ---------------------------------------------------------------------------


def _styles(studio: Studio, request: Request, season: int) -> list[StyleOut]:
    prompts = {p.target.style: p.spec for p in studio.store.prompts(target="season", season=season)}
    images: dict[str | None, list[StoredImage]] = {}
    for image in studio.store.images(target="season", season=season):
        images.setdefault(image.style, []).append(image)
    return [
        StyleOut(
            style=key,
            name=style["name"],
            prompt=prompt_out(prompts.get(key)),
            images=[image_out(request, image) for image in images.get(key, [])],
        )
        for key, style in load_styles().items()
    ]


def _season(studio: Studio, request: Request, season: int) -> SeasonOut:
    series = studio.series
    covers = [s.images[-1] for s in _styles(studio, request, season) if s.images]
    own = len(studio.store.images(target="season", season=season))
    return SeasonOut(
        number=season,
        id=series.seasons[season].id,
        title=series.seasons[season].title,
        summary=series.season_summary(season),
        episodes=len(series.episodes_of(season)),
        images=own + sum(studio.store.image_counts(season).values()),
        cover_url=covers[0].url if covers else None,
        cover_key=covers[0].key if covers else None,
    )


def _episodes(studio: Studio, request: Request, episodes: Iterable[Episode]) -> list[EpisodeOut]:
    covers: dict[int, dict[int, StoredImage]] = {}
    counts: dict[int, dict[int, int]] = {}
    answers = []
    for e in episodes:
        if e.season not in covers:
            covers[e.season] = studio.store.episode_covers(e.season)
            counts[e.season] = studio.store.image_counts(e.season)
        cover = covers[e.season].get(e.episode)
        answers.append(
            EpisodeOut(
                season=e.season,
                episode=e.episode,
                id=e.id,
                title=e.title,
                summary=e.summary,
                characters=list(e.characters),
                images=counts[e.season].get(e.episode, 0),
                cover_url=image_url(request, cover.cache_key) if cover else None,
                cover_key=cover.cache_key if cover else None,
            )
        )
    return answers


@router.get("/seasons", response_model=list[SeasonOut])
def list_seasons(request: Request) -> list[SeasonOut]:
    """The series' seasons, with their covers and counts."""
    studio = state_of(request).studio
    return [_season(studio, request, season) for season in studio.series.seasons]


@router.get(SEASON_PATH, response_model=SeasonDetail)
def get_season(season: int, request: Request) -> SeasonDetail:
    """A season: its styles' images and prompts, and its episodes."""
    studio = state_of(request).studio
    season_of(studio.series, season)
    return SeasonDetail(
        **_season(studio, request, season).model_dump(),
        styles=_styles(studio, request, season),
        episode_list=_episodes(studio, request, studio.series.episodes_of(season)),
    )


@router.get(SEASON_PATH + "/episodes", response_model=list[EpisodeOut])
def list_season_episodes(season: int, request: Request) -> list[EpisodeOut]:
    """A season's episodes, with their covers."""
    studio = state_of(request).studio
    season_of(studio.series, season)
    return _episodes(studio, request, studio.series.episodes_of(season))


@router.get("/episodes", response_model=list[EpisodeOut])
def list_episodes(
    request: Request,
    season: int | None = Query(None, description="Only this season's episodes."),
) -> list[EpisodeOut]:
    """Every episode of the series (or of one season), with its cover."""
    studio = state_of(request).studio
    if season is not None:
        season_of(studio.series, season)
    chosen = [e for e in studio.series.episodes if season is None or e.season == season]
    return _episodes(studio, request, chosen)


@router.get(EPISODE_PATH, response_model=EpisodeDetail)
def get_episode(season: int, episode: int, request: Request) -> EpisodeDetail:
    """An episode: title, summary, cast, cover and the LLM's newest prompt."""
    studio = state_of(request).studio
    found = episode_of(studio.series, season, episode)
    prompts = studio.store.prompts(target="episode", season=season, episode=episode)
    return EpisodeDetail(
        **_episodes(studio, request, [found])[0].model_dump(),
        prompt=prompt_out(prompts[-1].spec if prompts else None),
    )


@router.get(EPISODE_PATH + "/images", response_model=EpisodeImages)
def episode_images(season: int, episode: int, request: Request) -> EpisodeImages:
    """An episode's images in the catalog, oldest first."""
    studio = state_of(request).studio
    found = episode_of(studio.series, season, episode)
    images = studio.store.images(target="episode", season=season, episode=episode)
    return EpisodeImages(
        episode=_episodes(studio, request, [found])[0],
        images=[image_out(request, image) for image in images],
    )


@router.get(SEASON_PATH + "/images", response_model=SeasonImages)
def season_images(season: int, request: Request) -> SeasonImages:
    """A season's images by style, with each style's newest prompt."""
    studio = state_of(request).studio
    season_of(studio.series, season)
    return SeasonImages(season=season, styles=_styles(studio, request, season))


# Making a target's images: the batch job for it alone ---------------------------------------------


class _Bar:
    """The batch job's progress bar (tqdm's shape), kept in the server's activity."""

    def __init__(self, render: Render, iterable: Iterable[Any] | None, total: int, desc: str):
        self.render, self.iterable, self.images = render, iterable or (), desc == "images"
        if self.images:
            render.count, render.number = max(1, total), 0

    def __iter__(self) -> Iterator[Any]:
        return iter(self.iterable)

    @property
    def total(self) -> int:
        return self.render.count

    @total.setter
    def total(self, total: int) -> None:  # the images bar learns its total as prompts come in
        if self.images:
            self.render.count = max(1, total)

    def update(self, n: int = 1) -> None:
        if self.images:
            self.render.number += n

    def close(self) -> None:
        pass


def _make(
    state: ServerState, request: Request, selection: Selection, label: str, force: bool
) -> MadeImages:
    studio = state.studio
    with state.activity.render("series") as render:
        summary = run_job(
            studio.series,
            selection,
            studio.settings,
            studio.llm,
            studio.images,
            force=force,
            progress=lambda iterable=None, total=0, desc="", **_: _Bar(
                render, iterable, total, desc
            ),
        )
    made = [result_out(request, result) for result in summary.results]
    return MadeImages(
        target=label,
        prompts_written=summary.prompts_written,
        prompts_cached=summary.prompts_cached,
        images_rendered=summary.images_rendered,
        images_cached=summary.images_cached,
        llm_calls=summary.llm_calls,
        seconds=round(summary.seconds, 3),
        placeholder=summary.placeholder,
        failed=summary.failed,
        notes=summary.notes,
        prompts=[LabelledPrompt(label=name, **spec.to_dict()) for name, spec in summary.prompts],
        images=[image for image in made if image is not None],
    )


@router.post(EPISODE_PATH + "/images", response_model=MadeImages)
def make_episode_images(
    season: int, episode: int, request: Request, body: MakeImages | None = None
) -> MadeImages:
    """The episode's prompt (the LLM, or its cache) and images (rendered, or the catalog's), as
    `python dataprep.py --episodes S01E03 --only episodes` makes them."""
    state = state_of(request)
    found = episode_of(state.studio.series, season, episode)
    selection = Selection(episodes={(season, episode)}, targets="episodes")
    return _make(state, request, selection, found.id, (body or MakeImages()).force)


@router.post(SEASON_PATH + "/images", response_model=MadeImages)
def make_season_images(season: int, request: Request, body: MakeImages | None = None) -> MadeImages:
    """The season's five style prompts (self-ask) and images, as `python dataprep.py --seasons N
    --only seasons` makes them."""
    state = state_of(request)
    season_of(state.studio.series, season)
    selection = Selection(seasons={season}, targets="seasons")
    label = state.studio.series.seasons[season].id
    return _make(state, request, selection, label, (body or MakeImages()).force)


# Catalog images ---------------------------------------------------------------------------------


def _stored(request: Request, key: str) -> StoredImage:
    image = state_of(request).studio.store.find_image(key)
    if image is None:
        raise not_found(f"Image {key!r} does not exist in the catalog.")
    return image


@router.get(
    "/images/{key}.png",
    name=PNG_ROUTE,
    response_class=FileResponse,
    responses={200: {"content": {"image/png": {}}, "description": "The catalog's PNG."}},
)
def image_png(key: str, request: Request) -> FileResponse:
    """The catalog's PNG, with its `parameters` (A1111) and `studio` metadata chunks."""
    image = _stored(request, key)
    path = state_of(request).studio.store.image_path(image)
    return FileResponse(path, media_type="image/png", filename=f"{key}.png",
                        content_disposition_type="inline")  # fmt: skip


@router.get("/images/{key}", name=RECORD_ROUTE, response_model=ImageRecord)
def image_record(key: str, request: Request) -> ImageRecord:
    """An image's catalog record: its parameters and provenance."""
    image = _stored(request, key)
    verdict = state_of(request).studio.store.safety(key)
    return ImageRecord(
        **image_out(request, image).model_dump(),
        parameters=image.summary(),
        provenance=image.provenance,
        safety=verdict.as_dict() if verdict else None,
    )


# The prompt library and the batch jobs ------------------------------------------------------------


@router.get("/library/search", response_model=SearchOut)
def library_search(
    request: Request,
    q: str = Query(min_length=1, max_length=MAX_QUERY, description="What to find, any language."),
    k: int = Query(5, ge=1, le=MAX_K, description="How many prompts."),
    season: int | None = Query(None, description="Only prompts used in this season."),
    episode: int | None = Query(None, description="Only prompts used in this episode."),
    target: str | None = Query(None, description="Only this kind: episode, season, character..."),
) -> SearchOut:
    """The `k` library prompts closest in meaning to `q`, best first."""
    if not q.strip():
        raise HTTPException(422, "`q`: the search is empty; type a few words, in any language.")
    studio = state_of(request).studio
    filters = {"season": season, "episode": episode, "target": target}
    hits = studio.library.search(q, k=k, **{n: v for n, v in filters.items() if v is not None})
    return SearchOut(
        query=q,
        k=k,
        hits=[
            HitOut(
                text=hit.text,
                score=round(float(hit.score), 4),
                how=hit.how,
                uses=len(hit.items),
                image_key=hit.image_key,
                image_url=image_url(request, hit.image_key) if hit.image_key else None,
            )
            for hit in hits
        ],
    )


@router.get("/jobs", response_model=list[JobOut])
def list_jobs(
    request: Request, limit: int = Query(20, ge=1, le=200, description="How many runs.")
) -> list[JobOut]:
    """The batch job's newest runs on this catalog (`dataprep.py`'s and this API's), newest
    first: stage, counts, failures with their reasons, seconds by stage."""
    return [
        JobOut(
            id=job.id,
            state=job.state,
            stage=job.stage,
            selection=job.selection,
            executor=job.executor,
            started=job.started_at,
            finished=job.finished_at,
            prompts_done=job.prompts_done,
            prompts_total=job.prompts_total,
            images_done=job.images_done,
            images_total=job.images_total,
            failures=job.failures,
            seconds=job.seconds,
            llm=job.llm,
            llm_calls=job.llm_calls,
            llm_concurrency=job.llm_concurrency,
        )
        for job in state_of(request).studio.batch_jobs(limit)
    ]


router.include_router(cast.router)
router.include_router(campaigns.router)
