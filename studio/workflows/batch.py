"""The batch job behind `dataprep.py`: prompts for the chosen episodes and seasons, then images.

Every step is cached (LLM answers by their key, images by a key over everything that affects the
pixels), so a second run with nothing changed makes no LLM call and no render. A failure on one
episode is reported and the job goes on with the others.
"""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from studio.catalog.job_log import JobLog
from studio.catalog.records import CharacterRecord, PromptRecord, StoredImage
from studio.catalog.store import CATALOG_NAME, Store
from studio.core.config import Settings, setting
from studio.core.dataset import Episode, Series
from studio.core.errors import CatalogError, DatasetError, LLMUnavailableError, StudioError
from studio.core.params import RANDOM_SEED, RenderRequest, draw_seed
from studio.core.targets import Target
from studio.images.executors import RenderExecutor
from studio.images.service import ImageResult, ImageService, ImageTask
from studio.llm.choice import backend_description
from studio.llm.client import LLM
from studio.workflows.render_feed import Progress, RenderFeed, draws_alongside
from studio.writing.cast import (
    PORTRAIT_NEGATIVE,
    cast_for_job,
    character_data,
    current_looks,
    keeps_look,
    save_look,
    write_look,
)
from studio.writing.prompting import (
    EpisodePrompt,
    PromptSpec,
    SeasonPrompts,
    ask_episode,
    ask_season,
    base_negative,
    episode_data,
    episode_prompt,
    merge_phrases,
    season_data,
    season_prompts,
    templates_hash,
)


class _SilentBar:
    def __init__(self, iterable: Iterable[Any] | None):
        self._iterable = iterable if iterable is not None else ()

    def __iter__(self) -> Iterator[Any]:
        return iter(self._iterable)

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def no_progress(iterable: Iterable[Any] | None = None, **_: Any) -> _SilentBar:
    return _SilentBar(iterable)


@dataclass
class Selection:
    seasons: set[int] | None = None  # None: all
    episodes: set[tuple[int, int]] | None = None  # (season, episode); None: all
    targets: str = "all"  # all, episodes, seasons or characters

    def describe(self) -> str:
        """In words, for the job's record: "seasons 1, 2; S01E03; episodes only"."""
        parts = []
        if self.seasons is not None:
            parts.append("seasons " + ", ".join(map(str, sorted(self.seasons))))
        if self.episodes is not None:
            parts.append(", ".join(f"S{s:02d}E{e:02d}" for s, e in sorted(self.episodes)))
        if self.targets != "all":
            parts.append(f"{self.targets} only")
        return "; ".join(parts) or "the whole series"

    def pick_episodes(self, series: Series) -> list[Episode]:
        if self.targets in ("seasons", "characters"):
            return []
        return [
            e
            for e in series.episodes
            if (self.seasons is None or e.season in self.seasons)
            and (self.episodes is None or (e.season, e.episode) in self.episodes)
        ]

    def pick_characters(self, series: Series, mode: str) -> list[str]:
        """The characters whose looks and portraits to make (`mode`: Settings.characters)."""
        if self.targets not in ("all", "characters"):
            return []
        names = None
        if self.seasons is not None or self.episodes is not None:
            chosen = Selection(self.seasons, self.episodes).pick_episodes(series)
            names = [n for e in chosen for n in e.characters]
        return cast_for_job(series, mode, names)

    def pick_seasons(self, series: Series) -> list[int]:
        if self.targets in ("episodes", "characters") or (
            self.episodes is not None and self.seasons is None
        ):
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
    notes: list[str] = field(default_factory=list)  # worth knowing, not failures
    stages: dict[str, float] = field(default_factory=dict)  # llm, render, write -> seconds
    results: list[ImageResult] = field(default_factory=list)  # made or found, portraits first
    repairs: list[str] = field(default_factory=list)  # LLM answers fixed (English), and how
    alongside: bool = False  # the images were drawn while the LLM wrote (`draws_alongside`)

    def count(self, result: ImageResult) -> None:
        if result.error:
            self.failed.append(f"{result.job.label}: {result.error}")
        elif result.cached:
            self.images_cached += 1
        else:
            self.images_rendered += 1

    @property
    def nothing_done(self) -> bool:
        return self.llm_calls == 0 and self.images_rendered == 0


def derive_seed(base: int, target: str, index: int) -> int:
    """A stable per-image seed from the base seed, so every image's seed is known in advance; a
    random one for a base of -1 (RANDOM_SEED; the batch job draws one base seed per run first)."""
    if base == RANDOM_SEED:
        return draw_seed()
    digest = hashlib.sha256(f"{base}:{target}:{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def random_seed_note(seed: int) -> str:
    """What a run with seed -1 says of the base seed it drew."""
    return f"Seed -1: this run's base seed was {seed}; --seed {seed} makes the same images again."


def _request(settings: Settings, spec: PromptSpec, seed: int) -> RenderRequest:
    return settings_request(settings, spec.prompt, spec.negative_prompt, seed)


def settings_request(
    settings: Settings, prompt: str, negative_prompt: str, seed: int
) -> RenderRequest:
    """A txt2img request with the settings' sampler, steps, CFG and size."""
    return RenderRequest(
        prompt=prompt,
        negative_prompt=negative_prompt,
        sampler=settings.sampler,
        steps=settings.steps,
        cfg=settings.cfg,
        width=settings.width,
        height=settings.height,
        seed=seed,
    )


def save_episode_prompt(store: Store, episode: Episode, result: EpisodePrompt, llm_model: str):
    """Record an episode prompt (the batch job's, or a rewrite from the dashboard)."""
    store.add_prompt(
        PromptRecord(
            result.key,
            Target("episode", episode.season, episode.episode),
            result.spec,
            llm_model,
            result.template_hash,
        )
    )


def _prompt_provenance(result: Any, llm: LLM, spec: PromptSpec) -> dict[str, Any]:
    """What an image records of the prompt it was made from (plain values, for recovery too)."""
    return {
        "template_hash": result.template_hash,
        "prompt_key": result.key,
        "llm_answers": result.answers,
        "llm_model": llm.model,
        "prompt_style": spec.style,
        "rationale": spec.rationale,
    }


def portrait_request(settings: Settings, name: str, portrait: str) -> RenderRequest:
    """The render request of a character's reference portrait (`portrait`: its prompt)."""
    negative = merge_phrases(PORTRAIT_NEGATIVE, base_negative())
    return settings_request(
        settings, portrait, negative, derive_seed(settings.seed, f"character:{name}", 0)
    )


def portrait_job(
    settings: Settings,
    record: CharacterRecord,
    llm_model: str = "",
    llm_answers: dict[str, str] | None = None,
) -> ImageTask:
    """The reference portrait of one version of a character's look (`llm_answers`: the LLM's
    answer it was written from, kept in the PNG so that a lost catalog gets it back)."""
    return ImageTask(
        portrait_request(settings, record.name, record.portrait),
        Target("character", style=record.name),
        record.version - 1,
        {
            "cast": [record.name],
            "character": {
                "name": record.name,
                "version": record.version,
                "descriptor": record.descriptor,
                "portrait": record.portrait,
                "source": record.source,
                "llm_key": record.llm_key,
                "note": record.note,
                "created_at": record.created_at,
            },
            "prompt_key": record.llm_key,
            "llm_model": llm_model,
            "llm_answers": llm_answers or {},
        },
    )


def look_answers(store: Store, record: CharacterRecord) -> dict[str, str]:
    """The cached LLM answer a look was written from, by its key (none for an edit)."""
    answer = store.get_llm_response(record.llm_key) if record.llm_key else None
    return {record.llm_key: answer} if answer is not None else {}


@dataclass(frozen=True)
class PromptTask:
    """One planned piece of LLM work: a character's look, an episode's prompt or a season's
    five, keyed by a hash over everything that goes into the question (templates, the data sent,
    the LLM settings), so the same input always plans the same keys."""

    kind: str  # "character", "episode" or "season"
    name: str  # the character's name, S01E03 or S01
    key: str
    item: Any = field(compare=False)  # the name, the Episode or the season number


def _task_key(kind: str, templates: tuple[str, ...], data: Any, settings: Settings) -> str:
    from studio.llm.choice import choose_backend

    choice = choose_backend(settings)
    payload = {
        "kind": kind,
        "templates": templates_hash(*templates),
        "data": data,
        "llm": [choice.kind, choice.model, settings.llm_seed, settings.llm_temperature],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_prompts(series: Series, selection: Selection, settings: Settings) -> list[PromptTask]:
    """The LLM work a selection asks for, in the order it is recorded: characters, episodes,
    seasons. Pure: it reads no catalog and calls no model; what the catalog already holds is
    skipped when the plan runs (a cached answer costs nothing, a kept look is not asked for)."""
    tasks = [
        PromptTask(
            "character",
            name,
            _task_key("character", ("character_look.md",), character_data(series, name), settings),
            name,
        )
        for name in selection.pick_characters(series, settings.characters)
    ]
    for episode in selection.pick_episodes(series):
        data = episode_data(series, episode)
        key = _task_key("episode", ("episode_meta.md",), data, settings)
        tasks.append(PromptTask("episode", episode.id, key, episode))
    for season in selection.pick_seasons(series):
        data = season_data(series, season)
        templates = ("season_self_ask.md", "season_styles.md")
        key = _task_key("season", templates, data, settings)
        tasks.append(PromptTask("season", f"S{season:02d}", key, season))
    return tasks


def ask_task(task: PromptTask, llm: LLM, series: Series, count: Any, refresh: bool) -> Any:
    """The LLM part of a task (run in a worker thread): nothing here writes the catalog but
    the LLM's answer cache."""
    if task.kind == "character":
        return write_look(llm, series, task.item, count, refresh=refresh)
    if task.kind == "episode":
        return ask_episode(llm, series, task.item, refresh=refresh)
    return ask_season(llm, series, task.item, refresh=refresh)


def ask_all(
    tasks: list[PromptTask],
    llm: LLM,
    series: Series,
    count: Any,
    refresh: bool = False,
    on_done: Callable[[PromptTask, Any], None] | None = None,
) -> dict[str, Any]:
    """Each task's answer (or the StudioError it failed with), by task key, asking the LLM
    `llm.concurrency` at a time, each handed to `on_done` as it comes in. One at a time, the
    looks go first (their portraits can be drawn while the rest is asked, and the other prompts
    wait for them); several at a time, the seasons go first (each is a few calls in a row), then
    the looks.

    An LLMUnavailableError (no LLM at all) stops the work not yet started and is raised.
    """
    if llm.concurrency <= 1:
        order = sorted(tasks, key=lambda t: (t.kind != "character", t.kind != "season"))
    else:
        order = sorted(tasks, key=lambda t: (t.kind != "season", t.kind != "character"))
    results: dict[str, Any] = {}
    workers = max(1, min(llm.concurrency, len(order)))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="llm")
    try:
        futures = {pool.submit(ask_task, task, llm, series, count, refresh): task for task in order}
        for future in as_completed(futures):
            task = futures[future]
            try:
                results[task.key] = future.result()
            except LLMUnavailableError:
                raise
            except StudioError as exc:
                results[task.key] = exc
            if on_done:
                on_done(task, results[task.key])
    except KeyboardInterrupt:
        llm.interrupt()  # the workers' calls give up now: the pool (and the exit) need not wait
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        llm.resume()
    return results


@dataclass
class _Written:
    """What one planned task gave: its prompts (label, spec) and image jobs, or why it failed,
    with what the job's summary says of it."""

    prompts: list[tuple[str, PromptSpec]] = field(default_factory=list)
    jobs: list[ImageTask] = field(default_factory=list)
    failed: str = ""
    notes: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    cached: bool = False

    def tell(self, summary: Summary) -> None:
        if self.failed:
            summary.failed.append(self.failed)
            return
        summary.notes += self.notes
        summary.repairs += self.repairs
        summary.prompts += self.prompts
        summary.prompts_cached += self.cached
        summary.prompts_written += not self.cached


def _record_look(
    task: PromptTask, answer: Any, store: Store, settings: Settings, llm: LLM
) -> _Written:
    """A character's look (`answer`: the LLM's, or the CharacterRecord the catalog keeps),
    saved, with its portrait's job."""
    if isinstance(answer, StudioError):
        return _Written(failed=f"{task.name}: {answer}")
    written = _Written(cached=True)
    record = answer
    if not isinstance(answer, CharacterRecord):
        written.notes = [f"{task.name}: {answer.note}"] if answer.note else []
        written.repairs = [f"{task.name}: {repair}" for repair in answer.repairs]
        written.cached = bool(answer.cached)
        record = save_look(store, answer)
    written.prompts = [(f"{record.name} (descriptor)", PromptSpec(record.descriptor, "", "", ""))]
    written.jobs = [portrait_job(settings, record, llm.model, look_answers(store, record))]
    return written


def _record_story(
    task: PromptTask,
    answer: Any,
    series: Series,
    images: ImageService,
    settings: Settings,
    llm: LLM,
    looks: Any,
) -> _Written:
    """An episode's prompt or a season's five, with the cast's `looks` written in, saved, with
    their images' jobs."""
    if isinstance(answer, StudioError):
        return _Written(failed=f"{task.name}: {answer}")
    store, count = images.store, images.backend.count_tokens
    fixed = answer.repairs if task.kind == "episode" else answer.styles.repairs
    written = _Written(repairs=[f"{task.name}: {repair}" for repair in fixed])
    if task.kind == "episode":
        result = episode_prompt(series, answer, count, looks)
        save_episode_prompt(store, task.item, result, llm.model)
        written.prompts = [(task.item.id, result.spec)]
        written.jobs = episode_tasks(settings, task.item, result, llm)
    else:
        result = season_prompts(series, task.item, answer, count, looks)
        written.prompts = _save_season_prompts(store, series, task.item, result, llm)
        written.jobs = season_tasks(settings, series, task.item, result, llm)
    written.cached = bool(result.cached)
    return written


def write_prompts(
    series: Series,
    selection: Selection,
    settings: Settings,
    llm: LLM,
    images: ImageService,
    summary: Summary,
    refresh: bool = False,
    progress: Progress = no_progress,
    on_progress: Callable[[int, int], None] | None = None,
    on_jobs: Callable[[list[ImageTask]], None] | None = None,
) -> list[ImageTask]:
    """Ask the LLM (or its cache) for every planned prompt, `llm.concurrency` calls at a time;
    record each as its answer comes in and hand its image jobs to `on_jobs` at once (a look's
    portrait when the look is in; an episode's or a season's images once every look is in, since
    the looks go into their prompts); return all the jobs, and fill `summary`, in plan order
    whatever order the answers came in."""
    store = images.store
    planned = plan_prompts(series, selection, settings)
    # A look the catalog keeps (or a person's edit) is not asked for again.
    kept = {
        t.key: store.character(t.item)
        for t in planned
        if t.kind == "character" and keeps_look(store.character(t.item), refresh)
    }
    tasks = [t for t in planned if t.key not in kept]
    bar = progress(None, total=len(planned), desc="prompts", unit="prompt")
    bar.update(len(kept))
    finished = [len(kept)]
    written: dict[str, _Written] = {}
    looks_to_come = {t.key for t in tasks if t.kind == "character"}
    waiting: list[tuple[PromptTask, Any]] = []  # stories whose answers wait for the looks
    looks: list[Any] = []  # the cast's looks, once every look is in

    def record(task: PromptTask, answer: Any) -> None:
        if task.kind == "character":
            written[task.key] = _record_look(task, answer, store, settings, llm)
        elif looks_to_come:
            waiting.append((task, answer))
            return
        else:
            if not looks:
                looks.append(current_looks(store, series, images.backend.count_tokens))
            written[task.key] = _record_story(task, answer, series, images, settings, llm, *looks)
        if on_jobs is not None and written[task.key].jobs:
            on_jobs(written[task.key].jobs)

    def done(task: PromptTask, answer: Any) -> None:
        bar.update(1)
        finished[0] += 1
        if on_progress:
            on_progress(finished[0], len(planned))
        record(task, answer)
        looks_to_come.discard(task.key)
        if not looks_to_come:
            while waiting:
                record(*waiting.pop(0))

    if on_progress:
        on_progress(finished[0], len(planned))
    try:
        for task in planned:
            if task.key in kept:
                record(task, kept[task.key])
        ask_all(tasks, llm, series, images.backend.count_tokens, refresh, on_done=done)
    finally:
        bar.close()
    jobs: list[ImageTask] = []
    for task in planned:
        written[task.key].tell(summary)
        jobs += written[task.key].jobs
    return jobs


def episode_tasks(
    settings: Settings, episode: Episode, result: EpisodePrompt, llm: LLM
) -> list[ImageTask]:
    """The images of an episode's prompt (its candidates, when more than images_per_episode)."""
    jobs = []
    for index in range(max(settings.images_per_episode, settings.candidates)):
        seed = derive_seed(settings.seed, episode.id, index)
        jobs.append(
            ImageTask(
                _request(settings, result.spec, seed),
                Target("episode", episode.season, episode.episode),
                index,
                {**_prompt_provenance(result, llm, result.spec), "cast": list(result.cast)},
            )
        )
    return jobs


def _save_season_prompts(
    store: Store, series: Series, season: int, result: SeasonPrompts, llm: LLM
) -> list[tuple[str, PromptSpec]]:
    """Record the season's prompts, one per style; each with its label."""
    labelled = []
    for style, spec in result.specs.items():
        store.add_prompt(
            PromptRecord(
                f"{result.key}:{style}",
                Target("season", season, None, style),
                spec,
                llm.model,
                result.template_hash,
                result.trace,
            )
        )
        labelled.append((f"{series.seasons[season].id} {style}", spec))
    return labelled


def season_tasks(
    settings: Settings, series: Series, season: int, result: SeasonPrompts, llm: LLM
) -> list[ImageTask]:
    """The season's posters: one image per style."""
    season_id = series.seasons[season].id
    jobs = []
    for style, spec in result.specs.items():
        seed = derive_seed(settings.seed, f"{season_id}:{style}", 0)
        jobs.append(
            ImageTask(
                _request(settings, spec, seed),
                Target("season", season, None, style),
                0,
                {
                    **_prompt_provenance(result, llm, spec),
                    "trace": result.trace,
                    "cast": list(result.cast.get(style, ())),
                },
            )
        )
    return jobs


def choose_covers(results: list[ImageResult], images: ImageService, summary: Summary) -> None:
    """Make each episode's candidate with the best CLIP score against its prompt the episode's
    cover (all candidates stay in the catalog). A CLIP model that cannot be loaded is a failure
    of the job (the images are kept, the covers stay as they were)."""
    candidates: dict[tuple[int, int], list[StoredImage]] = {}
    for result in results:
        target = result.job.target
        if result.record is not None and target.kind == "episode":
            candidates.setdefault((target.season, target.episode), []).append(result.record)
    if not candidates:
        return
    if images.clip_checks is None:
        summary.failed.append(
            f"covers not ranked: no CLIP model; set {setting('clip_model')} to rank candidates"
        )
        return
    try:
        for (season, episode), records in candidates.items():
            best = images.clip_checks.best(records)
            images.store.set_cover(season, episode, best.cache_key)
    except StudioError as exc:
        summary.failed.append(f"covers not ranked: {exc}")
        return
    summary.notes.append(
        f"Covers: the best of each episode's {max(map(len, candidates.values()))} candidates "
        f"by CLIP score ({len(candidates)} episodes)."
    )


# The errors of a data folder that cannot take a write, and what to do about each.
WRITE_ADVICE = {
    errno.ENOSPC: "the disk is full; free some space there",
    errno.EDQUOT: "the disk quota is used up; free some space there",
    errno.EFBIG: "a file-size limit stops it (`ulimit -f`, or the file system's largest file); "
    "raise the limit",
    errno.EROFS: "the file system is read-only; make it writable",
}


def write_failure(exc: OSError | sqlite3.Error, data_dir: Path, images_done: int = 0) -> str:
    """Why the job could not write to the data folder, naming the file (the error's, else the
    catalog for SQLite's "disk is full", else the folder), what to do, and that what was finished
    (`images_done` new images) is kept: for the job's record and the error the user sees."""
    if isinstance(exc, OSError):
        where = exc.filename or f"a file in the data folder {data_dir.resolve()}"
        code, reason = exc.errno, exc.strerror or str(exc)
    else:
        where, code, reason = data_dir.resolve() / CATALOG_NAME, errno.ENOSPC, str(exc)
    advice = WRITE_ADVICE.get(code, WRITE_ADVICE[errno.ENOSPC])
    kept = f" ({images_done} new images)" if images_done else ""
    return (
        f"Could not write {where} ({reason}): {advice}, or set {setting('data_dir')} to a "
        f"folder on another disk. What was finished is kept{kept}; the next run goes on from "
        "there."
    )


def _disk_full(exc: sqlite3.Error) -> bool:
    """SQLite's "database or disk is full" (SQLITE_FULL)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "disk is full" in str(exc)


def run_job(
    series: Series,
    selection: Selection,
    settings: Settings,
    llm: LLM,
    images: ImageService,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress = no_progress,
    executor: RenderExecutor | None = None,
    on_start: Callable[[], None] | None = None,
) -> Summary:
    """Prompts and (unless `dry_run`) images, each prompt's images drawn as soon as it is
    recorded where the renders and the LLM do not share this CPU (`RenderFeed`), else after the
    prompts; returns the counts for the closing summary.

    The job's stage, counts and failures are written to the catalog as it goes
    (studio.catalog.job_log), for the dashboard's Batch jobs page; `summary.stages` says where the
    time went. `on_start` runs once the job is recorded, before any work (the CLI prints its
    estimate there; what it raises is the job's failure).
    """
    started = time.perf_counter()
    summary = Summary(placeholder=images.backend.placeholder, dry_run=dry_run)
    drawn = settings.seed == RANDOM_SEED
    if drawn:  # seed -1: one base seed for the whole run, so its images' seeds are known
        settings = replace(settings, seed=draw_seed())
        summary.notes.append(random_seed_note(settings.seed))
    calls_before = llm.calls
    render_before, write_before = images.seconds["render"], images.seconds["write"]
    clip_before = images.seconds["clip"]
    where = executor.name if executor else "local"
    log = JobLog(
        images.store, where, selection.describe(), backend_description(settings), llm.concurrency
    )

    def prompts_done(done: int, total: int) -> None:  # with the LLM's calls and time so far
        log.progress(
            force=done == total,
            prompts_done=done,
            prompts_total=total,
            llm_calls=llm.calls - calls_before,
            seconds={"llm": time.perf_counter() - started},
        )

    feed = None
    if not dry_run:  # the images are drawn while the prompts are written, where that pays

        def counted(result: ImageResult) -> None:
            summary.count(result)
            log.progress(images_done=feed.done, images_total=feed.total, failures=summary.failed)

        summary.alongside = draws_alongside(settings, images, executor)
        feed = RenderFeed(images, settings, force, progress, executor, counted, summary.alongside)

    def queue(jobs: list[ImageTask]) -> None:
        if drawn:  # recorded in each image's provenance too (never in a cache key)
            jobs = [
                replace(job, provenance={**job.provenance, "base_seed": settings.seed})
                for job in jobs
            ]
        feed.add(jobs)

    status = "failed"
    try:
        if on_start is not None:
            on_start()
        jobs = write_prompts(
            series,
            selection,
            settings,
            llm,
            images,
            summary,
            refresh=force,
            progress=progress,
            on_progress=prompts_done,
            on_jobs=None if feed is None else queue,
        )
        summary.stages["llm"] = time.perf_counter() - started
        log.progress(
            force=True,
            stage="done" if dry_run else "images",
            images_total=0 if dry_run else len(jobs),
            failures=summary.failed,
            seconds=summary.stages,
            llm_calls=llm.calls - calls_before,
        )
        if feed is not None:
            if not summary.alongside:  # the renders have this CPU to themselves: free the LLM
                llm.release()
            summary.results = results = feed.finish()
            if settings.candidates > 1:
                choose_covers(results, images, summary)
            summary.stages["render"] = images.seconds["render"] - render_before
            summary.stages["write"] = images.seconds["write"] - write_before
            if images.seconds["clip"] > clip_before:
                summary.stages["clip"] = images.seconds["clip"] - clip_before
        status = "finished"
    except KeyboardInterrupt:
        status = "stopped"
        summary.failed.append("stopped by the user (Ctrl-C)")
        raise
    except StudioError as exc:
        summary.failed.append(str(exc))
        raise
    except (OSError, sqlite3.OperationalError) as exc:  # a full disk, a file-size limit
        if not (_disk_full(exc) if isinstance(exc, sqlite3.Error) else exc.errno in WRITE_ADVICE):
            raise
        reason = write_failure(exc, settings.data_dir, summary.images_rendered)
        summary.failed.append(reason)
        raise CatalogError(reason) from exc
    finally:
        if feed is not None:  # Ctrl-C, a failure: the render in progress ends at its next step
            feed.stop()
        summary.llm_calls = llm.calls - calls_before
        summary.seconds = time.perf_counter() - started
        summary.stages.setdefault("llm", summary.seconds)  # it stopped while writing prompts
        log.finish(
            status,
            stage="done",
            images_done=summary.images_rendered + summary.images_cached,
            failures=summary.failed,
            seconds={**summary.stages, "total": summary.seconds},
            llm_calls=summary.llm_calls,
        )
    return summary
