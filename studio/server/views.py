"""What the series' endpoints (`series`, `campaigns`) share: the catalog image as JSON
(`ImageOut`, with absolute URLs from the request's base URL), and the look-ups of a season, an
episode or a character that answer 404 with what the series does have."""

from __future__ import annotations

from fastapi import HTTPException, Request
from pydantic import BaseModel, Field

from studio.catalog.records import StoredImage
from studio.core.dataset import Episode, Series
from studio.core.errors import DatasetError
from studio.core.targets import PromptSpec
from studio.images.service import ImageResult
from studio.writing.cast import check_name

PNG_ROUTE = "studio_image_png"  # the route names `url_for` builds image URLs from
RECORD_ROUTE = "studio_image_record"
SEASON_PATH = "/seasons/{season}"
EPISODE_PATH = "/seasons/{season}/episodes/{episode}"
MAX_NAMES = 12  # names listed in a 404's message before "and N more"


class ImageOut(BaseModel):
    """One catalog image: where to fetch it and what made it."""

    key: str = Field(description="The catalog's key of the image (a hash over its request).")
    url: str = Field(description="The PNG, with its generation parameters inside.")
    record_url: str = Field(description="The image's catalog record as JSON.")
    target: str = Field(description="What it is for, in words: `S01E03#1`, `S01 noir`, ...")
    kind: str = Field(description="episode, season, character, storyboard, campaign, api, ...")
    prompt: str
    negative_prompt: str
    seed: int
    width: int
    height: int
    steps: int
    sampler: str
    model: str = Field(description="The image model that rendered it.")
    created: str = Field(description="When it was stored (UTC, ISO 8601).")
    placeholder: bool = Field(description="Made by the demo model: a placeholder, not art.")
    cached: bool | None = Field(
        None,
        description="In answers that make images: whether it came from the catalog (no render). "
        "Null in listings.",
    )


class PromptOut(BaseModel):
    """A prompt the LLM wrote for a target."""

    prompt: str
    negative_prompt: str
    style: str
    rationale: str = Field(description="Why this image, in the LLM's words.")


def image_url(request: Request, key: str) -> str:
    return str(request.url_for(PNG_ROUTE, key=key))


def image_out(request: Request, image: StoredImage, cached: bool | None = None) -> ImageOut:
    return ImageOut(
        key=image.cache_key,
        url=image_url(request, image.cache_key),
        record_url=str(request.url_for(RECORD_ROUTE, key=image.cache_key)),
        target=image.target_of.label(image.image_index),
        kind=image.target,
        prompt=image.prompt,
        negative_prompt=image.negative_prompt,
        seed=image.seed,
        width=image.width,
        height=image.height,
        steps=image.steps,
        sampler=image.sampler,
        model=image.model,
        created=image.created_at,
        placeholder=image.placeholder,
        cached=cached,
    )


def result_out(request: Request, result: ImageResult) -> ImageOut | None:
    """A made image (None when its render failed: the failure is in the answer's `failed`)."""
    if result.record is None:
        return None
    return image_out(request, result.record, cached=result.cached)


def prompt_out(spec: PromptSpec | None) -> PromptOut | None:
    if spec is None:
        return None
    return PromptOut(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        style=spec.style,
        rationale=spec.rationale,
    )


def not_found(message: str) -> HTTPException:
    return HTTPException(status_code=404, detail=message)


def listed(items: list[str]) -> str:
    shown = ", ".join(items[:MAX_NAMES])
    more = len(items) - MAX_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def numbers(values: list[int]) -> str:
    """1-12 for a run, else 1, 3, 7."""
    values = sorted(values)
    if len(values) > 2 and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}-{values[-1]}"
    return ", ".join(map(str, values))


def season_of(series: Series, season: int) -> int:
    """`season`, or a 404 naming the seasons there are."""
    if season not in series.seasons:
        have = numbers(list(series.seasons))
        raise not_found(f"Season {season} does not exist; the series has seasons {have}.")
    return season


def episode_of(series: Series, season: int, episode: int) -> Episode:
    """The episode, or a 404 naming the seasons or the season's episodes there are."""
    season_of(series, season)
    for found in series.episodes_of(season):
        if found.episode == episode:
            return found
    have = numbers([e.episode for e in series.episodes_of(season)])
    raise not_found(
        f"Episode {episode} of season {season} (S{season:02d}E{episode:02d}) does not exist; "
        f"season {season} has episodes {have}."
    )


def character_of(series: Series, name: str) -> str:
    """`name` as the series spells it, or a 404 naming the cast."""
    try:
        return check_name(series, name)
    except DatasetError as error:
        cast = series.ranked_characters()
        raise not_found(f"{error} The series has {len(cast)} characters: {listed(cast)}.") from None
