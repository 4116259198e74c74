"""The batch job's images, rendered while its prompts are still being written.

The LLM writes one prompt after another and each prompt's images can be drawn as soon as it is
recorded: `RenderFeed` takes image jobs as the prompts come in and renders them in a thread of
its own through the image service (the one path that makes, caches and stores every image), so
that with an LLM server elsewhere, or the images on a GPU, the renders hide behind the calls and
the first images are in the catalog minutes before the last prompt.

Not where both would share this machine's CPU (`draws_alongside`): there each slows the other
more than it gains, since llama.cpp's threads wait for each other at every token and a render
that takes a core from one stalls them all. The sample's first run on 2 cores took 751 s with the
renders after the prompts, 785 s with them alongside, and 765 s alongside at the lowest CPU
priority (2026-12-06). There the feed holds the jobs until the prompts are done.

Pixels and prompts are the same either way: each image depends on its own request only, and
each LLM answer on its own question. Portraits go before the images that show their characters:
a batch job queues every look's portrait before any episode or season job (those wait for the
cast's looks), and of what it takes from the queue at once the feed renders the portraits first,
then the others with their references (`with_reference`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from studio.core.config import Settings
from studio.core.remote import is_loopback
from studio.images.executors import RenderExecutor
from studio.images.regions import REGION_WORDS
from studio.images.service import ImageResult, ImageService, ImageTask
from studio.llm.choice import choose_backend
from studio.llm.embedded import embedded_offload
from studio.writing.cast import portrait_of

# progress(iterable or None, total=..., desc=..., unit=...) -> a bar to iterate or `update`;
# tqdm fits, as does `no_progress`. The feed's images bar learns its total as prompts come in:
# it sets the bar's `total` and calls its `refresh()` where it has one.
Progress = Callable[..., Any]


class _StoppedError(Exception):
    """Raised inside a render (between two steps, or two images) once the feed is stopped."""


def with_reference(job: ImageTask, images: ImageService, settings: Settings) -> ImageTask:
    """`job` conditioned on the portrait of its most important character, when the backend has
    an IP-Adapter and that character has a portrait; else `job` as it is. With `scene_references`
    above 1, on the portraits of that many of its characters (the most important first, those
    with portraits), each limited to its side of the image (`studio.images.regions`)."""
    cast = job.provenance.get("cast") or []
    if not images.backend.capabilities.ip_adapter or not cast or job.target.kind == "character":
        return job
    if job.request.reference_image is not None:
        return job
    portraits = [(name, portrait_of(images.store, name)) for name in cast]
    chosen = [(name, p) for name, p in portraits if p is not None][: settings.scene_references]
    if not chosen or chosen[0][0] != cast[0]:  # the most important one first, or none
        return job
    shas = [images.add_input(images.store.image_path(p), "reference image") for _, p in chosen]
    request = replace(
        job.request, reference_image=shas[0], reference_scale=settings.reference_scale
    )
    provenance = {
        **job.provenance,
        "reference": {"character": cast[0], "portrait": chosen[0][1].cache_key},
    }
    if len(chosen) > 1:
        request = replace(
            request,
            extra_references=tuple(shas[1:]),
            reference_masks=images.add_regions(len(chosen), (request.width, request.height)),
        )
        provenance["references"] = [
            {"character": name, "portrait": portrait.cache_key, "region": where}
            for (name, portrait), where in zip(chosen, REGION_WORDS[len(chosen)], strict=True)
        ]
    return replace(job, request=request, provenance=provenance)


def draws_alongside(
    settings: Settings, images: ImageService, executor: RenderExecutor | None = None
) -> bool:
    """Whether the batch job should draw its images while the LLM writes: unless both the
    renders (the image backend on the CPU, rendering here) and the LLM (the embedded model on
    the CPU, or a server on this machine's loopback) would run on this machine's CPU."""
    here = executor is None or executor.name == "local"
    if not (here and images.backend.device == "cpu"):
        return True
    choice = choose_backend(settings)
    if choice.kind == "embedded":
        return embedded_offload()[0] > 0  # on the GPU, the model leaves the CPU to the renders
    return not is_loopback(urlsplit(choice.base_url).hostname or "")


class RenderFeed:
    """Renders image jobs in a thread of its own as they are added, each through the image
    service (the catalog's image when it has one; a failed render is a result with its error,
    and the others go on).

        feed = RenderFeed(images, settings, on_result=summary.count)
        feed.add(jobs)               # any number of times, from one thread
        results = feed.finish()      # once no more will come: waits, and returns every result

    `stop()` (Ctrl-C, a failed LLM) ends the render in progress at its next step and renders
    nothing more; what was stored stays. A failure the service raises (the catalog cannot take a
    write) ends the feed: `add` and `finish` raise it in the caller's thread. With `alongside`
    False the jobs wait until `finish` (see `draws_alongside`).
    """

    def __init__(
        self,
        images: ImageService,
        settings: Settings,
        force: bool = False,
        progress: Progress | None = None,
        executor: RenderExecutor | None = None,
        on_result: Callable[[ImageResult], None] | None = None,
        alongside: bool = True,
    ):
        self.images, self.settings, self.force = images, settings, force
        self.progress, self.executor, self.on_result = progress, executor, on_result
        self.alongside = alongside
        self.total = 0  # jobs added so far
        self.done = 0  # results so far
        self.results: list[ImageResult] = []  # in the order they were stored, portraits first
        self._queue: list[ImageTask] = []
        self._ready = threading.Condition()
        self._closed = False
        self._stopped = threading.Event()
        self._error: BaseException | None = None
        self._bar: Any = None
        self._thread = threading.Thread(target=self._run, name="render-feed", daemon=True)

    def add(self, jobs: Sequence[ImageTask]) -> None:
        """Queue `jobs` (rendered in the order added, portraits of a take first)."""
        self._raise_failure()
        if not jobs:
            return
        with self._ready:
            self.total += len(jobs)
            self._queue.extend(jobs)
            self._ready.notify()
        if self.alongside:
            self._start()

    def finish(self) -> list[ImageResult]:
        """Wait for every job added; the results. Raises what ended the feed, if anything."""
        self._close()
        if self.total:
            self._start()
        self._join()
        self._raise_failure()
        return self.results

    def stop(self) -> None:
        """Render nothing more: the render in progress ends at its next step. Waits for it."""
        self._stopped.set()
        self._close()
        self._join()

    def _start(self) -> None:
        """The images bar (its total as known so far) and, the first time, the thread."""
        if self._bar is None and self.progress is not None:
            self._bar = self.progress(None, total=0, desc="images", unit="image")
        if self._bar is not None and getattr(self._bar, "total", None) != self.total:
            self._bar.total = self.total
            getattr(self._bar, "refresh", lambda: None)()
        if self._thread.ident is None:
            self._thread.start()

    def _close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _join(self) -> None:
        if self._thread.ident is not None:
            self._thread.join()
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _take(self) -> list[ImageTask]:
        """The jobs queued so far (waiting for some); none once closed and emptied."""
        with self._ready:
            while not self._queue and not self._closed:
                self._ready.wait()
            if self._stopped.is_set():
                return []
            taken, self._queue = self._queue, []
        return taken

    def _run(self) -> None:
        try:
            while taken := self._take():
                self._render(taken)
        except _StoppedError:
            pass
        except BaseException as exc:  # the caller's thread raises it (add, finish)
            self._error = exc

    def _render(self, jobs: list[ImageTask]) -> None:
        """Portraits first, then the others, with their references once the portraits are in."""
        self._make([job for job in jobs if job.target.kind == "character"])
        others = [job for job in jobs if job.target.kind != "character"]
        self._make([with_reference(job, self.images, self.settings) for job in others])

    def _make(self, jobs: list[ImageTask]) -> None:
        self.images.make(
            jobs,
            force=self.force,
            on_step=self._check_stop,
            on_result=self._done,
            keep_going=True,
            executor=self.executor,
        )

    def _check_stop(self, *_: Any) -> None:
        if self._stopped.is_set():
            raise _StoppedError

    def _done(self, result: ImageResult) -> None:
        self.results.append(result)
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        if self.on_result is not None:
            self.on_result(result)
        self._check_stop()
