"""Drive the real dashboard in Debian's headless Chromium with Playwright.

Used by tests/test_browser.py, and to take the README's screenshots from the current catalog:
`python -m tests.browser --out assets/screenshots` (needs /usr/bin/chromium and playwright).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Without the networking flags Chromium keeps trying to reach Google on a closed network.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGES = {
    "episodes": "",
    "seasons": "seasons",
    "studio": "studio",
    "gallery": "gallery",
    "marketing": "marketing",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dashboard_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """`streamlit run dashboard.py` on a free localhost port; yields its URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard.py"),
        "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"streamlit did not start; its log:\n{log.read_text()}")
                time.sleep(0.5)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_idle(page, timeout_s: float = 120) -> None:
    """Wait until the app has finished its run (Streamlit's 'Running…' widget is gone)."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_s * 1000)
    page.wait_for_timeout(500)
    page.wait_for_function(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            const running = document.querySelector('[data-testid="stStatusWidget"]');
            return app && !running && document.querySelector('h1');
        }""",
        timeout=timeout_s * 1000,
    )
    page.wait_for_timeout(300)


def exceptions_on(page) -> list[str]:
    return [e.inner_text() for e in page.query_selector_all('[data-testid="stException"]')]


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def capture_pages(url: str, out: Path, extra: dict[str, str] | None = None) -> dict[str, Path]:
    """A screenshot of every page (and of `extra` name -> path pairs) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    shots = {}
    with chromium_page() as page:
        for name, path in {**PAGES, **(extra or {})}.items():
            page.goto(f"{url}/{path}")
            wait_idle(page)
            errors = exceptions_on(page)
            if errors:
                raise AssertionError(f"{name}: Streamlit exception: {errors[0][:2000]}")
            shots[name] = out / f"{name}.png"
            page.wait_for_timeout(1500)  # tables draw on a canvas after the run ends
            page.screenshot(path=str(shots[name]))
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of every dashboard page.")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshots")
    parser.add_argument("--campaign", default="", help="a saved campaign's id, for its screenshot")
    args = parser.parse_args()
    extra = {"episode": "?episode=S01E05"}
    if args.campaign:
        extra["marketing"] = f"marketing?campaign={args.campaign}"
    log = Path(tempfile.gettempdir()) / "series-studio-screenshots.log"
    with dashboard_server({}, log) as url:
        shots = capture_pages(url, args.out, extra)
    for name, path in shots.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
