"""The pages' error boundary: `guard` turns a failure into an error box that says what to do
next (never a traceback), a refused request into a refusal card, and the placeholder banner says
when the images come from the untrained demo model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from studio.core.errors import ContentRefusedError, StudioError
from studio.images.safety import refusal_picture
from studio.ui.resources import current_backend

log = logging.getLogger(__name__)

PLACEHOLDER_NOTE = (
    "These images come from the untrained **demo** model: they are placeholders, not art. Set "
    "`STUDIO_IMAGE_MODEL` to a hub id, a diffusers folder or a `.safetensors` file (and run on a "
    "GPU) for real images."
)


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
        model_placeholder = current_backend().placeholder
    except StudioError:
        model_placeholder = False
    if model_placeholder or any(row["placeholder"] for row in rows):
        st.warning(PLACEHOLDER_NOTE, icon=":material/science:")


def refusal_card(reason: str, caption: str = "", width: int = 512, height: int = 512) -> None:
    """A request the image server refused, shown as a flagged image is, but with nothing to
    reveal (no image was made): a blurred stand-in and the server's reason."""
    st.image(
        refusal_picture(width, height),
        caption=caption or "Refused: no image was made",
        width="stretch",
    )
    st.warning(f"Refused by the image server: {reason}", icon=":material/block:")
