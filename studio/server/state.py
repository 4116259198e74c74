"""What the server holds while it runs: the settings, the one studio (catalog, LLM, image service)
whose image backend sits behind one render worker, and the renders in flight.

Every route asks `ServerState.studio` for the studio; a model switch (A1111's
`POST /sdapi/v1/options` with `sd_model_checkpoint`) opens a new backend behind a new worker and
closes the old one once what it has queued is done, so no request in flight is lost.

`Activity` keeps the renders in flight, for A1111's `/progress`, `/interrupt` and `/skip`: each
render registers a `Render` whose `on_step` records the step and the latents and stops the render
at its next step once it is interrupted (all of it) or skipped (the image being made).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from studio.api import Studio
from studio.core.config import Settings, check_settings
from studio.core.errors import RenderCancelledError
from studio.images.backends.registry import open_image_backend
from studio.images.worker import RenderWorker

if TYPE_CHECKING:
    from fastapi import Request

    from studio.llm.base import ChatBackend


def state_of(request: Request) -> ServerState:
    """The server's state, from a route's request."""
    return request.app.state.studio


@dataclass
class Render:
    """One request's render: `count` images or batches made one after another (A1111's n_iter)."""

    api: str  # "txt2img", "img2img", "openai", "series" ...
    count: int = 1
    number: int = 0  # the image or batch being made, from 0
    step: int = 0
    steps: int = 0
    latents: Any = None
    started: float = field(default_factory=time.monotonic)
    interrupted: threading.Event = field(default_factory=threading.Event)
    skipped: threading.Event = field(default_factory=threading.Event)

    def on_step(self, step: int, total: int, latents: Any) -> None:
        """The render worker's progress; raises to stop the render when asked to."""
        self.step, self.steps, self.latents = step, total, latents
        if self.interrupted.is_set() or self.skipped.is_set():
            raise RenderCancelledError("The render was interrupted.")

    def next(self) -> None:
        """The next of `count` begins (a skip applies to one only)."""
        self.number += 1
        self.step, self.latents = 0, None
        self.skipped.clear()

    @property
    def progress(self) -> float:
        """Done so far, 0..1, over all `count`."""
        within = self.step / self.steps if self.steps else 0.0
        return min(1.0, (self.number + within) / max(1, self.count))


class Activity:
    """The renders in flight, oldest first."""

    def __init__(self) -> None:
        self._renders: list[Render] = []
        self._lock = threading.Lock()

    @contextmanager
    def render(self, api: str, count: int = 1) -> Iterator[Render]:
        render = Render(api, count)
        with self._lock:
            self._renders.append(render)
        try:
            yield render
        finally:
            with self._lock:
                self._renders.remove(render)

    def current(self) -> Render | None:
        with self._lock:
            return self._renders[0] if self._renders else None

    def all(self) -> list[Render]:
        with self._lock:
            return list(self._renders)


class ServerState:
    """The server's one studio over `settings`, and its renders in flight."""

    def __init__(
        self,
        settings: Settings,
        on_status: Callable[[str], None] | None = None,
        chat_backend: ChatBackend | None = None,
    ) -> None:
        """`chat_backend` replaces the LLM the settings name (a fake in tests)."""
        self._lock = threading.Lock()
        self._on_status = on_status
        self._chat_backend = chat_backend
        self.activity = Activity()
        self.started = time.time()
        # signs the image URLs the server hands out (OpenAI's response_format=url), so that a
        # URL works without credentials for a while and cannot be made up; new every start
        self.url_key = secrets.token_bytes(32)
        self._studio = self._open(settings)

    def _open(self, settings: Settings) -> Studio:
        worker = RenderWorker(open_image_backend(settings))
        return Studio(
            settings, on_status=self._on_status, backend=worker, chat_backend=self._chat_backend
        )

    @property
    def studio(self) -> Studio:
        with self._lock:
            return self._studio

    @property
    def settings(self) -> Settings:
        return self.studio.settings

    def switch_model(self, image_model: str) -> Studio:
        """Open `image_model` (a ConfigError names the setting when it cannot be used) and serve
        with it; the old backend finishes what it has queued, then returns its memory."""
        with self._lock:
            old = self._studio
            if image_model == old.settings.image_model:
                return old
            settings = replace(old.settings, image_model=image_model)
            check_settings(settings)
            self._studio = self._open(settings)
        # the old studio's catalog connection stays open for the requests still using it
        threading.Thread(
            target=_close_worker, args=(old,), name="studio-close-model", daemon=True
        ).start()
        return self._studio

    def close(self) -> None:
        studio = self.studio
        _close_worker(studio)
        studio.close()


def _close_worker(studio: Studio) -> None:
    worker = studio.backend
    if isinstance(worker, RenderWorker):
        worker.close()
