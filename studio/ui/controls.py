"""The generation controls the pages share: their values (a `RenderRequest`, defaulted from the
settings or a catalog image), the sliders and pickers the image backend has, values queued for a
page's controls before they are drawn (and sent to the Studio page), the IP-Adapter reference
controls and the Regenerate panel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

import streamlit as st

from studio.core.params import (
    LIMITS,
    RANDOM_SEED,
    REFERENCE_SCALE,
    RenderRequest,
    clamp_request,
    draw_seed,
)
from studio.core.targets import Target
from studio.ui.errors import guard
from studio.ui.progress import generate
from studio.ui.resources import capabilities, current_settings, current_studio
from studio.writing.prompting import PromptSpec

# The controls' values are a RenderRequest: the same fields, the same defaults.
Defaults = RenderRequest


def defaults_from_settings(prompt: str = "", negative_prompt: str = "") -> Defaults:
    s = current_settings()
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
    if name == "seed":  # -1: a random seed, as in AUTOMATIC1111
        return RANDOM_SEED, int(limit.high)
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
    right.number_input(
        "Seed",
        *_widget_range("seed"),
        key=f"{prefix}_seed",
        help="-1: a random seed each time, as in AUTOMATIC1111; the seed drawn is recorded with "
        "the image and shown below.",
    )
    right.checkbox("Random seed each time", key=f"{prefix}_random")
    drawn = st.session_state.get(f"{prefix}_drawn_seed")
    if drawn is not None:
        right.caption(f"Last random seed drawn: {drawn}")
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
    """The request with a fresh random seed if the user asked for one (the checkbox, or seed
    -1); the seed drawn is kept for the controls to show."""
    if st.session_state.get(f"{prefix}_random") or request.seed == RANDOM_SEED:
        request = replace(request, seed=draw_seed())
        st.session_state[f"{prefix}_drawn_seed"] = request.seed
    return request


def send_init_image(image_id: int) -> None:
    """Open the Studio with catalog image `image_id` as the init image of its modes."""
    st.session_state["st_init_pending"] = image_id
    st.switch_page("pages/studio.py")


def send_to_studio(values: Defaults, notes: Sequence[str] = (), random_seed: bool = False) -> None:
    """Open the Studio with `values` in its controls, and `notes` on what was changed on the way."""
    st.session_state["st_pending"] = (values, list(notes), random_seed)
    st.switch_page("pages/studio.py")


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
        "Reference scale", low, high, current_settings().reference_scale, 0.05,
        key=f"ipa_{prefix}_scale", help="0 ignores the portrait, 1 follows it closely.",
    )  # fmt: skip
    sha = current_studio().reference_of(name)
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
) -> None:
    """The generation controls of `prefix` and its Generate button; a new image reruns the page.
    `cast`: the characters whose portraits may condition the image (with an IP-Adapter)."""
    request = reference_controls(prefix, cast, render_controls(prefix, defaults))
    if st.button("Generate", type="primary", key=f"{prefix}_generate"):
        with guard("Generating the image"):
            made = generate(with_seed_choice(prefix, request), target, spec)
            if made.cached:
                st.toast("That image was already in the catalog.")
            st.rerun()
