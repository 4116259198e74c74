"""The pages' error boundary: `guard` turns a failure into an error box that says what to do
next (never a traceback), a refused request into a refusal card, and the placeholder banner says
when the images come from the untrained demo model. `escape_markdown` is for any text from a
user, a URL or a server that goes into Streamlit's Markdown (an error box, a heading).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import streamlit as st

from studio.core.errors import ContentRefusedError, StudioError
from studio.images.safety import refusal_picture
from studio.ui.resources import current_backend

log = logging.getLogger(__name__)

# What escape_markdown keeps as code: code spans, and what is made something of even when escaped:
# by GitHub's Markdown, a web or e-mail address in plain text (a link; its closing punctuation
# left out), by Streamlit, `:streamlit:` (its logo).
_AS_CODE = re.compile(
    r"(`[^`\n]+`"
    r"|(?:https?://|www\.)[^\s`]*[^\s`.,:;!?'\")\]}>*_~]"
    r"|[-.\w+]+@[-\w]+(?:\.[-\w]+)+"
    r"|:streamlit:)",
    re.IGNORECASE,
)
# What starts Markdown's, GitHub's or Streamlit's syntax, backslashed by escape_markdown; the
# other marks (quotes, commas, brackets without [ ]...) start nothing once these are escaped.
_SYNTAX = re.compile(
    r":(?P<pack>[A-Za-z]+)/"  # Streamlit's icons (:material/name:), found before any parsing
    r"|^(?P<number>\d+)(?P<after>[.)])"  # an ordered list item at the start of a line
    r"|^[#+=-]"  # a heading, a list item or a rule at the start of a line
    r"|[\\`*\[\]<>&~$|:]"  # code, emphasis, links, HTML, entities, strikes, LaTeX, tables, :codes:
    r"|(?<![^\W_])_|_(?![^\W_])"  # _ but inside a word, where it never makes emphasis
)


def _backslashed(match: re.Match) -> str:
    if match["pack"]:
        return f"\\:{match['pack']}\\/"
    if match["number"]:
        return f"{match['number']}\\{match['after']}"
    return f"\\{match[0]}"


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
        st.error(f"{action} failed: {escape_markdown(str(exc))}", icon=":material/error:")
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


def escape_markdown(text: str) -> str:
    """`text` as Markdown that shows it as written, with nothing live: every mark that could
    start a link, an image, emphasis, a heading, LaTeX or one of Streamlit's colour, icon and
    emoji codes backslashed, and web and e-mail addresses shown as code, which is never a link.
    `code` spans stay code (the messages write their commands so); lines and indents stay."""
    lines = []
    for line in text.split("\n"):
        parts = _AS_CODE.split(line)  # odd indexes: code spans and addresses
        for n, part in enumerate(parts):
            if n % 2 == 0:
                parts[n] = _SYNTAX.sub(_backslashed, part)
            elif not part.startswith("`"):
                parts[n] = f"`{part}`"  # none has a backtick in it
        line = "".join(parts)
        indent = len(line) - len(line.lstrip(" \t"))
        lines.append("\u00a0" * indent + line[indent:])  # not an indented code block
    return "  \n".join(lines)  # a Markdown line break


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
    st.warning(f"Refused by the image server: {escape_markdown(reason)}", icon=":material/block:")
