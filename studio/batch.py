"""The batch job behind `dataprep.py`: prompts for the chosen episodes and seasons, then images.

Every step is cached (LLM answers by their key, images by a key over everything that affects the
pixels), so a second run with nothing changed makes no LLM call and no render. A failure on one
episode is reported and the job goes on with the others.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from studio import __version__
from studio.config import Settings
from studio.dataset import Episode, Series
from studio.errors import DatasetError, LLMUnavailableError, RenderError, StudioError
from studio.llm import LLM
from studio.metadata import encode_png, format_parameters
from studio.prompting import PromptSpec, write_episode_prompt, write_season_prompts
from studio.render import Renderer, RenderRequest, count_tokens
from studio.store import ImageRecord, Store

# progress(iterable, total=..., desc=..., unit=...) -> iterable; tqdm fits, as does a no-op.
Progress = Callable[..., Iterable[Any]]


def no_progress(iterable: Iterable[Any], **_: Any) -> Iterable[Any]:
    return iterable


@dataclass
class Selection:
    seasons: set[int] | None = None  # None: all
    episodes: set[tuple[int, int]] | None = None  # (season, episode); None: all
    targets: str = "all"  # all, episodes or seasons

    def pick_episodes(self, series: Series) -> list[Episode]:
        if self.targets == "seasons":
            return []
        return [
            e
            for e in series.episodes
            if (self.seasons is None or e.season in self.seasons)
            and (self.episodes is None or (e.season, e.episode) in self.episodes)
        ]

    def pick_seasons(self, series: Series) -> list[int]:
        if self.targets == "episodes" or (self.episodes is not None and self.seasons is None):
            return []
        return [s for s in series.seasons if self.seasons is None or s in self.seasons]

    def unknown(self, series: Series) -> list[str]:
        """Warnings for seasons and episodes asked for but missing; an error if nothing is left."""
        notes = []
        ids = {(e.season, e.episode) for e in series.episodes}
        ranges = ", ".join(
            f"{eps[0].id}-{eps[-1].id}"
            for eps in (series.episodes_of(n) for n in series.seasons)
            if eps
        )
        missing_seasons = sorted((self.seasons or set()) - set(series.seasons))
        if missing_seasons:
            notes.append(
                f"--seasons {','.join(map(str, missing_seasons))}: no such season in the series "
                f"(it has {', '.join(map(str, series.seasons))})"
            )
        missing_episodes = sorted((self.episodes or set()) - ids)
        if missing_episodes:
            names = ",".join(f"S{s:02d}E{e:02d}" for s, e in missing_episodes)
            notes.append(f"--episodes {names}: no such episode in the series (it has {ranges})")
        if notes and not self.pick_episodes(series) and not self.pick_seasons(series):
            raise DatasetError(f"Nothing to make: {'; '.join(notes)}.")
        return notes


@dataclass
class Job:
    """One image to make: what it is for, its prompt and its render settings."""

    target: str  # episode or season
    season: int
    episode: int | None
    style: str | None
    image_index: int
    spec: PromptSpec
    request: RenderRequest
    provenance: dict[str, Any]

    @property
    def label(self) -> str:
        if self.target == "episode":
            return f"S{self.season:02d}E{self.episode:02d}#{self.image_index + 1}"
        return f"S{self.season:02d} {self.style}"


@dataclass
class Summary:
    prompts_written: int = 0
    prompts_cached: int = 0
    images_rendered: int = 0
    images_cached: int = 0
    failed: list[str] = field(default_factory=list)
    llm_calls: int = 0
    seconds: float = 0.0
    placeholder: bool = False
    dry_run: bool = False
    prompts: list[tuple[str, PromptSpec]] = field(default_factory=list)

    @property
    def nothing_done(self) -> bool:
        return self.llm_calls == 0 and self.images_rendered == 0


def derive_seed(base: int, target: str, index: int) -> int:
    """A stable per-image seed from the base seed, so every image's seed is known in advance."""
    digest = hashlib.sha256(f"{base}:{target}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def _request(settings: Settings, spec: PromptSpec, seed: int) -> RenderRequest:
    return RenderRequest(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt,
        sampler=settings.sampler,
        steps=settings.steps,
        cfg=settings.cfg,
        width=settings.width,
        height=settings.height,
        seed=seed,
    )


def write_prompts(
    series: Series,
    selection: Selection,
    settings: Settings,
    llm: LLM,
    renderer: Renderer,
    store: Store,
    summary: Summary,
    refresh: bool = False,
    progress: Progress = no_progress,
) -> list[Job]:
    """Ask the LLM (or its cache) for every selected prompt; record them; return the image jobs."""

    def count(text: str) -> int:
        return count_tokens(renderer.tokenizer, text)

    jobs: list[Job] = []
    episodes = selection.pick_episodes(series)
    seasons = selection.pick_seasons(series)
    items: list[tuple[str, Any]] = [("episode", e) for e in episodes] + [
        ("season", s) for s in seasons
    ]
    for kind, item in progress(items, total=len(items), desc="prompts", unit="prompt"):
        try:
            if kind == "episode":
                result = write_episode_prompt(llm, series, item, count, refresh=refresh)
                store.add_prompt(
                    result.key,
                    "episode",
                    item.season,
                    item.episode,
                    None,
                    result.spec.to_dict(),
                    llm.model,
                    result.template_hash,
                )
                summary.prompts.append((item.id, result.spec))
                for index in range(settings.images_per_episode):
                    seed = derive_seed(settings.seed, item.id, index)
                    jobs.append(
                        Job(
                            "episode",
                            item.season,
                            item.episode,
                            None,
                            index,
                            result.spec,
                            _request(settings, result.spec, seed),
                            {
                                "template_hash": result.template_hash,
                                "prompt_key": result.key,
                                "llm_answers": result.answers,
                            },
                        )
                    )
            else:
                result = write_season_prompts(llm, series, item, count, refresh=refresh)
                season_id = series.seasons[item].id
                for style, spec in result.specs.items():
                    store.add_prompt(
                        f"{result.key}:{style}",
                        "season",
                        item,
                        None,
                        style,
                        spec.to_dict(),
                        llm.model,
                        result.template_hash,
                        result.trace,
                    )
                    summary.prompts.append((f"{season_id} {style}", spec))
                    seed = derive_seed(settings.seed, f"{season_id}:{style}", 0)
                    jobs.append(
                        Job(
                            "season",
                            item,
                            None,
                            style,
                            0,
                            spec,
                            _request(settings, spec, seed),
                            {
                                "template_hash": result.template_hash,
                                "prompt_key": result.key,
                                "llm_answers": result.answers,
                                "trace": result.trace,
                            },
                        )
                    )
        except LLMUnavailableError:
            raise
        except StudioError as exc:
            name = item.id if kind == "episode" else f"S{item:02d}"
            summary.failed.append(f"{name}: {exc}")
            continue
        if result.cached:
            summary.prompts_cached += 1
        else:
            summary.prompts_written += 1
    return jobs


def render_jobs(
    jobs: list[Job],
    settings: Settings,
    llm: LLM,
    renderer: Renderer,
    store: Store,
    summary: Summary,
    force: bool = False,
    progress: Progress = no_progress,
) -> None:
    """Render the jobs whose images are not in the catalog yet; store each as soon as it exists."""
    pending = []
    for job in jobs:
        key = renderer.cache_key(job.request)
        if not force and store.find_image(key) is not None:
            summary.images_cached += 1
        else:
            pending.append((key, job))
    batch_size = renderer.batch_size
    batches = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]
    bar = progress(batches, total=len(batches), desc="images", unit="batch")
    for batch in bar:
        try:
            images = renderer.render([job.request for _, job in batch])
        except RenderError as exc:
            summary.failed.extend(f"{job.label}: {exc}" for _, job in batch)
            continue
        for (key, job), image in zip(batch, images, strict=True):
            store_image(store, renderer, llm.model, job, key, image)
            summary.images_rendered += 1


def request_parameters(request: RenderRequest, model_label: str, version: str | None = None) -> str:
    """A request's A1111 infotext, as written into the PNG and shown in the dashboard."""
    return format_parameters(
        request.prompt,
        request.negative_prompt,
        {
            "Steps": request.steps,
            "Sampler": request.sampler,
            "CFG scale": float(request.cfg),
            "Seed": request.seed,
            "Size": f"{request.width}x{request.height}",
            "Model": model_label,
            "Version": version,
        },
    )


def store_image(
    store: Store, renderer: Renderer, llm_model: str, job: Job, key: str, image: Any
) -> None:
    """Write one image with its parameters inside and its catalog row."""
    request, model = job.request, renderer.model
    parameters = request_parameters(request, model.label, f"series-studio {__version__}")
    provenance = {
        **renderer.provenance(request),
        **job.provenance,
        "request": asdict(request),  # exact values, for recovering the catalog from the PNGs
        "model_label": model.label,
        "cache_key": key,
        "target": job.target,
        "season": job.season,
        "episode": job.episode,
        "style": job.style,
        "image_index": job.image_index,
        "llm_model": llm_model,
        "prompt_style": job.spec.style,
        "rationale": job.spec.rationale,
    }
    png = encode_png(image, parameters, provenance)
    store.add_image(
        ImageRecord(
            cache_key=key,
            target=job.target,
            season=job.season,
            episode=job.episode,
            style=job.style,
            image_index=job.image_index,
            prompt=request.prompt,
            negative_prompt=request.negative_prompt,
            model=model.label,
            sampler=request.sampler,
            steps=request.steps,
            cfg=request.cfg,
            width=request.width,
            height=request.height,
            seed=request.seed,
            placeholder=model.placeholder,
            provenance=provenance,
        ),
        png,
    )


def run_job(
    series: Series,
    selection: Selection,
    settings: Settings,
    llm: LLM,
    renderer: Renderer,
    store: Store,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress = no_progress,
) -> Summary:
    """Prompts, then (unless `dry_run`) images; returns the counts for the closing summary."""
    started = time.perf_counter()
    summary = Summary(placeholder=renderer.model.placeholder, dry_run=dry_run)
    calls_before = llm.calls
    jobs = write_prompts(
        series, selection, settings, llm, renderer, store, summary, refresh=force, progress=progress
    )
    if not dry_run:
        render_jobs(jobs, settings, llm, renderer, store, summary, force=force, progress=progress)
    summary.llm_calls = llm.calls - calls_before
    summary.seconds = time.perf_counter() - started
    return summary
