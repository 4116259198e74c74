"""An episode's storyboard: the LLM picks its key moments in story order (with the cast's
looks), each moment is rendered like any image (cached, stored, with the characters' references)."""

from __future__ import annotations

from collections.abc import Callable

from studio.core.errors import ParameterError
from studio.core.targets import Target
from studio.images.service import ImageResult, ImageTask
from studio.workflows.batch import derive_seed, settings_request
from studio.workflows.characters import looks
from studio.workflows.host import StudioHost
from studio.workflows.render_feed import with_reference
from studio.writing.storyboards import (
    Storyboard,
    moment_records,
    stored_storyboard,
    write_storyboard,
)


def storyboard(
    studio: StudioHost,
    season: int,
    episode: int,
    refresh: bool = False,
    on_result: Callable[[ImageResult], None] | None = None,
) -> Storyboard:
    """An episode's key moments in story order, each rendered (cached like everything)."""
    chosen = next(
        (e for e in studio.series.episodes if (e.season, e.episode) == (season, episode)), None
    )
    if chosen is None:
        raise ParameterError(f"No episode S{season:02d}E{episode:02d} in {studio.series.title}.")
    count = studio.backend.count_tokens
    spec = next(
        iter(studio.store.prompts(target="episode", season=season, episode=episode)[-1:]), None
    )
    style = spec.spec.style if spec and spec.spec.style else None
    board = write_storyboard(
        studio.llm, studio.series, chosen, count, looks(studio), refresh=refresh,
        **({"style": style} if style else {}),
    )  # fmt: skip
    studio.store.add_prompts(moment_records(chosen, board, studio.llm.model))
    # One seed, so the strip reads as one piece; a moment whose prompt still equals an earlier
    # one's (write_storyboard rewrites repeats) takes its own seed: never two moments, one image.
    seen: set[str] = set()
    seeds = []
    for index, m in enumerate(board.moments):
        repeat = m.spec.prompt in seen
        seen.add(m.spec.prompt)
        seeds.append(derive_seed(studio.settings.seed, f"{chosen.id}:storyboard", index * repeat))
    jobs = [
        ImageTask(
            settings_request(studio.settings, m.spec.prompt, m.spec.negative_prompt, seeds[index]),
            Target("storyboard", season, episode),
            index,
            {
                "storyboard": board.key,
                "moment": index,
                "moment_title": m.title,
                "cast": list(m.cast),
                "prompt_key": f"{board.key}:{index}",
                "llm_answers": board.answers,
                "llm_model": studio.llm.model,
                "template_hash": board.template_hash,
            },
        )
        for index, m in enumerate(board.moments)
    ]
    jobs = [with_reference(job, studio.images, studio.settings) for job in jobs]
    studio.images.make(jobs, on_result=on_result)
    return stored_storyboard(studio.store, season, episode)  # type: ignore[return-value]
