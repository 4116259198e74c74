"""How much work a batch job has before it starts, and roughly how long it takes.

`estimate_work` counts the LLM calls the job's prompts still need (reading the LLM's answer cache
through an LLM that can only read it) and the images the catalog does not hold yet (by the same
cache keys the job renders by); `WorkEstimate.line` times them. LLM calls are timed by the newest
earlier job in the catalog that asked the same LLM (its measured seconds per call), else by a
rough constant for the embedded model or OpenAI, and not at all for another server with no such
job: a local server's speed ranges from a second to a minute a call, and a guess would mislead.
Images are timed by rough constants per device and model family. It calls no model and writes
nothing of its own (with an IP-Adapter, a portrait's reference input is stored, as the job stores
it anyway).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from studio.catalog.job_log import measured_call_seconds
from studio.catalog.store import Store
from studio.core.config import Settings
from studio.core.dataset import Series
from studio.core.errors import StudioError
from studio.core.remote import DEFAULT_OPENAI_BASE_URL
from studio.core.targets import Target
from studio.images.executors import RenderExecutor
from studio.images.service import ImageService, ImageTask
from studio.llm.base import ChatRequest
from studio.llm.choice import choose_backend
from studio.llm.client import LLM
from studio.workflows.batch import (
    PromptTask,
    Selection,
    ask_task,
    episode_tasks,
    plan_prompts,
    portrait_request,
    season_tasks,
)
from studio.workflows.render_feed import draws_alongside, with_reference
from studio.writing.cast import current_looks, keeps_look
from studio.writing.prompting import episode_prompt, load_styles, season_prompts

EMBEDDED_CORE_SECONDS = 26.0  # the embedded LLM: about 13 s a call on 2 cores
OPENAI_CALL_SECONDS = 5.0  # OpenAI itself: a few seconds a call
REMOTE_IMAGE_SECONDS = 15.0  # OpenAI Images: one image
# Seconds one sampling step of a 512x512 image takes, by device and model family: the demo model
# on the CPU measured (2 cores: about 2.4 s an image of 25 steps in a batch job), the rest typical
# figures; a guess good to a factor of 2 or 3.
STEP_SECONDS = {
    ("cpu", "demo"): 0.1, ("cpu", "sd"): 8.0, ("cpu", "sdxl"): 25.0,
    ("mps", "demo"): 0.1, ("mps", "sd"): 0.5, ("mps", "sdxl"): 1.5,
    ("cuda", "demo"): 0.02, ("cuda", "sd"): 0.06, ("cuda", "sdxl"): 0.2,
}  # fmt: skip


class _NotCachedError(Exception):
    """What a cache-only LLM raises for an answer it would have to ask for."""


class _CacheOnly:
    """A chat backend that never answers, under the real one's name: an LLM over it reads the
    answer cache by the same keys the job asks by, and raises `_NotCachedError` for the rest."""

    def __init__(self, identity: str):
        self._identity = identity

    def identity(self) -> str:
        return self._identity

    def complete(self, request: ChatRequest) -> str:
        raise _NotCachedError


@dataclass(frozen=True)
class WorkEstimate:
    llm_calls: int
    images: int
    seconds: float  # rough; the images' alone when `unknown` says why the calls are not timed
    basis: str  # what `seconds` is reckoned from, in words
    unknown: str = ""  # why the LLM calls' time is not known, in words; "": it is in `seconds`

    @property
    def nothing(self) -> bool:
        return not self.llm_calls and not self.images

    def line(self) -> str:
        """One line for the user before the work starts."""
        work = f"To do: {self.llm_calls} LLM calls and {self.images} images"
        if not self.unknown:
            return f"{work}, roughly {_duration(self.seconds)} ({self.basis}; a rough guess)."
        images = (
            f"; the images roughly {_duration(self.seconds)} ({self.basis}; a rough guess)"
            if self.images
            else ""
        )
        return (
            f"{work}. The LLM calls' time is not known yet ({self.unknown}; the prompts bar shows "
            f"the time left once answers come in){images}."
        )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def estimate_work(
    series: Series,
    selection: Selection,
    settings: Settings,
    llm: LLM,
    images: ImageService,
    force: bool = False,
    dry_run: bool = False,
    executor: RenderExecutor | None = None,
) -> WorkEstimate:
    """The LLM calls and renders `run_job` with these arguments will make, and roughly how long
    they take. A prompt whose answer is cached is built as the job builds it, so that its images
    are looked up in the catalog by their real keys."""
    store, count = images.store, images.backend.count_tokens
    probe = LLM(_CacheOnly(llm.model), llm.cache, llm.temperature, llm.seed)
    looks = current_looks(store, series, count)
    calls = 0
    jobs: list[ImageTask | None] = []  # None: the image of a prompt still to be written
    plan = plan_prompts(series, selection, settings)
    for task in plan:
        kept = store.character(task.item) if task.kind == "character" else None
        if keeps_look(kept, force):
            jobs.append(_portrait(settings, kept.name, kept.portrait))
            continue
        answer, cached_calls = (None, 0) if force else _cached_answer(task, probe, series, count)
        if answer is None:
            calls += (_season_calls() if task.kind == "season" else 1) - cached_calls
            jobs += [None] * _image_count(task.kind, settings)
        elif task.kind == "character":
            looks[task.item] = answer.descriptor
            jobs.append(_portrait(settings, answer.name, answer.portrait))
        elif task.kind == "episode":
            result = episode_prompt(series, answer, count, looks)
            jobs += episode_tasks(settings, task.item, result, llm)
        else:
            result = season_prompts(series, task.item, answer, count, looks)
            jobs += season_tasks(settings, series, task.item, result, llm)
    renders = 0 if dry_run else sum(_must_render(job, images, settings, force) for job in jobs)
    llm_seconds, llm_basis = _llm_seconds(calls, settings, llm, store)
    image_seconds, image_basis = _image_seconds(renders, settings, images)
    if llm_seconds is None and calls:
        return WorkEstimate(calls, renders, image_seconds, image_basis, unknown=llm_basis)
    basis = "; ".join(text for n, text in ((calls, llm_basis), (renders, image_basis)) if n)
    seconds = (llm_seconds or 0.0) + image_seconds
    if calls and renders and draws_alongside(settings, images, executor):
        # drawn while the LLM writes: the longer of the two, and the last prompt's images
        seconds = max(llm_seconds or 0.0, image_seconds) + image_seconds / max(1, len(plan))
        basis += "; the images drawn while the LLM writes"
    return WorkEstimate(calls, renders, seconds, basis)


def _cached_answer(task: PromptTask, probe: LLM, series: Series, count: Any) -> tuple[Any, int]:
    """The task's answer when the cache has all of it, else None and how many of its calls it
    has (a season's trace may be cached while its styles are not)."""
    probe.cache_hits = 0
    try:
        return ask_task(task, probe, series, count, refresh=False), 0
    except _NotCachedError:
        return None, probe.cache_hits
    except StudioError:  # the job reports it; counted as one call to make
        return None, 0


def _portrait(settings: Settings, name: str, portrait: str) -> ImageTask:
    request = portrait_request(settings, name, portrait)
    return ImageTask(request, Target("character", style=name), 0, {})


def _season_calls() -> int:
    """A season's LLM calls: the self-ask trace, then one per style."""
    return 1 + len(load_styles())


def _image_count(kind: str, settings: Settings) -> int:
    if kind == "character":
        return 1
    if kind == "episode":
        return max(settings.images_per_episode, settings.candidates)
    return len(load_styles())


def _must_render(
    job: ImageTask | None, images: ImageService, settings: Settings, force: bool
) -> bool:
    if job is None or force:
        return True
    job = with_reference(job, images, settings)  # with an IP-Adapter, the reference is in the key
    return images.store.find_image(images.cache_key(job.request)) is None


def _llm_seconds(
    calls: int, settings: Settings, llm: LLM, store: Store
) -> tuple[float | None, str]:
    """The calls' seconds and what they are reckoned from; None: not known (the reason)."""
    choice = choose_backend(settings)
    embedded = choice.kind == "embedded"
    at_once = max(1, llm.concurrency)
    measured = measured_call_seconds(
        store, choice.describe(), same_host=embedded, concurrency=at_once
    )
    if measured is not None:
        each, job = measured
        how = f"as batch job {job.id} measured"
        if job.llm_concurrency != at_once:  # another number at once: the best there is
            then = job.llm_concurrency or "an unknown number"  # 0: a job from before 017
            how += f" with {then} at once, not {at_once}"
        return calls * each, f"the LLM ~{_duration(each)} a call, {how}"
    if embedded:
        cores = os.cpu_count() or 2
        each = EMBEDDED_CORE_SECONDS / cores
        return calls * each, f"the embedded LLM ~{_duration(each)} a call on {cores} cores"
    if choice.base_url.rstrip("/") == DEFAULT_OPENAI_BASE_URL:
        return calls * OPENAI_CALL_SECONDS / at_once, (
            f"OpenAI ~{_duration(OPENAI_CALL_SECONDS)} a call, {at_once} at once"
        )
    return None, f"no earlier batch job in this catalog asked the LLM server `{choice.url}`"


def _image_seconds(renders: int, settings: Settings, images: ImageService) -> tuple[float, str]:
    backend = images.backend
    if backend.device == "remote":
        each = REMOTE_IMAGE_SECONDS
        return renders * each, f"~{_duration(each)} an image from the image server"
    family = "demo" if backend.placeholder else getattr(backend, "family", "sd")
    device = backend.device if backend.device in ("cuda", "mps") else "cpu"
    pixels = settings.width * settings.height / (512 * 512)
    per_step = STEP_SECONDS.get((device, family), STEP_SECONDS[device, "sd"])
    each = per_step * settings.steps * (0.4 + 0.6 * pixels)
    model = "the demo model" if family == "demo" else family.upper()
    return renders * each, f"{model} ~{_duration(each)} an image on {device}"
