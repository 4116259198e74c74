"""What the dashboard's escaped Markdown (`studio.ui.escape_markdown`) shows, and what in it could
still be live, for the pages' tests."""

from __future__ import annotations

import re

_TOKEN = re.compile(r"`([^`\n]+)`|\\([!-/:-@\[-`{-~])")  # a code span, or an escaped mark


def shown(markdown: str) -> str:
    """The text Streamlit shows for `markdown`: escapes and code marks gone, line breaks and
    indents as written."""
    text = _TOKEN.sub(lambda m: m[1] if m[1] is not None else m[2], markdown)
    return text.replace("  \n", "\n").replace("\u00a0", " ")


def live(markdown: str) -> list[str]:
    """What in `markdown` could make a link, an image, emphasis, HTML, LaTeX or a Streamlit
    code: the marks left unescaped outside code spans, and addresses there."""
    plain = _TOKEN.sub("", markdown)
    return re.findall(r"[\[\]*<>$~|:&`]|www\.|@|(?<![^\W_])_|_(?![^\W_])", plain)
