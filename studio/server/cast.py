"""The cast and the storyboards under `/studio/v1` (through `series.router`): the characters with
their current looks and portraits, a portrait made on request (the LLM writes the look first when
there is none), and an episode's storyboard, stored or made. Reference:
docs/http-api.md#series-endpoints-studiov1."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from studio.api import Studio
from studio.server.state import state_of
from studio.server.views import (
    EPISODE_PATH,
    ImageOut,
    PromptOut,
    character_of,
    episode_of,
    image_out,
    image_url,
    not_found,
    prompt_out,
)
from studio.writing.storyboards import moment_count

router = APIRouter(tags=["Cast and storyboards"])


class LookOut(BaseModel):
    descriptor: str = Field(description="What every prompt says of the character, verbatim.")
    portrait_prompt: str
    version: int
    source: str = Field(description="llm, description or edit (a person's).")


class CharacterOut(BaseModel):
    name: str
    description: str
    episodes: int = Field(description="Episodes they are in.")
    look: LookOut | None = Field(description="Their current look, or null before one is written.")
    portrait_url: str | None
    portrait: ImageOut | None


class MakePortrait(BaseModel):
    """Options for a portrait (the body may be left out)."""

    force: bool = Field(False, description="Render again even when the catalog has it.")


class Portrait(BaseModel):
    character: CharacterOut
    image: ImageOut


class MomentOut(BaseModel):
    index: int = Field(description="Its place in the story, from 0.")
    title: str
    prompt: PromptOut
    image: ImageOut | None = Field(description="Its newest image, or null if not rendered.")


class StoryboardOut(BaseModel):
    season: int
    episode: int
    key: str = Field(description="The LLM answer the moments came from.")
    complete: bool = Field(description="Every moment has its image.")
    moments: list[MomentOut]


class MakeStoryboard(BaseModel):
    """Options for a storyboard (the body may be left out)."""

    refresh: bool = Field(False, description="Ask the LLM for new moments.")


# The cast ---------------------------------------------------------------------------------------


def _character(studio: Studio, request: Request, name: str) -> CharacterOut:
    known = studio.series.characters.get(name)
    look = studio.store.character(name)
    portrait = studio.portrait_of(name)
    return CharacterOut(
        name=name,
        description=known.description if known else "",
        episodes=len(studio.series.episodes_with(name)),
        look=None
        if look is None
        else LookOut(
            descriptor=look.descriptor,
            portrait_prompt=look.portrait,
            version=look.version,
            source=look.source,
        ),
        portrait_url=image_url(request, portrait.cache_key) if portrait else None,
        portrait=image_out(request, portrait) if portrait else None,
    )


@router.get("/characters", response_model=list[CharacterOut])
def list_characters(request: Request) -> list[CharacterOut]:
    """The cast, the most important first: descriptions, current looks, portraits."""
    studio = state_of(request).studio
    return [_character(studio, request, name) for name in studio.series.ranked_characters()]


@router.get("/characters/{name}", response_model=CharacterOut)
def get_character(name: str, request: Request) -> CharacterOut:
    """One character (the name as the series spells it; case does not matter)."""
    studio = state_of(request).studio
    return _character(studio, request, character_of(studio.series, name))


@router.post("/characters/{name}/portrait", response_model=Portrait)
def make_portrait(name: str, request: Request, body: MakePortrait | None = None) -> Portrait:
    """The portrait of the character's current look (the LLM writes the look first when there
    is none); the catalog's when it was made before."""
    state = state_of(request)
    studio = state.studio
    name = character_of(studio.series, name)
    with state.activity.render("portrait") as render:
        result = studio.character_portrait(
            name, on_step=render.on_step, force=(body or MakePortrait()).force
        )
    return Portrait(
        character=_character(studio, request, name),
        image=image_out(request, result.record, cached=result.cached),  # type: ignore[arg-type]
    )


# Storyboards ------------------------------------------------------------------------------------


def _storyboard(request: Request, season: int, episode: int, board: Any) -> StoryboardOut:
    moments = []
    for index, (record, image) in enumerate(zip(board.moments, board.images, strict=True)):
        moments.append(
            MomentOut(
                index=index,
                title=record.spec.rationale,
                prompt=prompt_out(record.spec),  # type: ignore[arg-type]
                image=image_out(request, image) if image is not None else None,
            )
        )
    return StoryboardOut(
        season=season, episode=episode, key=board.key, complete=board.complete, moments=moments
    )


@router.get(EPISODE_PATH + "/storyboard", response_model=StoryboardOut)
def get_storyboard(season: int, episode: int, request: Request) -> StoryboardOut:
    """The episode's newest storyboard in the catalog (no model work); 404 when it has none."""
    studio = state_of(request).studio
    found = episode_of(studio.series, season, episode)
    board = studio.stored_storyboard(season, episode)
    if board is None:
        raise not_found(f"{found.id} has no storyboard yet; POST to this URL to make one.")
    return _storyboard(request, season, episode, board)


@router.post(EPISODE_PATH + "/storyboard", response_model=StoryboardOut)
def make_storyboard(
    season: int, episode: int, request: Request, body: MakeStoryboard | None = None
) -> StoryboardOut:
    """The episode's key moments in story order (the LLM), each rendered (cached)."""
    state = state_of(request)
    found = episode_of(state.studio.series, season, episode)
    with state.activity.render("storyboard", moment_count(found.summary)) as render:
        board = state.studio.storyboard(
            season,
            episode,
            refresh=(body or MakeStoryboard()).refresh,
            on_result=lambda _result: render.next(),
        )
    return _storyboard(request, season, episode, board)
