"""The dashboard's render worker: one thread owns the pipeline; compatible requests from
different callers (sessions, catalogs) share one pipeline call and each caller gets its own
images and progress; cancelling stops at the next step; a bad request fails only its caller;
one model's weights are held at a time. On the demo model, batching on the CPU allowed."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from studio.catalog.store import Store
from studio.core.errors import ImageInputError, RenderCancelledError, RenderError
from studio.core.params import RenderRequest
from studio.images import worker as render_worker
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model
from studio.images.service import ImageService, ImageTask
from studio.images.worker import RenderWorker, shared_worker
from tests.support.apptests import run
from tests.ui.test_dashboard import APP, app_env  # noqa: F401 - app_env is a fixture


def small(prompt: str, seed: int = 1, steps: int = 2) -> RenderRequest:
    return RenderRequest(prompt, steps=steps, seed=seed, width=64, height=64)


class Gated:
    """Spy on a renderer: records each call's prompts; the first call waits for `release`."""

    def __init__(self, renderer: Renderer):
        self.renderer, self.calls = renderer, []
        self.started, self.release = threading.Event(), threading.Event()
        self.real = renderer.render
        renderer.render = self.render

    def render(self, requests, on_step=None, inputs=None):
        self.calls.append([r.prompt for r in requests])
        if len(self.calls) == 1:
            self.started.set()
            assert self.release.wait(30)
        return self.real(requests, on_step=on_step, inputs=inputs)


@pytest.fixture
def renderer(shared_cache) -> Renderer:
    return Renderer(resolve_image_model("demo", shared_cache), "cpu", 4, batch_on_cpu=True)


def busy_worker(renderer: Renderer) -> tuple[RenderWorker, Gated, object]:
    """A worker rendering a first request that waits at the gate."""
    gate = Gated(renderer)
    worker = RenderWorker(renderer)
    first = worker.submit([small("the first", steps=1)], None)
    assert gate.started.wait(30)
    return worker, gate, first


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_two_callers_compatible_requests_share_one_call_and_each_gets_its_own(renderer, tmp_path):
    worker, gate, first = busy_worker(renderer)
    services = [ImageService(Store(tmp_path / name), worker) for name in ("one", "two")]
    results, progress = {}, {"one": [], "two": []}

    def session(name, service, prompt, seed):
        results[name] = service.make(
            [ImageTask(small(prompt, seed))],
            on_step=lambda step, total, _: progress[name].append((step, total)),
        )[0]

    threads = [
        threading.Thread(target=session, args=("one", services[0], "a lighthouse", 1)),
        threading.Thread(target=session, args=("two", services[1], "a castle", 2)),
    ]
    for thread in threads:
        thread.start()
    while worker.waiting < 2:
        threading.Event().wait(0.01)
    gate.release.set()
    for thread in threads:
        thread.join(60)
    first.wait()
    assert gate.calls[0] == ["the first"]
    assert sorted(gate.calls[1]) == ["a castle", "a lighthouse"]  # one call for both
    assert list(worker.calls) == [1, 2]
    one, two = results["one"], results["two"]
    assert one.record.prompt == "a lighthouse" and two.record.prompt == "a castle"
    assert services[0].store.find_image(two.key) is None  # each in its own catalog
    assert services[1].store.find_image(one.key) is None
    seeds = {"a lighthouse": 1, "a castle": 2}
    together = dict(
        zip(
            gate.calls[1], renderer.render([small(p, seeds[p]) for p in gate.calls[1]]), strict=True
        )
    )  # the same call again, in the order it was made
    assert np.array_equal(pixels(one.image()), pixels(together["a lighthouse"]))
    assert np.array_equal(pixels(two.image()), pixels(together["a castle"]))
    assert progress["one"] == progress["two"] == [(1, 2), (2, 2)]  # each sees the steps


@pytest.mark.slow
def test_incompatible_requests_are_not_batched(renderer):
    worker, gate, first = busy_worker(renderer)
    tickets = [
        worker.submit([small("four steps", steps=4)], None),
        worker.submit([small("two steps", steps=2)], None),
    ]
    gate.release.set()
    for ticket in [first, *tickets]:
        assert len(ticket.wait()) == 1
    assert gate.calls == [["the first"], ["four steps"], ["two steps"]]


def test_a_queued_request_cancelled_is_never_rendered(renderer):
    worker, gate, first = busy_worker(renderer)
    ticket = worker.submit([small("never")], None)
    ticket.cancel()
    gate.release.set()
    with pytest.raises(RenderCancelledError):
        ticket.wait()
    first.wait()
    assert ["never"] not in gate.calls


@pytest.mark.slow
def test_cancel_stops_a_running_render_at_the_next_step(renderer, tmp_path):
    worker = RenderWorker(renderer)
    service = ImageService(Store(tmp_path), worker)
    steps_run = []
    real = renderer.render

    def counting(requests, on_step=None, inputs=None):
        def step(step, total, latents):
            steps_run.append((step, total))
            on_step(step, total, latents)

        return real(requests, on_step=step, inputs=inputs)

    renderer.render = counting

    def stop_at_two(step, total, _):
        if step == 2:
            raise RenderCancelledError("stop")

    with pytest.raises(RenderCancelledError):
        service.make([ImageTask(small("a long render", steps=40))], on_step=stop_at_two)
    ticket_gone = worker.submit([small("after", steps=1)], None).wait()  # the worker goes on
    assert len(ticket_gone) == 1
    long_run = [step for step, total in steps_run if total == 40]
    assert 2 <= max(long_run) < 10  # stopped within a step or so, not after 40
    assert service.store.images() == []  # nothing stored for the cancelled render


def test_one_caller_cancelling_a_shared_batch_leaves_the_other_its_image(renderer):
    worker, gate, first = busy_worker(renderer)
    mine = worker.submit([small("mine", 1)], None)
    theirs = worker.submit([small("theirs", 2)], None)
    mine.cancel()
    gate.release.set()
    assert len(theirs.wait()) == 1
    with pytest.raises(RenderCancelledError):
        mine.wait()


@pytest.mark.slow
def test_a_bad_request_in_a_shared_batch_fails_only_its_caller(renderer):
    worker, gate, first = busy_worker(renderer)

    def no_inputs(sha):
        raise KeyError(sha)

    bad = RenderRequest(
        "x", steps=2, width=64, height=64, mode="img2img", strength=0.5, init_image="1" * 64
    )
    good = RenderRequest(
        "y", steps=2, width=64, height=64, mode="img2img", strength=0.5, init_image="0" * 64
    )
    from PIL import Image

    failing = worker.submit([bad], no_inputs)
    red = {"0" * 64: Image.new("RGB", (64, 64), "red")}
    working = worker.submit([good], red.__getitem__)
    gate.release.set()
    assert len(working.wait()) == 1
    with pytest.raises(ImageInputError, match="not among the input images"):
        failing.wait()


def test_the_worker_is_an_image_backend_with_the_same_pixels(renderer, tmp_path):
    direct = ImageService(Store(tmp_path / "direct"), renderer).make_one(ImageTask(small("a")))
    queued = ImageService(Store(tmp_path / "queued"), RenderWorker(renderer)).make_one(
        ImageTask(small("a"))
    )
    assert queued.key == direct.key
    assert np.array_equal(pixels(queued.image()), pixels(direct.image()))


@pytest.mark.slow
def test_a_new_model_closes_the_old_one_and_frees_its_weights(shared_cache):
    render_worker.close_shared_worker()
    model = resolve_image_model("demo", shared_cache)
    first = shared_worker("a", lambda: Renderer(model, "cpu"))
    assert shared_worker("a", lambda: Renderer(model, "cpu")) is first  # one per process
    first.render([small("load it")])
    unet = weakref.ref(first.backend.pipe.unet)
    second = shared_worker("b", lambda: Renderer(model, "cpu"))
    assert second is not first
    gc.collect()
    assert unet() is None  # the old weights are gone
    with pytest.raises(RenderError, match="reload the page"):
        first.render([small("too late")])
    render_worker.close_shared_worker()


@pytest.mark.slow
def test_two_dashboard_sessions_at_once_are_batched_and_see_their_own_images(
    app_env,  # noqa: F811 - the fixture
    shared_cache,
):
    """Two AppTest sessions press Generate in the Studio while the worker is busy: their
    requests go to the model in one call and each session shows its own prompt's image."""
    from studio import ui
    from studio.core.config import load_settings
    from studio.images.backends.registry import backend_settings
    from studio.ui.resources import render_worker_for

    render_worker.close_shared_worker()
    key = backend_settings(load_settings())
    model = resolve_image_model("demo", shared_cache)
    renderer = Renderer(model, "cpu", 4, batch_on_cpu=True)
    worker = shared_worker(key, lambda: renderer)
    assert render_worker_for(key) is worker
    gate = Gated(renderer)
    first = worker.submit([small("the first", steps=1)], None)
    assert gate.started.wait(30)

    sessions = {}
    for prompt in ("a lighthouse at dusk", "a castle in the fog"):
        at = AppTest.from_file(APP, default_timeout=120)
        run(at)
        run(at.switch_page("pages/studio.py"))
        at.text_area(key="st_prompt").set_value(prompt)
        sessions[prompt] = at
    threads = [
        threading.Thread(target=lambda at=at: at.button(key="st_generate").click().run())
        for at in sessions.values()
    ]
    for thread in threads:
        thread.start()
    while worker.waiting < 2:
        threading.Event().wait(0.02)
    gate.release.set()
    for thread in threads:
        thread.join(120)
    first.wait()
    assert sorted(gate.calls[1]) == sorted(sessions)  # both sessions in one pipeline call
    for prompt, at in sessions.items():
        assert not at.exception, [e.value for e in at.exception]
        key = at.session_state["st_last"]
        assert ui.current_store().find_image(key).prompt == prompt
    render_worker.close_shared_worker()
