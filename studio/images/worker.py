"""One render worker per loaded image backend: every caller's renders go through one queue served
by one thread that owns the pipeline (diffusers pipelines are not thread-safe).

    worker = RenderWorker(open_image_backend(settings))   # an ImageBackend itself
    service = ImageService(store, worker)                 # each session its own service and store
    service.make(jobs, on_step=...)                       # blocks; progress relayed in this thread

Compatible requests (`RenderRequest.batch_group`) from different callers are rendered in one
pipeline call, up to the backend's `max_batch`; each caller gets its own images, and its own
progress, relayed in the caller's thread (a Streamlit session draws its own bar). A caller that
cancels (`Ticket.cancel`, or its `on_step` raising, as Streamlit does when the user presses a
button during a run) stops its requests at the next denoising step when the batch is only
theirs; in a batch shared with others the batch goes on and the cancelled caller's images are
dropped. A batch that fails for a batch shared by several callers is tried again per caller, so
one session's bad input never fails another's render.

`shared_worker(key, open_backend)` keeps one worker per process: asking for another key (the
image model changed) closes the old one, which returns its GPU memory.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from studio.core.errors import RenderCancelledError, RenderError
from studio.core.params import RenderRequest
from studio.images.backends.base import ImageBackend, InputResolver, StepCallback

POLL_SECONDS = 0.05  # how often a waiting caller looks at its ticket's progress


class Ticket:
    """One caller's render: its requests, their progress and, once done, the images or error."""

    def __init__(self, requests: Sequence[RenderRequest], inputs: InputResolver | None):
        self.requests = list(requests)
        self.inputs = inputs
        self.images: list[Any] = [None] * len(self.requests)
        self.error: BaseException | None = None
        self._left = len(self.requests)
        self._progress: tuple[int, int, Any] | None = None
        self._seen = 0  # progress updates relayed so far
        self._updates = 0
        self._cancelled = threading.Event()
        self._done = threading.Event()
        self._changed = threading.Condition()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def cancel(self) -> None:
        """Stop this render: queued requests are dropped, a running batch that is only this
        ticket's stops at its next step."""
        self._cancelled.set()
        with self._changed:
            self._changed.notify_all()

    def wait(self, on_step: StepCallback | None = None, timeout: float | None = None) -> list[Any]:
        """Block until done, calling `on_step` in this thread with the latest progress; the
        images in request order, or the render's error raised here."""
        waited = 0.0
        while not self._done.is_set():
            with self._changed:
                if self._updates == self._seen and not self._done.is_set():
                    self._changed.wait(POLL_SECONDS)
                progress, fresh = self._progress, self._updates != self._seen
                self._seen = self._updates
            if fresh and on_step is not None and progress is not None:
                on_step(*progress)
            waited += POLL_SECONDS
            if timeout is not None and waited >= timeout and not self._done.is_set():
                raise TimeoutError("the render is still running")
        if self.error is not None:
            raise self.error
        return list(self.images)

    # Called by the worker thread ---------------------------------------------------------------

    def _report(self, step: int, total: int, latents: Any) -> None:
        with self._changed:
            self._progress = (step, total, latents)
            self._updates += 1
            self._changed.notify_all()

    def _deliver(self, index: int, image: Any) -> None:
        self.images[index] = image
        self._left -= 1
        if self._left == 0:
            self._finish()

    def _fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self.error = error
            self._finish()

    def _finish(self) -> None:
        self._done.set()
        with self._changed:
            self._changed.notify_all()


@dataclass(frozen=True)
class _Piece:
    """One request of a ticket, as the queue holds it."""

    ticket: Ticket
    index: int

    @property
    def request(self) -> RenderRequest:
        return self.ticket.requests[self.index]

    def drop(self) -> None:
        """Its ticket was cancelled: say so to the caller (once is enough)."""
        self.ticket._fail(RenderCancelledError("The render was cancelled."))


class RenderWorker:
    """An `ImageBackend` that hands every render to one thread owning `backend`, batching
    compatible requests from concurrent callers. Everything else is `backend`'s."""

    def __init__(self, backend: ImageBackend):
        self.backend = backend
        self._queue: deque[_Piece] = deque()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        # requests per backend call, newest last, the last 100 (a long-running dashboard)
        self.calls: deque[int] = deque(maxlen=100)

    def __getattr__(self, name: str) -> Any:  # capabilities, label, cache_key, family ...
        if name == "backend":  # not set yet (during unpickling, say)
            raise AttributeError(name)
        return getattr(self.backend, name)

    # The ImageBackend protocol's render, through the queue ---------------------------------------

    def render(
        self,
        requests: Sequence[RenderRequest],
        on_step: StepCallback | None = None,
        inputs: InputResolver | None = None,
    ) -> list[Any]:
        ticket = self.submit(requests, inputs)
        try:
            return ticket.wait(on_step)
        finally:
            if not ticket.done:
                ticket.cancel()  # the caller stopped waiting (an exception, a Streamlit rerun)

    def submit(self, requests: Sequence[RenderRequest], inputs: InputResolver | None) -> Ticket:
        """Queue `requests`; the ticket to wait on (or cancel)."""
        ticket = Ticket(requests, inputs)
        if not ticket.requests:
            ticket._finish()
            return ticket
        with self._wake:
            if self._closed:
                raise RenderError(
                    "The image model was changed while this page was open; reload the page."
                )
            self._queue.extend(_Piece(ticket, index) for index in range(len(ticket.requests)))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="studio-render-worker", daemon=True
                )
                self._thread.start()
            self._wake.notify()
        return ticket

    @property
    def waiting(self) -> int:
        """Requests queued and not yet rendering."""
        with self._wake:
            return sum(not piece.ticket.cancelled for piece in self._queue)

    def close(self) -> None:
        """Finish what is queued, stop the thread and let the backend return its memory."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        release = getattr(self.backend, "close", None)
        if release is not None:
            release()

    # The worker thread -------------------------------------------------------------------------

    def _next_batch(self) -> list[_Piece] | None:
        """The oldest waiting request and every other one that can share its pipeline call, up
        to the backend's batch size; None once closed and drained."""
        with self._wake:
            while True:
                while self._queue and self._queue[0].ticket.cancelled:
                    self._queue.popleft().drop()
                if self._queue:
                    break
                if self._closed:
                    return None
                self._wake.wait()
            size = max(1, self.backend.capabilities.max_batch)
            group = self._queue[0].request.batch_group()
            batch, rest = [], deque()
            for piece in self._queue:
                if piece.ticket.cancelled:
                    piece.drop()
                elif len(batch) < size and piece.request.batch_group() == group:
                    batch.append(piece)
                else:
                    rest.append(piece)
            self._queue = rest
            return batch

    def _serve(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._render(batch)

    def _render(self, batch: list[_Piece]) -> None:
        tickets = list(dict.fromkeys(piece.ticket for piece in batch))

        def on_step(step: int, total: int, latents: Any) -> None:
            for ticket in tickets:
                ticket._report(step, total, latents)
            if all(ticket.cancelled for ticket in tickets):
                raise RenderCancelledError("The render was cancelled.")

        try:
            self.calls.append(len(batch))
            images = self.backend.render(
                [piece.request for piece in batch], on_step=on_step, inputs=_inputs_of(tickets)
            )
        except BaseException as exc:  # noqa: BLE001 - the caller's thread raises it
            if len(tickets) > 1 and not isinstance(exc, RenderCancelledError):
                for ticket in tickets:  # alone, one caller's bad input fails only that caller
                    self._render([piece for piece in batch if piece.ticket is ticket])
                return
            for ticket in tickets:
                ticket._fail(exc)
            return
        for piece, image in zip(batch, images, strict=True):
            if piece.ticket.cancelled:
                piece.drop()
            else:
                piece.ticket._deliver(piece.index, image)


def _inputs_of(tickets: Sequence[Ticket]) -> InputResolver | None:
    """One resolver over the callers' own: input images are named by content, so any caller's
    catalog that has one gives the same image."""
    resolvers = [ticket.inputs for ticket in tickets if ticket.inputs is not None]
    if not resolvers:
        return None
    if len(resolvers) == 1:
        return resolvers[0]

    def resolve(sha: str) -> Any:
        error: BaseException | None = None
        for resolver in resolvers:
            try:
                return resolver(sha)
            except Exception as exc:  # noqa: BLE001 - try the next caller's catalog
                error = error or exc
        raise error  # type: ignore[misc]

    return resolve


_shared: dict[str, Any] = {"key": None, "worker": None}
_shared_lock = threading.Lock()


def shared_worker(key: Any, open_backend: Callable[[], ImageBackend]) -> RenderWorker:
    """The process's one render worker for the backend that `key` names (opened on first use);
    a different key closes the current worker first, so one model's weights are held at a time."""
    with _shared_lock:
        if _shared["worker"] is not None and _shared["key"] == key:
            return _shared["worker"]
        old, _shared["key"], _shared["worker"] = _shared["worker"], None, None
        if old is not None:
            old.close()
        worker = RenderWorker(open_backend())
        _shared["key"], _shared["worker"] = key, worker
        return worker


def close_shared_worker() -> None:
    """Close the process's render worker, if any (its model's memory is returned)."""
    with _shared_lock:
        old, _shared["key"], _shared["worker"] = _shared["worker"], None, None
    if old is not None:
        old.close()
