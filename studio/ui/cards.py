"""Catalog images as cards: the image (blurred when the safety filter flagged it), its CLIP note,
where it came from, its parameters and download, the actions that send it to the Studio; the
requests the image server refused; the denoising strip panel under an image.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import streamlit as st

from studio.catalog.records import UNCHECKED, StoredImage
from studio.core.inputs import png_bytes
from studio.images.safety import blurred_file
from studio.images.service import request_parameters
from studio.ui.controls import defaults_from_row, queue_controls, send_init_image
from studio.ui.errors import guard, refusal_card
from studio.ui.lineage import lineage, revision_of, show_trace, source_of
from studio.ui.progress import step_progress
from studio.ui.resources import current_backend, current_store, current_studio


def parameters_text(row: StoredImage) -> str:
    return request_parameters(
        row.request,
        row.model,
        loras=row.provenance.get("loras", ()),
        controlnet=row.provenance.get("controlnet"),
        model_hash=row.provenance.get("model_hash"),
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
    path = current_store().image_path(row)
    if path.is_file():
        _show_image(row, path, caption, key)
    else:
        st.info(f"Image file missing: {row['path']}")
    clip_note(row)
    _lineage_notes(row, key, controls, select)
    with st.expander("Prompt and parameters"):
        st.code(parameters_text(row), language=None, wrap_lines=True)
        if served := RENDER_PATHS.get(row.provenance.get("render_path", "")):
            st.caption(served)
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


# What the fast path's `render_path` in an image's provenance means, for people.
RENDER_PATHS = {
    "compiled": ":material/bolt: Rendered by the compiled fast path.",
    "eager": "Rendered eagerly (the fast path was compiling this shape in the background, or "
    "does not compile it).",
    "eager, then compiled": ":material/bolt: Started eagerly, finished by the compiled fast path "
    "once its compile was ready.",
}


def _set_state(name: str, value: Any) -> None:
    st.session_state[name] = value


@st.cache_data(show_spinner=False, max_entries=64)
def _blurred_png(path: str) -> bytes:
    return png_bytes(blurred_file(Path(path)))  # files are named by content: a path is a version


def _show_image(row: Any, path: Path, caption: str, key: str) -> None:
    """The image; one the safety filter flagged is blurred, with the reason and a Reveal button
    (per image and session), and one it could not check says so."""
    verdict = current_store().safety(row["cache_key"])
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


def refused_requests(limit: int = 8, columns: int = 4) -> None:
    """The latest requests the image server refused, as cards; nothing when there are none."""
    refused = current_store().refusals(limit)
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
    checks = current_studio().clip_checks
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
        reason = unavailable_reason(current_backend())
        if reason:
            st.info(reason)
            return
        verdict = current_store().safety(row.cache_key)
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
        strip = current_studio().stored_strip(row.cache_key, int(every), decoder)
        if strip is None:
            if not st.button("Make the strip", key=f"{key}_strip_make_{row.id}"):
                st.caption("Renders the image again with its seed, keeping every k-th step.")
                return
            with step_progress() as on_step:
                strip = current_studio().denoising_strip(row, int(every), decoder, on_step)
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
