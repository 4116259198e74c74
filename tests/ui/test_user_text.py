"""Text from a link, a user or a server shows as written in the dashboard's Markdown: a query
parameter or a failure's message makes no link, image, emphasis, LaTeX or Streamlit code, in the
pages and in the `guard` error boundary; checked in AppTest and, for what Streamlit's frontend
makes of it, in a real browser."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from studio.ui.errors import escape_markdown
from tests.support.markdown import live, shown
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

EVIL = "[click](https://evil.example)"
WRITTEN = [  # each shown as written, nothing in it live
    EVIL,
    "![tracker](https://evil.example/pixel.png) [ref][1] [1]: https://evil.example",
    "see www.evil.example, mail me@evil.example or go to https://evil.example/a_b.",
    "**bold** __strong__ _it_ *it* ~~gone~~ $x^2$ $$y$$ <b>html</b> &amp; a\\b",
    ":red[colour] :blue-badge[badge] :small[small] :smile: :material/home: :streamlit:",
    "# a heading\n- a list item\n1. another\n> a quote\n---\n| a | b |\n    indented code",
    "This '(' is never closed; write \\( for a literal one.\n  'a (unclosed'\n     ^",
    "snake_case_name, __init__, C:\\Users\\x and dall-e-2 (OpenAI), as written.",
]


@pytest.mark.parametrize("text", WRITTEN)
def test_escaped_text_has_nothing_live_and_shows_as_written(text):
    escaped = escape_markdown(text)
    assert live(escaped) == [], escaped
    assert shown(escaped) == text


def test_escaping_keeps_the_messages_code_spans_and_plain_words():
    escaped = escape_markdown(f"No episode {EVIL}: run `python dataprep.py --season 1`.")
    assert escaped == "No episode \\[click\\](`https://evil.example`)\\: run " + (
        "`python dataprep.py --season 1`."
    )
    plain = "'lots' is not a valid CFG scale value (dall-e-2, snake_case, /tmp/a-b/c.png)."
    assert escape_markdown(plain) == plain  # nothing there starts any syntax


def guarded_failures():
    from studio import ui
    from studio.core.errors import ContentRefusedError, StudioError

    with ui.guard("Opening the file"):
        raise StudioError("No file [click](https://evil.example); run `python dataprep.py`.")
    with ui.guard("Making the image"):
        raise ContentRefusedError("**Refused**: see ![x](https://evil.example/x.png)")


@pytest.mark.slow
def test_the_error_boundary_shows_a_failures_message_as_written():
    at = AppTest.from_function(guarded_failures, default_timeout=60).run()
    assert not at.exception
    [error] = at.error
    assert error.value.startswith("Opening the file failed: No file \\[click\\](")
    assert live(error.value.removeprefix("Opening the file failed: ")) == []
    assert "`python dataprep.py`" in error.value
    assert shown(error.value) == (
        "Opening the file failed: No file [click](https://evil.example); run python dataprep.py."
    )
    [refusal] = at.warning
    assert live(refusal.value.removeprefix("Refused by the image server: ")) == []
    assert shown(refusal.value) == (
        "Refused by the image server: **Refused**: see ![x](https://evil.example/x.png)"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("page", "parameter"),
    [
        ("pages/episodes.py", "episode"),
        ("pages/characters.py", "character"),
        ("pages/marketing.py", "campaign"),
    ],
)
def test_a_link_in_the_query_shows_as_text_in_the_error(app_env, page, parameter):  # noqa: F811
    at = open_page(page, **{parameter: EVIL})
    [error] = at.error
    assert "\\[click\\](`https://evil.example`)" in error.value  # brackets escaped, no link
    assert live(error.value) == [], error.value
    assert EVIL in shown(error.value)


LIVE_ELEMENTS = (
    "a, img, strong, em, del, h1, h2, h3, h4, h5, h6, ul, ol, li, blockquote, table, hr, pre, "
    ".katex, span[style], span[role=img]"
)
ESCAPING_APP = """
import json, sys
import streamlit as st
from studio.ui.errors import escape_markdown
st.title("Escaped")
for text in json.loads(open(sys.argv[1], encoding="utf-8").read()):
    st.error(escape_markdown(text))
"""


@pytest.mark.browser
def test_streamlit_shows_escaped_text_as_written_in_a_browser(tmp_path):
    from tests.support.browser import CHROMIUM, ROOT, chromium_page, free_port

    pytest.importorskip("playwright.sync_api", reason="playwright drives the browser")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    (tmp_path / "app.py").write_text(ESCAPING_APP)
    (tmp_path / "texts.json").write_text(json.dumps(WRITTEN))
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(tmp_path / "app.py"),
        "--server.headless", "true", "--server.port", str(port), "--server.address",
        "127.0.0.1", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        "--", str(tmp_path / "texts.json"),
    ]  # fmt: skip
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.5)
        with chromium_page() as page:
            page.goto(url)
            page.wait_for_function(
                f"document.querySelectorAll('[data-testid=stAlertContentError]').length"
                f" === {len(WRITTEN)}",
                timeout=60_000,
            )
            page.wait_for_timeout(1000)  # the emoji and LaTeX plugins load on demand
            boxes = page.query_selector_all("[data-testid=stAlertContentError]")
            for text, box in zip(WRITTEN, boxes, strict=True):
                made = box.query_selector_all(LIVE_ELEMENTS)
                assert made == [], (text, [e.evaluate("e => e.outerHTML") for e in made])
                assert box.inner_text().replace("\u00a0", " ") == text
    finally:
        server.terminate()
        server.wait(10)
