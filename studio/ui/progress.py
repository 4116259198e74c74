"""Progress while the studio works: a per-step bar with a denoising preview and a Cancel button,
a bar over several images, one over stages; and generating one image, several, or a prompt
interpolation with those bars.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import streamlit as st

from studio.core.errors import StudioError
from studio.core.params import RenderRequest
from studio.core.targets import STUDIO_TARGET, Target
from studio.images.backends.base import StepCallback
from studio.images.preview import latent_preview
from studio.images.service import ImageResult, ImageTask
from studio.ui.generate import generate_image
from studio.ui.resources import current_backend, current_studio
from studio.writing.prompting import PromptSpec

CANCELLED_KEY = "_studio_render_cancelled"  # in session state: a render was stopped by the user


@contextmanager
def step_progress(text: str = "Waiting for the image model…") -> Iterator[StepCallback]:
    """A per-step progress bar and a denoising preview while the block runs; yields the
    `on_step` callback to give the studio. Both are gone when the block ends."""
    bar = st.progress(0.0, text=text)
    # Pressing any button reruns the page, which stops this run at its next progress update:
    # the render worker then drops this session's requests at the next denoising step.
    stop = st.empty()
    stop.button("Cancel", key=f"cancel_{secrets.token_hex(4)}", icon=":material/stop:")
    preview = st.empty()
    try:
        preview_image = getattr(current_backend(), "preview_image", latent_preview)
    except StudioError:
        preview_image = latent_preview  # the render says why the backend cannot open

    def on_step(step: int, total: int, latents: Any) -> None:
        bar.progress(min(1.0, step / total), text=f"Step {step} of {total}")
        if step % max(1, total // 8) == 0 or step == total:
            picture = preview_image(latents)
            if picture is not None:
                preview.image(picture, caption="Denoising preview", width=192)

    finished = False
    try:
        yield on_step
        finished = True
    except Exception:
        finished = True  # a failure, shown by the page's guard
        raise
    finally:
        if not finished:  # Streamlit stopped the run: the Cancel button, or another widget
            st.session_state[CANCELLED_KEY] = True
        else:
            bar.empty()
            stop.empty()
            preview.empty()


@contextmanager
def result_progress(total: int, text: str, unit: str) -> Iterator[Callable[[ImageResult], None]]:
    """A progress bar over `total` images (`unit` names one: "Panel") while the block runs;
    yields the `on_result` callback to give the studio."""
    bar = st.progress(0.0, text=text)
    done = 0

    def on_result(result: ImageResult) -> None:
        nonlocal done
        done += 1
        bar.progress(min(1.0, done / max(1, total)), text=f"{unit} {done} of {total}")

    try:
        yield on_result
    finally:
        bar.empty()


@contextmanager
def stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar for work done in stages while the block runs; yields the
    `on_progress(stage, done, total)` callback to give the studio (the prompt library's sync
    and import). The bar shows from the first report on: work with nothing to do shows none."""
    slot = st.empty()

    def on_progress(stage: str, done: int, total: int) -> None:
        slot.progress(min(1.0, done / max(1, total)), text=f"{stage}: {done:,} of {total:,}")

    try:
        yield on_progress
    finally:
        slot.empty()


def generate(
    request: RenderRequest, target: Target = STUDIO_TARGET, spec: PromptSpec | None = None
) -> ImageResult:
    """Render (or fetch) one image with a per-step progress bar and a denoising preview."""
    with step_progress() as on_step:
        return generate_image(current_studio().images, request, target, spec, on_step)


def generate_many(
    requests: Sequence[RenderRequest], unit: str, target: Target = STUDIO_TARGET
) -> list[ImageResult]:
    """Render (or fetch) several images through the batched path: compatible requests share a
    pipeline call; a bar counts the images (`unit` names one: "Cell") and one shows the steps."""
    jobs = [ImageTask(request, target, provenance={"made_in": "dashboard"}) for request in requests]
    with (
        result_progress(len(jobs), f"{len(jobs)} images", unit) as on_result,
        step_progress() as on_step,
    ):
        return current_studio().images.make(jobs, on_step=on_step, on_result=on_result)


def interpolate(request: RenderRequest, end_prompt: str, frames: int) -> Any:
    """The Studio's prompt interpolation from `request` (its prompt, guidance and reference) to
    `end_prompt`, with a bar for the frames and one for the steps; a
    `studio.images.interpolation.Interpolation`."""
    with (
        result_progress(frames, f"{frames} images", "Frame") as on_result,
        step_progress() as on_step,
    ):
        return current_studio().interpolate(
            request, end_prompt, frames, on_result=on_result, on_step=on_step
        )
