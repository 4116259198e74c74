"""Streamlit glue shared by the dashboard's pages; the only `studio` module that imports streamlit.

It owns the cached resources (one store per data folder, one renderer per image model, one LLM),
the error boundary that turns failures into `st.error` with what to do next, and the widgets the
pages share: render controls, image cards (with where a revised or alternate-reality image came
from), the placeholder banner, change requests, and generation with a per-step progress bar and a
denoising preview. The work itself is done by the package's plain functions.
"""

from __future__ import annotations

import hashlib
import logging
import runpy
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import streamlit as st

from studio.api import Studio
from studio.catalog.records import UNCHECKED
from studio.catalog.store import PromptRecord, Store, StoredImage
from studio.core.config import Settings, load_settings, lora_folder, setting
from studio.core.dataset import Series, load_series
from studio.core.errors import ContentRefusedError, StudioError
from studio.core.inputs import png_bytes
from studio.core.params import (
    CLIP_WINDOW,
    LIMITS,
    REFERENCE_SCALE,
    STUDIO_TARGET,
    RenderRequest,
    Target,
    clamp_request,
)
from studio.images.backends.base import Capabilities, ImageBackend, StepCallback
from studio.images.backends.registry import backend_settings, open_image_backend
from studio.images.loras import LoraFolder
from studio.images.preview import latent_preview
from studio.images.safety import blurred_file, refusal_picture
from studio.images.service import ImageJob, ImageResult, request_parameters
from studio.images.worker import RenderWorker, shared_worker
from studio.llm import client as llm_module
from studio.ui.generate import generate_image
from studio.writing.prompting import PromptSpec, load_styles
from studio.writing.revisions import MAX_REQUEST, REVISION_STEPS

log = logging.getLogger(__name__)

PLACEHOLDER_NOTE = (
    "These images come from the untrained **demo** model: they are placeholders, not art. Set "
    "`STUDIO_IMAGE_MODEL` to a hub id, a diffusers folder or a `.safetensors` file (and run on a "
    "GPU) for real images."
)


# Routing --------------------------------------------------------------------------------------


ROUTED_KEY = "_studio_routed"  # in session state: dashboard.py's st.navigation ran in this session
REROUTED_KEY = "_studio_rerouted"  # in session state: a page already asked for a rerun through it
CANCELLED_KEY = "_studio_render_cancelled"  # in session state: a render was stopped by the user


def mark_routed() -> None:
    """dashboard.py calls this right after `st.navigation`: its pages now run inside its frame."""
    st.session_state[ROUTED_KEY] = True


def route_through_dashboard(page_file: str) -> None:
    """Make every URL go through dashboard.py's navigation, even the first one after a start.

    Each page calls this first with its `__file__`. With a `pages/` folder next to dashboard.py,
    Streamlit runs a page's script on its own (its legacy pages-directory mode) until some session
    has called `st.navigation`, which, as its documentation says, makes the app ignore `pages/`
    in every session from then on. So when dashboard.py has not routed this session (a bookmark
    to /studio opened first after a restart), this runs dashboard.py in the page's place: its
    `st.navigation` switches the app to its pages and runs this page inside its layout, with the
    URL and query as they are (a rerun instead would show Streamlit's "page not found" first).
    Public API only.
    """
    if st.session_state.get(ROUTED_KEY):
        return
    if st.session_state.get(REROUTED_KEY):  # the rerun did not go through dashboard.py
        st.error("This page runs inside the dashboard: start it with `streamlit run dashboard.py`.")
        st.stop()
    st.session_state[REROUTED_KEY] = True
    # Run the entry file in this page's place: its st.navigation switches the app to its pages
    # and runs this page inside its layout (this call then returns at once: the run is routed).
    entry = Path(page_file).resolve().parent.parent / "dashboard.py"
    runpy.run_path(str(entry), run_name="__main__")
    st.stop()


# Resources ------------------------------------------------------------------------------------


def settings() -> Settings:
    """Read on every run (cheap), so a changed env var or studio.toml shows on reload."""
    return load_settings()


def _backend(key: tuple) -> RenderWorker:
    """The process's one image backend (one pipeline), behind the render worker that serves every
    browser session; a changed model closes the old one and frees its memory."""
    return shared_worker(key, lambda: open_image_backend(replace(Settings(), **dict(key))))


@st.cache_resource(show_spinner=False, max_entries=16)
def _studio(settings_items: tuple, worker_id: int, _worker: RenderWorker) -> Studio:
    return Studio(Settings(**dict(settings_items)), backend=_worker)


def studio() -> Studio:
    """The studio for the current settings: catalog, LLM and image backend, shared by sessions."""
    s = settings()
    worker = _backend(backend_settings(s))
    items = tuple(asdict(replace(s, data_dir=s.data_dir.resolve())).items())
    return _studio(items, id(worker), worker)


def store() -> Store:
    return studio().store


def backend() -> ImageBackend:
    return studio().backend


def capabilities() -> Capabilities:
    """What the current image backend can do; everything when it cannot open (generating then
    says why), so a page still draws its controls."""
    try:
        return backend().capabilities
    except StudioError:
        return Capabilities()


def llm() -> llm_module.LLM:
    return studio().llm


@st.cache_data(show_spinner=False, max_entries=4)
def _series(path: str, modified: float) -> Series:
    return load_series(path)[0]


def series() -> Series:
    """The configured series, re-read when its files change."""
    path = Path(settings().series)
    files = [path, *path.glob("*")] if path.is_dir() else [path]
    modified = max((f.stat().st_mtime for f in files if f.exists()), default=0.0)
    return _series(str(path), modified)


# Errors ---------------------------------------------------------------------------------------


@contextmanager
def guard(action: str) -> Iterator[None]:
    """Show a failure of `action` as an error box with the fix, never as a traceback."""
    try:
        yield
    except ContentRefusedError as exc:  # shown as a flagged image is, with nothing to reveal
        refusal_card(str(exc))
    except StudioError as exc:
        st.error(f"{action} failed: {exc}", icon=":material/error:")
    except MemoryError:
        st.error(
            f"{action} failed: out of memory. Lower the size or the steps, or close other "
            "programs.",
            icon=":material/error:",
        )
    except Exception as exc:  # noqa: BLE001 - the page must stay usable; details go to the log
        log.exception("%s failed", action)
        st.error(
            f"{action} failed unexpectedly ({type(exc).__name__}). The page still works: try "
            "again or with other settings. The details are in the log of the terminal running "
            "`streamlit run dashboard.py`.",
            icon=":material/error:",
        )


def placeholder_banner(*rows: Any) -> None:
    """Say so when the model, or any image on the page, is the demo model's placeholder."""
    try:
        model_placeholder = backend().placeholder
    except StudioError:
        model_placeholder = False
    if model_placeholder or any(row["placeholder"] for row in rows):
        st.warning(PLACEHOLDER_NOTE, icon=":material/science:")


# Widgets --------------------------------------------------------------------------------------


# The controls' values are a RenderRequest: the same fields, the same defaults.
Defaults = RenderRequest


def defaults_from_settings(prompt: str = "", negative_prompt: str = "") -> Defaults:
    s = settings()
    return Defaults(prompt, negative_prompt, s.sampler, s.steps, s.cfg, s.width, s.height, s.seed)


def defaults_from_row(row: Any) -> Defaults:
    return Defaults(
        row["prompt"],
        row["negative_prompt"],
        row["sampler"],
        int(row["steps"]),
        float(row["cfg"]),
        int(row["width"]),
        int(row["height"]),
        int(row["seed"]),
    )


def controls_values(prefix: str, fallback: Defaults) -> Defaults:
    """What `prefix`'s controls hold now, `fallback` for any not drawn yet."""
    return Defaults(
        **{
            name: st.session_state.get(f"{prefix}_{name}", value)
            for name, value in asdict(fallback).items()
        }
    )


def load_controls(prefix: str, values: Defaults, random_seed: bool = False) -> None:
    """Put `values` into the controls of `prefix`; call before the controls are drawn."""
    for name, value in asdict(values).items():
        st.session_state[f"{prefix}_{name}"] = value
    st.session_state[f"{prefix}_random"] = random_seed


def _keep_controls_in_range(prefix: str, defaults: Defaults) -> None:
    """Bring values that reached the controls from outside within the widgets' ranges.

    A value past a widget's range makes Streamlit raise on every run of the page; clamping here,
    before the widgets are drawn, keeps the page usable whatever was loaded into it.
    """
    current = controls_values(prefix, defaults)
    safe, notes = clamp_request(current, defaults)
    if notes:
        load_controls(prefix, safe, bool(st.session_state.get(f"{prefix}_random")))
        st.info("Adjusted to the studio's limits: " + "; ".join(notes) + ".")


def _widget_range(name: str) -> tuple[Any, Any]:
    limit = LIMITS[name]
    if name == "cfg":
        return float(limit.low), float(limit.high)
    return int(limit.low), int(limit.high)


def render_controls(
    prefix: str,
    defaults: Defaults,
    prompt: bool = True,
    size: bool = True,
) -> RenderRequest:
    """The generation controls, keyed `{prefix}_cfg` and so on; returns the request they make.

    Only the controls the image backend has are drawn: no sampler, steps, CFG or negative prompt
    for one without them (OpenAI Images), a size picker for one with fixed sizes. `size` False
    leaves out width and height (an init image decides them)."""
    can = capabilities()
    # Streamlit forgets a widget's value when a run does not draw it (another page was open):
    # the last values are kept under a key of their own and brought back.
    kept = st.session_state.get(f"{prefix}_kept", {})
    for name, value in {**asdict(defaults), "random": False, **kept}.items():
        st.session_state.setdefault(f"{prefix}_{name}", value)
    _keep_controls_in_range(prefix, defaults)
    if prompt:
        st.text_area("Prompt", key=f"{prefix}_prompt", height=110)
        if can.negative_prompt:
            st.text_area("Negative prompt", key=f"{prefix}_negative_prompt", height=70)
    left, right = st.columns(2)
    if can.steps_and_cfg:
        left.slider(
            "CFG scale",
            *_widget_range("cfg"),
            step=0.5,
            key=f"{prefix}_cfg",
            help="How strictly the image follows the prompt; 5–9 is usual, high values "
            "oversaturate.",
        )
        right.slider(
            "Sampling steps",
            *_widget_range("steps"),
            key=f"{prefix}_steps",
            help="More steps refine detail, with diminishing returns past 30–40.",
        )
    if can.samplers:
        if st.session_state[f"{prefix}_sampler"] not in can.samplers:
            st.session_state[f"{prefix}_sampler"] = can.samplers[0]
        left.selectbox(
            "Sampler",
            list(can.samplers),
            key=f"{prefix}_sampler",
            help="The scheduler that removes the noise; names as in AUTOMATIC1111.",
        )
    right.number_input("Seed", *_widget_range("seed"), key=f"{prefix}_seed")
    right.checkbox("Random seed each time", key=f"{prefix}_random")
    if size and can.sizes:
        _size_picker(prefix, can.sizes, left)
    elif size:
        left.number_input(
            "Width",
            *_widget_range("width"),
            step=64,
            key=f"{prefix}_width",
            help="A multiple of 8.",
        )
        right.number_input(
            "Height",
            *_widget_range("height"),
            step=64,
            key=f"{prefix}_height",
            help="A multiple of 8.",
        )
    values = controls_values(prefix, defaults)
    st.session_state[f"{prefix}_kept"] = {
        **asdict(values),
        "random": st.session_state[f"{prefix}_random"],
    }
    return values


def _size_picker(prefix: str, sizes: Sequence[tuple[int, int]], where: Any) -> None:
    """A backend with fixed sizes: pick one; it becomes `{prefix}_width` and `{prefix}_height`."""
    labels = [f"{w}x{h}" for w, h in sizes]
    current = f"{st.session_state[f'{prefix}_width']}x{st.session_state[f'{prefix}_height']}"
    if st.session_state.get(f"{prefix}_size") not in labels:
        st.session_state[f"{prefix}_size"] = current if current in labels else labels[0]
    chosen = where.selectbox(
        "Size", labels, key=f"{prefix}_size", help="The sizes this model makes."
    )
    width, height = sizes[labels.index(chosen)]
    st.session_state[f"{prefix}_width"], st.session_state[f"{prefix}_height"] = width, height


def with_seed_choice(prefix: str, request: RenderRequest) -> RenderRequest:
    """The request with a fresh random seed if the user asked for one."""
    if st.session_state.get(f"{prefix}_random"):
        return replace(request, seed=secrets.randbelow(2**32))
    return request


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
        preview_image = getattr(backend(), "preview_image", latent_preview)
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
        return generate_image(studio().images, request, target, spec, on_step)


def generate_many(
    requests: Sequence[RenderRequest], unit: str, target: Target = STUDIO_TARGET
) -> list[ImageResult]:
    """Render (or fetch) several images through the batched path: compatible requests share a
    pipeline call; a bar counts the images (`unit` names one: "Cell") and one shows the steps."""
    jobs = [ImageJob(request, target, provenance={"made_in": "dashboard"}) for request in requests]
    with (
        result_progress(len(jobs), f"{len(jobs)} images", unit) as on_result,
        step_progress() as on_step,
    ):
        return studio().images.make(jobs, on_step=on_step, on_result=on_result)


def interpolate(request: RenderRequest, end_prompt: str, frames: int) -> Any:
    """The Studio's prompt interpolation from `request`'s prompt to `end_prompt`, with a bar
    for the frames and one for the steps; a `studio.api.Interpolation`."""
    values = {
        name: getattr(request, name)
        for name in ("negative_prompt", "sampler", "steps", "cfg", "width", "height", "seed",
                     "long_prompt")
    }  # fmt: skip
    with (
        result_progress(frames, f"{frames} images", "Frame") as on_result,
        step_progress() as on_step,
    ):
        return studio().interpolate(
            request.prompt, end_prompt, frames, on_result=on_result, on_step=on_step, **values
        )


def prompt_extras(prefix: str, request: RenderRequest) -> RenderRequest:
    """The Studio's prompt extras, for a backend that reads prompt syntax: what the syntax is,
    long prompts, LoRAs from the LoRA folder (added to the prompt as `<lora:name:w>` tags, as
    AUTOMATIC1111's extra networks do), and the prompt's length in tokens."""
    if not capabilities().prompt_syntax:
        return request
    with st.expander("Prompt weights, LoRA and long prompts"):
        st.caption(
            "AUTOMATIC1111 syntax: `(word:1.3)` weighs a word more, `(word)` x1.1, `[word]` "
            "/1.1, `BREAK` starts a new 77-token chunk, `<lora:name:0.8>` applies a LoRA; "
            "`\\(` is a literal bracket."
        )
        st.checkbox(
            "Long prompts: past 77 tokens in 77-token chunks",
            key=f"{prefix}_long_prompt",
            help="Off, a prompt is cut at 77 tokens (CLIP's window), as plain encoding does.",
        )
        names = LoraFolder(lora_folder(settings())).names()  # without opening the model
        chosen = st.multiselect(
            "LoRA",
            names,
            key=f"{prefix}_loras",
            help="LoRA files (name.safetensors) in the LoRA folder; each is added to the prompt "
            "as <lora:name:weight>.",
            placeholder="Choose LoRA files" if names else "No LoRA files",
        )
        if not names:
            st.caption(
                f"No LoRA files in {lora_folder(settings())}: put name.safetensors files there "
                f"({setting('lora_dir')})."
            )
        tags = []
        for name in chosen:
            weight = st.slider(
                f"Weight of {name}", -2.0, 2.0, 0.8, 0.05, key=f"{prefix}_lora_{name}"
            )
            if f"<lora:{name}:" not in request.prompt and f"<lora:{name}>" not in request.prompt:
                tags.append(f"<lora:{name}:{weight:g}>")
        if tags:
            request = replace(request, prompt=f"{request.prompt.rstrip()} {' '.join(tags)}")
        _token_note(request)
    return request


def _token_note(request: RenderRequest) -> None:
    from studio.core.prompt_syntax import parse_prompt

    try:
        parsed = parse_prompt(request.prompt)
        tokens = backend().count_tokens(parsed.plain)
    except StudioError as exc:
        st.error(str(exc))
        return
    if tokens <= CLIP_WINDOW:
        st.caption(f"{tokens} of {CLIP_WINDOW} tokens.")
    elif request.long_prompt:
        chunks = -(-(tokens - 2) // (CLIP_WINDOW - 2))
        st.caption(f"{tokens} tokens, in {chunks} chunks of {CLIP_WINDOW}.")
    else:
        st.warning(
            f"{tokens} tokens: past {CLIP_WINDOW} the prompt is cut; turn on long prompts to "
            "keep the rest."
        )


def parameters_text(row: StoredImage) -> str:
    return request_parameters(
        row.request,
        row.model,
        loras=row.provenance.get("loras", ()),
        controlnet=row.provenance.get("controlnet"),
    )


def image_card(
    row: Any,
    caption: str = "",
    key: str = "",
    actions: bool = True,
    controls: str = "",
    select: Mapping[str, Any] | None = None,
) -> bool:
    """One catalog image with its parameters; returns True when "Send to Studio" was pressed.

    An image made from another says from which (a change request also shows its reasoning).
    `controls`: the prefix of the page's Regenerate controls, into which "Back to the old
    prompt" loads a revised image's source; `select`: other widget values to set with them
    (the seasons page's style picker)."""
    path = store().image_path(row)
    if path.is_file():
        _show_image(row, path, caption, key)
    else:
        st.info(f"Image file missing: {row['path']}")
    clip_note(row)
    _lineage_notes(row, key, controls, select)
    with st.expander("Prompt and parameters"):
        st.code(parameters_text(row), language=None, wrap_lines=True)
        if path.is_file():
            st.download_button(
                "Download PNG",
                path.read_bytes,  # read when clicked, not on every run of the page
                file_name=f"{row['sha256'][:12]}.png",
                mime="image/png",
                key=f"dl_{key}_{row['id']}",
                on_click="ignore",
            )
    if actions:
        send = st.button("Send to Studio", key=f"send_{key}_{row['id']}")
        if st.button("Send to Studio as init image", key=f"init_{key}_{row['id']}"):
            send_init_image(row["id"])
        return send
    return False


def _set_state(name: str, value: Any) -> None:
    st.session_state[name] = value


@st.cache_data(show_spinner=False, max_entries=64)
def _blurred_png(path: str) -> bytes:
    return png_bytes(blurred_file(Path(path)))  # files are named by content: a path is a version


def _show_image(row: Any, path: Path, caption: str, key: str) -> None:
    """The image; one the safety filter flagged is blurred, with the reason and a Reveal button
    (per image and session), and one it could not check says so."""
    verdict = store().safety(row["cache_key"])
    revealed = f"reveal_{key}_{row['id']}"
    if verdict is not None and verdict.hidden and not st.session_state.get(revealed):
        st.image(_blurred_png(str(path)), caption=caption or None, width="stretch")
        st.warning(
            f"Hidden by the safety filter: {verdict.reason}", icon=":material/visibility_off:"
        )
        st.button(
            "Reveal",
            key=f"{revealed}_show",
            on_click=_set_state,
            args=(revealed, True),
            help="Show the image as it was made; the catalog keeps its flag.",
        )
        return
    st.image(str(path), caption=caption or None, width="stretch")
    if verdict is not None and verdict.hidden:
        st.button("Hide again", key=f"{revealed}_hide", on_click=_set_state, args=(revealed, False))
    elif verdict is not None and verdict.status == UNCHECKED:
        st.caption(f":material/warning: Not checked by the safety filter: {verdict.reason}")


def refusal_card(reason: str, caption: str = "", width: int = 512, height: int = 512) -> None:
    """A request the image server refused, shown as a flagged image is, but with nothing to
    reveal (no image was made): a blurred stand-in and the server's reason."""
    st.image(
        refusal_picture(width, height),
        caption=caption or "Refused: no image was made",
        width="stretch",
    )
    st.warning(f"Refused by the image server: {reason}", icon=":material/block:")


def refused_requests(limit: int = 8, columns: int = 4) -> None:
    """The latest requests the image server refused, as cards; nothing when there are none."""
    refused = store().refusals(limit)
    if not refused:
        return
    with st.expander(f"Refused by the image server ({len(refused)} latest)"):
        for start in range(0, len(refused), columns):
            for column, (_, prompt, verdict, when) in zip(
                st.columns(columns), refused[start : start + columns], strict=False
            ):
                with column:
                    refusal_card(verdict.reason, f"{when} · {prompt[:80]}")


def clip_note(row: Any) -> None:
    """The image's CLIP score against its prompt and, when the failure-mode check flags it, what
    to look at; read from the catalog (no model work), nothing when it has no score."""
    checks = studio().clip_checks
    if checks is None or not isinstance(row, StoredImage):
        return
    report = checks.stored_reports([row]).get(row.cache_key)
    if report is None:
        return
    line = f"CLIP score {report.score:.1f}"
    if report.failure.flagged:
        line += f" · :material/warning: look at it: CLIP sees “{report.failure.label}”"
    st.caption(line, help=CLIP_NOTE_HELP)


CLIP_NOTE_HELP = (
    "CLIP score: 100 × the cosine between CLIP's vectors of the image and of its prompt (higher "
    "fits better). The warning is a heuristic: a description of a known failure (malformed "
    "hands, extra limbs, a distorted face) fits the image better than a neutral one."
)


def denoising_strip_panel(row: StoredImage, key: str) -> None:
    """A "Denoising strip" expander under a catalog image: a frame every k steps, decoded by
    the model's VAE or the preview VAE, made on a click (the image renders again with its seed)
    and kept with the image, so it shows again without work; downloadable. Hidden while the
    safety filter's verdict hides the image."""
    from studio.images.strips import DECODERS, unavailable_reason

    with st.expander("Denoising strip"), guard("Making the denoising strip"):
        reason = unavailable_reason(backend())
        if reason:
            st.info(reason)
            return
        verdict = store().safety(row.cache_key)
        if (
            verdict is not None
            and verdict.hidden
            and not st.session_state.get(f"reveal_{key}_{row.id}")
        ):
            st.info("The strip is hidden as the image is: reveal the image to see it.")
            return
        left, right = st.columns(2)
        every = left.number_input(
            "A frame every k steps", 1, row.steps, min(5, row.steps),
            key=f"{key}_strip_every_{row.id}",
        )  # fmt: skip
        decoder = right.radio(
            "Decoded by", list(DECODERS), format_func=DECODERS.get, horizontal=True,
            key=f"{key}_strip_decoder_{row.id}",
        )  # fmt: skip
        strip = studio().stored_strip(row.cache_key, int(every), decoder)
        if strip is None:
            if not st.button("Make the strip", key=f"{key}_strip_make_{row.id}"):
                st.caption("Renders the image again with its seed, keeping every k-th step.")
                return
            with step_progress() as on_step:
                strip = studio().denoising_strip(row, int(every), decoder, on_step)
        st.image(str(strip.path), width="stretch")
        st.caption(strip.note)
        st.download_button(
            "Download the strip",
            strip.png,  # read when clicked
            file_name=strip.file_name,
            mime="image/png",
            key=f"{key}_strip_dl_{row.id}",
            on_click="ignore",
        )


def _lineage_notes(row: Any, key: str, controls: str, select: Mapping[str, Any] | None) -> None:
    """Where a revised or alternate-reality image came from; a revision's reasoning, and the
    way back to the prompt it changed."""
    line = lineage(row)
    if not line:
        return
    st.caption(line)
    revision = revision_of(row)
    if revision is None:
        return
    with st.expander("The reasoning"):
        show_trace(revision.get("trace") or [])
    if controls:
        old = source_of(row)
        if st.button(
            "Back to the old prompt",
            key=f"back_{key}_{row['id']}",
            disabled=old is None,
            help="Load the prompt and settings of the image this one was changed from into "
            "the Regenerate controls. Both images stay in the catalog.",
        ):
            for name, value in (select or {}).items():
                st.session_state[name] = value
            queue_controls(controls, defaults_from_row(old))


def send_init_image(image_id: int) -> None:
    """Open the Studio with catalog image `image_id` as the init image of its modes."""
    st.session_state["st_init_pending"] = image_id
    st.switch_page("pages/studio.py")


def send_to_studio(values: Defaults, notes: Sequence[str] = (), random_seed: bool = False) -> None:
    """Open the Studio with `values` in its controls, and `notes` on what was changed on the way."""
    st.session_state["st_pending"] = (values, list(notes), random_seed)
    st.switch_page("pages/studio.py")


def paginate(count: int, per_page: int, key: str) -> slice:
    """A page picker when `count` items need more than one page; the slice to show."""
    pages = max(1, -(-count // per_page))
    if pages == 1:
        return slice(0, count)
    page = st.number_input(f"Page (of {pages})", 1, pages, key=key)
    start = (int(page) - 1) * per_page
    return slice(start, start + per_page)


def sidebar() -> None:
    """What the app works on: the series, the models and where the catalog is."""
    s = settings()
    if st.session_state.pop(CANCELLED_KEY, False):
        st.toast("Render cancelled: nothing was stored.", icon=":material/stop:")
    with st.sidebar:
        with guard("Reading the series"):
            current = series()
            st.markdown(
                f"**{current.title}**  \n{len(current.seasons)} seasons · "
                f"{len(current.episodes)} episodes"
            )
        with guard("Loading the image model"):
            model = backend()
            st.caption(f"Image model: {model.label} on {model.device}")
        st.caption(f"LLM: {llm_module.backend_description(s)}")
        st.caption(f"Catalog: {s.data_dir}")


def apply_pending(prefix: str) -> None:
    """Load values queued for `prefix`'s controls (by a rewrite or a send) before they are drawn."""
    pending = st.session_state.pop(f"{prefix}_pending", None)
    if pending is not None:
        values, notes, random_seed = pending
        load_controls(prefix, values, random_seed)
        if notes:
            st.info("Loaded with changes: " + "; ".join(notes) + ".", icon=":material/info:")


def queue_controls(prefix: str, values: Defaults) -> None:
    """Set `prefix`'s controls to `values` on the next run, then rerun."""
    st.session_state[f"{prefix}_pending"] = (values, [], False)
    st.rerun()


def reference_controls(prefix: str, cast: Sequence[str], request: RenderRequest) -> RenderRequest:
    """With an IP-Adapter: condition the image on one of `cast`'s portraits, at a chosen scale."""
    if not cast or not capabilities().ip_adapter:
        return request
    use = st.checkbox(
        "Condition on a character's portrait (IP-Adapter)",
        key=f"ipa_{prefix}",
        help="The portrait steers the face and look; the descriptor in the prompt still applies.",
    )
    if not use:
        return request
    name = st.selectbox("Character", list(cast), key=f"ipa_{prefix}_name")
    low, high = REFERENCE_SCALE
    scale = st.slider(
        "Reference scale", low, high, settings().reference_scale, 0.05,
        key=f"ipa_{prefix}_scale", help="0 ignores the portrait, 1 follows it closely.",
    )  # fmt: skip
    sha = studio().reference_of(name)
    if sha is None:
        st.warning(f"{name} has no portrait yet: render one on the Characters page.")
        return request
    return replace(request, reference_image=sha, reference_scale=scale)


def regenerate_panel(
    prefix: str,
    defaults: Defaults,
    target: Target,
    spec: PromptSpec | None,
    cast: Sequence[str] = (),
):
    """The generation controls of `prefix` and its Generate button; a new image reruns the page.
    `cast`: the characters whose portraits may condition the image (with an IP-Adapter)."""
    request = reference_controls(prefix, cast, render_controls(prefix, defaults))
    if st.button("Generate", type="primary", key=f"{prefix}_generate"):
        with guard("Generating the image"):
            made = generate(with_seed_choice(prefix, request), target, spec)
            if made.cached:
                st.toast("That image was already in the catalog.")
            st.rerun()


def open_catalog(action: str) -> tuple[Series | None, Store | None]:
    """The series and the catalog, or (None, None) with an error box saying why not."""
    with guard(action):
        return series(), store()
    return None, None


def season_picker(series: Series, key: str, where: Any = st) -> int:
    """A season selectbox labelled with the seasons' ids and titles."""
    return where.selectbox(
        "Season",
        list(series.seasons),
        format_func=lambda n: f"{series.seasons[n].id} · {series.seasons[n].title}",
        key=key,
    )


# Cast, lineage and change requests ------------------------------------------------------------


def widget_id(text: str) -> str:
    """A short, stable id for `text` that is safe in a widget key (a character's name may hold
    accents, quotes and spaces)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def revision_of(row: Any) -> dict[str, Any] | None:
    """A change request's record on the image it made: from (the old image's key), request and
    trace (the LLM's steps, as question and answer); None for any other image."""
    return (getattr(row, "provenance", None) or {}).get("revision")


def reality_of(row: Any) -> dict[str, Any] | None:
    """An alternate reality's record on its image: reality, from, and for a character's,
    character and descriptor_version; None for any other image."""
    return (getattr(row, "provenance", None) or {}).get("reality")


def source_of(row: Any) -> StoredImage | None:
    """The catalog image that `row` was made from (by a change request or an alternate
    reality), while it is still there."""
    made_from = revision_of(row) or reality_of(row) or {}
    return store().find_image(made_from["from"]) if made_from.get("from") else None


def image_label(row: Any) -> str:
    """What an image was made for, in words: "S01E03 #2", "S01 · Film noir still #1",
    "Portrait of Irene Adler (look v2)", "Irene Adler in film noir", "S01E03 storyboard,
    moment 2: …"."""
    number = f"#{row['image_index'] + 1}"
    reality = reality_of(row)
    if reality is not None:
        who = row["style"]
        if row["episode"] is not None:
            who = f"S{row['season']:02d}E{row['episode']:02d} {number}"
        return f"{who or 'An image'} in {reality.get('reality', 'another reality')}"
    if row["target"] == "character":
        version = (row.provenance.get("character") or {}).get("version")
        return f"Portrait of {row['style']}" + (f" (look v{version})" if version else "")
    if row["target"] == "episode":
        return f"{row.target_of.label()} {number}"
    if row["target"] == "season":
        style = load_styles().get(row["style"], {}).get("name", row["style"])
        return f"S{row['season']:02d} · {style} {number}"
    if row["target"] == "storyboard":
        title = row.provenance.get("moment_title")
        label = row.target_of.label(row["image_index"])
        return f"{label}: {title}" if title else label
    return row.target_of.label(row["image_index"])


def lineage(row: Any) -> str:
    """One line on what `row` was made from: "Revised from #1: night instead of day", "film
    noir, from Portrait of Irene Adler (look v1), strength 0.6"; "" for an image made from a
    prompt alone."""
    revision, reality = revision_of(row), reality_of(row)
    if revision is None and reality is None:
        return ""
    source = source_of(row)
    if revision is not None:
        where = f"#{source['image_index'] + 1}" if source is not None else "an image no longer here"
        return f"Revised from {where}: {revision.get('request', '')}"
    where = image_label(source) if source is not None else "an image no longer here"
    strength = f", strength {row['strength']:g}" if row["strength"] is not None else ""
    return f"{reality.get('reality', '')}, from {where}{strength}"


def show_trace(trace: Sequence[Mapping[str, str]]) -> None:
    """An LLM's visible steps, as questions and answers."""
    for step in trace:
        st.markdown(f"**Q: {step['question']}**  \nA: {step['answer']}")


REVISION_QUESTIONS = [question for _, question in REVISION_STEPS]


def is_revision(record: PromptRecord) -> bool:
    """Whether a prompt record was written for a change request (its trace is the change's
    steps), not by the batch job's prompting."""
    return [step.get("question") for step in record.trace or []] == REVISION_QUESTIONS


def change_request(images: Sequence[StoredImage], key: str, default: str | None = None) -> None:
    """Ask for a change to one of `images` (`default`: the cache key picked first, else the
    newest). The LLM reasons in visible steps and writes a new prompt; the new image joins the
    same episode or style, and the old one stays. Widgets are keyed `{key}_...`."""
    if not images:
        st.caption("No image to change yet.")
        return
    newest_first = {row["cache_key"]: row for row in reversed(images)}
    keys = list(newest_first)
    chosen = st.selectbox(
        "Image to change",
        keys,
        index=keys.index(default) if default in keys else 0,
        format_func=lambda k: f"{image_label(newest_first[k])} · seed {newest_first[k]['seed']}",
        key=f"{key}_image",
    )
    request = st.text_input(
        "What should change?",
        key=f"{key}_request",
        max_chars=MAX_REQUEST,
        placeholder="night instead of day · Watson in the foreground · less gloomy",
    )
    if st.button("Apply the change", key=f"{key}_apply", type="primary"):
        with (
            guard("Applying the change"),
            step_progress("The LLM is working out the change…") as on_step,
        ):
            made = studio().revise(chosen, request, on_step=on_step)
            st.session_state[f"{key}_made"] = made.key
            if made.cached:
                st.toast("That change was made before: the image was already in the catalog.")
            st.rerun()
    made_key = st.session_state.get(f"{key}_made")
    row = store().find_image(made_key) if made_key else None
    if row is not None:
        st.markdown("**The reasoning**")
        show_trace((revision_of(row) or {}).get("trace") or [])
        path = store().image_path(row)
        st.image(str(path), caption=f"{image_label(row)} · {lineage(row)}", width="stretch")
