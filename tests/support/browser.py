"""Drive the real dashboard in Debian's headless Chromium with Playwright.

Used by tests/ui/test_browser.py, and to take the README's screenshots from the current catalog:
`python -m tests.support.browser --out assets/screenshots` (needs /usr/bin/chromium and
playwright). The
Prompt Library's (`library.png`) shows a search in Portuguese that finds English prompts. The
Studio's inpaint screenshot (`studio-inpaint.png`) inpaints a drawn scene with a mask painted by
the mouse (and `guided.png` renders from a sketch drawn by the mouse, with the demo
ControlNet), which adds that image to the catalog (once: a second run finds it there). So do the
storyboard (`storyboard.png`: made on the episode page when the episode has none) and the change
request (`change-request.png`), which ask the configured LLM.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
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
    "characters": "characters",
    "studio": "studio",
    "gallery": "gallery",
    "library": "library",
    "marketing": "marketing",
    "jobs": "jobs",
}


# `streamlit run` with faulthandler listening on SIGUSR1: a test that times out asks the server
# for every thread's stack (`server_report`), so CI's log says where it was stuck.
SERVER_MAIN = (
    "import faulthandler, signal; faulthandler.register(signal.SIGUSR1, all_threads=True); "
    "from streamlit.web.cli import main; main(prog_name='streamlit')"
)
LIVE_SERVERS: dict[subprocess.Popen, Path] = {}  # the running servers and their logs
# What a failing test's report adds (tests/ui/conftest.py): (title, text) pairs, from the pages
# and servers a test failed inside of.
FAILURE_NOTES: list[tuple[str, str]] = []


def server_report(process: subprocess.Popen, log: Path, tail_chars: int = 12_000) -> str:
    """A dashboard server's thread stacks (while it runs) and the end of its log."""
    if process.poll() is None:
        process.send_signal(signal.SIGUSR1)
        time.sleep(1)  # faulthandler writes from its own thread
    text = log.read_text(errors="replace") if log.exists() else ""
    return f"{log} (exit code {process.poll()}):\n{text[-tail_chars:]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def dashboard_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """`streamlit run dashboard.py` on a free localhost port; yields its URL."""
    port = free_port()
    command = [
        sys.executable, "-c", SERVER_MAIN, "run", str(ROOT / "dashboard.py"),
        "--server.headless", "true", "--server.port", str(port),
        "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with log.open("w") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        LIVE_SERVERS[process] = log
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
        except BaseException:
            FAILURE_NOTES.append(("dashboard server (threads, log)", server_report(process, log)))
            raise
        finally:
            LIVE_SERVERS.pop(process, None)
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


def click_for(page, button, selector: str, timeout_ms: int = 120_000) -> None:
    """Click `button` and wait for `selector`; when the app is idle and `selector` has not come,
    click once more. Once in many CI runs the Studio's Generate, clicked just after the prompt's
    Ctrl+Enter rerun, showed nothing for 120 s while every later test passed: most likely a click
    that landed while Streamlit re-rendered the page (streamlit/streamlit#8725: clicks ignored while
    a text area has focus). A real hang still fails, with the page and
    the server's threads in the report (tests/ui/conftest.py)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    button.click()
    try:
        page.wait_for_selector(selector, timeout=timeout_ms // 2)
        return
    except PlaywrightTimeout:
        wait_idle(page, timeout_ms / 2000)  # a slow run is let finish, not clicked again
    if page.query_selector(selector) is None:
        button.click()
        page.wait_for_selector(selector, timeout=timeout_ms // 2)


def exceptions_on(page) -> list[str]:
    return [e.inner_text() for e in page.query_selector_all('[data-testid="stException"]')]


@contextmanager
def chromium_page(width: int = 1400, height: int = 1000) -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            try:
                yield page
            except BaseException:
                FAILURE_NOTES.append(("the page when the test failed", describe_page(page)))
                raise
        finally:
            browser.close()


def describe_page(page, chars: int = 4_000) -> str:
    """What a page showed when a test failed on it: its address, Streamlit's alerts and
    exceptions, and the start of its text."""
    try:
        alerts = [e.inner_text() for e in page.query_selector_all('[data-testid="stAlert"]')]
        text = page.locator("body").inner_text(timeout=5_000)
    except Exception as error:  # the page itself is gone
        return f"{page.url}: unreadable ({error})"
    return f"{page.url}\nalerts: {alerts}\nexceptions: {exceptions_on(page)}\ntext:\n{text[:chars]}"


def capture_pages(
    url: str, out: Path, extra: dict[str, str] | None = None, only: bool = False
) -> dict[str, Path]:
    """A screenshot of every page (and of `extra` name -> path pairs; with `only`, of `extra`
    alone) under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    shots = {}
    with chromium_page() as page:
        for name, path in {**({} if only else PAGES), **(extra or {})}.items():
            page.goto(f"{url}/{path}")
            wait_idle(page)
            errors = exceptions_on(page)
            if errors:
                raise AssertionError(f"{name}: Streamlit exception: {errors[0][:2000]}")
            shots[name] = out / f"{name}.png"
            page.wait_for_timeout(1500)  # tables draw on a canvas after the run ends
            page.screenshot(path=str(shots[name]))
    return shots


def scene_png(path: Path, size: int = 256) -> Path:
    """A simple picture to inpaint (sky, sea, sun, a lighthouse): the demo model's own images are
    noise, on which a repainted area would not show."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    horizon = size * 5 // 8
    for y in range(horizon):  # the sky, darker upwards
        draw.line([(0, y), (size, y)], fill=(40 + 120 * y // horizon, 80 + 100 * y // horizon, 170))
    draw.rectangle([0, horizon, size, size], fill=(20, 60, 110))
    draw.ellipse([size * 5 // 8, size // 8, size * 13 // 16, size * 5 // 16], fill=(250, 210, 90))
    left, right = size * 3 // 16, size * 5 // 16
    draw.polygon([(left, horizon), (right, horizon), (size // 4 + size // 32, size // 4),
                  (size // 4 - size // 32, size // 4)], fill=(235, 235, 225))  # fmt: skip
    draw.rectangle([left, size * 3 // 8, right, size * 7 // 16], fill=(190, 40, 40))
    image.save(path)
    return path


def paint_stroke(page, canvas, points: list[tuple[float, float]]) -> None:
    """Drag the mouse over `canvas` (a locator) through `points`, given as fractions of its size."""
    box = canvas.bounding_box()
    at = [(box["x"] + box["width"] * x, box["y"] + box["height"] * y) for x, y in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=8)
    page.mouse.up()


def capture_inpaint(
    url: str, out: Path, init: Path, prompt: str = "a white seagull in flight, oil painting"
) -> Path:
    """Inpaint `init` in the Studio with a mask painted by the mouse on its canvas; a screenshot
    of the canvas and the result, `studio-inpaint.png` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1650) as page:
        page.goto(url)  # the app's first page, then the Studio, as a visitor would
        wait_idle(page)
        page.goto(f"{url}/studio")
        wait_idle(page)
        page.get_by_text("Inpaint", exact=True).click()
        wait_idle(page)
        prompt_box = page.get_by_label("Prompt", exact=True)
        prompt_box.fill(prompt)
        prompt_box.press("Control+Enter")  # commit the text area's value
        wait_idle(page)
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(init))
        canvas = page.locator("canvas.upper-canvas")  # Fabric.js's drawing layer
        canvas.wait_for(timeout=60_000)
        wait_idle(page)
        paint_stroke(page, canvas, [(0.55, 0.3), (0.7, 0.45), (0.8, 0.6), (0.7, 0.75)])
        page.wait_for_timeout(500)  # the drawing goes to the app on mouse up, and it reruns
        wait_idle(page)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("text=Inpaint · seed", timeout=120_000)
        wait_idle(page)
        errors = exceptions_on(page)
        if errors:
            raise AssertionError(f"studio inpaint: Streamlit exception: {errors[0][:2000]}")
        shot = out / "studio-inpaint.png"
        page.screenshot(path=str(shot))
    return shot


def capture_guided(
    url: str, out: Path, prompt: str = "a lighthouse on a cliff above the sea, oil painting"
) -> Path:
    """A sketch-guided render in the Studio: turn on "Guided generation (ControlNet)", draw a
    lighthouse and a horizon with the mouse on the sketch canvas, Generate; a screenshot of the
    sketch and the result, `guided.png` under `out`. Needs a scribble ControlNet configured
    (STUDIO_CONTROLNETS=scribble=demo for the demo model)."""
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1500) as page:
        page.goto(f"{url}/studio")
        wait_idle(page)
        prompt_box = page.get_by_label("Prompt", exact=True)
        prompt_box.fill(prompt)
        prompt_box.press("Control+Enter")
        wait_idle(page)
        expander = page.locator("summary:has-text('Guided generation (ControlNet)')")
        expander.click()
        page.get_by_text("Guide the composition with a control image").click()
        wait_idle(page)
        canvas = page.locator("canvas.upper-canvas")  # Fabric.js's drawing layer
        canvas.wait_for(timeout=60_000)
        scroll_to_top(page.locator("summary:has-text('Guided generation (ControlNet)')"))
        canvas.scroll_into_view_if_needed()  # the mouse draws only where the window shows
        paint_stroke(page, canvas, [(0.05, 0.7), (0.5, 0.68), (0.95, 0.72)])  # the horizon
        wait_idle(page)
        paint_stroke(page, canvas, [(0.3, 0.68), (0.35, 0.25), (0.45, 0.25), (0.5, 0.68)])
        page.wait_for_timeout(500)  # the drawing goes to the app on mouse up, and it reruns
        wait_idle(page)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("text=Control image (scribble", timeout=120_000)
        wait_idle(page)
        _check(page, "guided generation")
        shot = out / "guided.png"
        page.screenshot(path=str(shot))
    return shot


# How long a page may wait for the LLM: the embedded model writes a storyboard in 8 minutes on a
# busy 2-core machine.
LLM_WAIT_MS = 1_200_000
# The first step of a change request's reasoning, as the page shows it.
STEP_QUESTION = "strong:has-text('Q: What does the request mean for the picture?')"


def scroll_to_top(locator) -> None:
    """Scroll the app so that `locator` is at the top of the window, below Streamlit's header."""
    locator.evaluate("e => { e.style.scrollMarginTop = '80px'; e.scrollIntoView(); }")
    locator.page.wait_for_timeout(1000)


def _check(page, name: str) -> None:
    errors = exceptions_on(page)
    if errors:
        raise AssertionError(f"{name}: Streamlit exception: {errors[0][:2000]}")


def capture_storyboard(
    url: str, out: Path, episode: str = "S01E05", wait_ms: int = LLM_WAIT_MS
) -> Path:
    """The episode page's storyboard, made first when the episode has none (waiting up to
    `wait_ms` for it); `storyboard.png` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1100) as page:
        page.goto(f"{url}/?episode={episode}")
        wait_idle(page)
        make = page.get_by_role("button", name="Make the storyboard")
        made = page.get_by_text("Download the strip (PNG)")
        make.or_(made).first.wait_for(timeout=60_000)  # the page may still be drawing
        if make.count():
            make.click()
        try:
            page.wait_for_selector("text=Download the strip (PNG)", timeout=wait_ms)
        except Exception:
            heading = page.get_by_role("heading", name="Storyboard")
            if heading.count():
                scroll_to_top(heading)
            page.screenshot(path=str(out / "storyboard-failed.png"))
            raise
        wait_idle(page)
        _check(page, "storyboard")
        scroll_to_top(page.get_by_role("heading", name="Storyboard"))
        shot = out / "storyboard.png"
        page.screenshot(path=str(shot))
    return shot


def capture_change_request(
    url: str,
    out: Path,
    episode: str = "S01E05",
    request: str = "night instead of day",
    wait_ms: int = LLM_WAIT_MS,
) -> Path:
    """A change request on the episode page, typed and applied as a person would: the LLM's
    reasoning (waited for up to `wait_ms`) and the new image; `change-request.png` under
    `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1400) as page:
        page.goto(f"{url}/?episode={episode}")
        wait_idle(page)
        box = page.get_by_label("What should change?")
        box.fill(request)
        box.press("Enter")  # commit the text input's value
        wait_idle(page)
        page.get_by_role("button", name="Apply the change").click()
        reasoning = page.locator(f"{STEP_QUESTION} >> visible=true").first
        try:
            reasoning.wait_for(timeout=wait_ms)
        except Exception:
            page.screenshot(path=str(out / "change-request-failed.png"), full_page=True)
            raise
        wait_idle(page)
        _check(page, "change request")
        caption = f"Revised from #1: {request}"
        made = page.locator('[data-testid="stImageCaption"]', has_text=caption)
        made.wait_for(timeout=60_000)  # the new image, with what it was changed from
        scroll_to_top(page.get_by_role("heading", name="Ask for a change"))
        shot = out / "change-request.png"
        page.screenshot(path=str(shot))
    return shot


# The README's library search: a Portuguese query finds the sample's English prompts.
LIBRARY_QUERY = "detetive examinando uma pista à noite"


def search_library(page, url: str, query: str = LIBRARY_QUERY) -> None:
    """Open the Prompt Library, type `query` and search, as a person would; returns when the
    result cards are shown (the first search embeds the catalog's prompts)."""
    page.goto(f"{url}/library")
    wait_idle(page)
    page.get_by_role("textbox", name="Search the prompts").fill(query)
    page.get_by_role("button", name="Search", exact=True).click()
    page.locator('[data-testid="stHeading"]', has_text="prompts like").wait_for(timeout=120_000)
    wait_idle(page)
    _check(page, "library search")


def capture_library(url: str, out: Path, query: str = LIBRARY_QUERY) -> Path:
    """A search on the Prompt Library, its result cards in view; `library.png` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1550) as page:
        search_library(page, url, query)
        shot = out / "library.png"
        page.screenshot(path=str(shot))
    return shot


# The README's CLIP checks: zero-shot labels typed on the Gallery's CLIP tab.
CLIP_LABELS = "a detective in the fog\na chihuahua\na muffin"


def capture_clip_checks(url: str, out: Path, labels: str = CLIP_LABELS) -> Path:
    """The Gallery's CLIP checks tab with zero-shot `labels` typed and scored, as a person would
    (needs STUDIO_CLIP_MODEL); `clip-checks.png` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1100) as page:
        page.goto(f"{url}/gallery")
        wait_idle(page)
        page.get_by_role("tab", name="CLIP checks").click()
        page.get_by_label("Zero-shot labels, one a line").fill(labels)
        page.get_by_role("button", name="Score the labels").click()
        page.locator('[data-testid="stVegaLiteChart"]').wait_for(timeout=120_000)
        wait_idle(page)
        _check(page, "clip checks")
        page.wait_for_timeout(1500)  # the chart and the table draw after the run ends
        shot = out / "clip-checks.png"
        page.screenshot(path=str(shot))
    return shot


def _shoot(page, out: Path, name: str) -> Path:
    """After the page settles and shows no exception: `name`.png under `out`."""
    wait_idle(page)
    _check(page, name.replace("-", " "))
    page.wait_for_timeout(1000)  # images and charts draw after the run ends
    shot = out / f"{name}.png"
    page.screenshot(path=str(shot))
    return shot


def capture_denoising_strip(url: str, out: Path) -> Path:
    """The Studio's result with its denoising strip made at the default k, as a person would:
    Generate, open "Denoising strip", Make the strip; `denoising-strip.png` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1300) as page:
        page.goto(f"{url}/studio")
        wait_idle(page)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("summary:has-text('Denoising strip')", timeout=300_000)
        wait_idle(page)
        page.locator("summary:has-text('Denoising strip')").click()
        wait_idle(page)
        made = page.get_by_role("button", name="Make the strip")
        if made.count():  # a second run finds the strip in the catalog
            made.click()
        page.wait_for_selector("text=Download the strip", state="attached", timeout=300_000)
        wait_idle(page)
        if not page.get_by_text("Download the strip").is_visible():  # the rerun closed it
            page.locator("summary:has-text('Denoising strip')").click()
            wait_idle(page)
        scroll_to_top(page.locator("summary:has-text('Denoising strip')"))
        shot = _shoot(page, out, "denoising-strip")
    return shot


def capture_prompt_controls(url: str, out: Path, lora: str = "gaslight") -> Path:
    """The Studio with a weighted prompt, the LoRA `lora` chosen in "Prompt weights, LoRA and
    long prompts", and the image it makes; `prompt-controls.png` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1300) as page:
        page.goto(f"{url}/studio")
        wait_idle(page)
        prompt = page.get_by_label("Prompt", exact=True)
        prompt.fill(
            "Sherlock Holmes reading a letter by the fire, (Baker Street sitting room:1.3), "
            "[fog], Victorian London, warm firelight, oil painting"
        )
        prompt.press("Control+Enter")
        wait_idle(page)
        page.locator("summary:has-text('Prompt weights, LoRA and long prompts')").click()
        page.locator('[data-testid="stMultiSelect"]').first.click()
        page.keyboard.type(lora)
        page.keyboard.press("Enter")
        page.keyboard.press("Escape")
        wait_idle(page)
        page.get_by_role("button", name="Generate").click()
        page.wait_for_selector("summary:has-text('Prompt and parameters')", timeout=300_000)
        shot = _shoot(page, out, "prompt-controls")
    return shot


def capture_interpolation(url: str, out: Path, frames: int = 5) -> Path:
    """The Studio's Prompt interpolation tab with a strip of `frames` images rendered;
    `interpolation.png` under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    with chromium_page(height=1100) as page:
        page.goto(f"{url}/studio")
        wait_idle(page)
        page.get_by_role("tab", name="Prompt interpolation").click()
        wait_idle(page)
        page.get_by_role("button", name="Render the interpolation").click()
        page.wait_for_selector("text=Download GIF", timeout=600_000)
        shot = _shoot(page, out, "interpolation")
    return shot


def demo_lora_folder(folder: Path, name: str = "gaslight") -> Path:
    """A folder with one random LoRA for the demo model, for the prompt-controls screenshot."""
    from studio.core.config import load_settings
    from studio.images.backends.diffusers.demo import build_demo_lora
    from studio.images.backends.diffusers.weights import resolve_image_model

    model = resolve_image_model("demo", load_settings().cache_dir)
    build_demo_lora(model, folder / f"{name}.safetensors")
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description="Screenshots of every dashboard page.")
    parser.add_argument("--out", type=Path, default=ROOT / "assets" / "screenshots")
    parser.add_argument("--campaign", default="", help="a saved campaign's id, for its screenshot")
    parser.add_argument(
        "--only", action="append", default=[], help="only this screenshot (a name, repeatable)"
    )
    args = parser.parse_args()
    extra = {"episode": "?episode=S01E05", "character": "characters?character=Sherlock%20Holmes"}
    if args.campaign:
        extra["marketing"] = f"marketing?campaign={args.campaign}"
    pages = {**PAGES, **extra}
    del pages["library"]  # its screenshot shows a search: capture_library
    if args.only:
        pages = {name: path for name, path in pages.items() if name in args.only}
    log = Path(tempfile.gettempdir()) / "series-studio-screenshots.log"
    loras = demo_lora_folder(Path(tempfile.mkdtemp()) / "loras")
    env = {"STUDIO_LORA_DIR": str(loras), "STUDIO_CONTROLNETS": "scribble=demo"}
    with dashboard_server(env, log) as url, tempfile.TemporaryDirectory() as folder:
        shots = capture_pages(url, args.out, pages, only=True) if pages else {}
        if not args.only or "library" in args.only:
            shots["library"] = capture_library(url, args.out)
        if not args.only or "studio-inpaint" in args.only:
            init = scene_png(Path(folder) / "scene.png")
            shots["studio-inpaint"] = capture_inpaint(url, args.out, init)
        if not args.only or "guided" in args.only:
            shots["guided"] = capture_guided(url, args.out)
        if not args.only or "denoising-strip" in args.only:
            shots["denoising-strip"] = capture_denoising_strip(url, args.out)
        if not args.only or "prompt-controls" in args.only:
            shots["prompt-controls"] = capture_prompt_controls(url, args.out)
        if not args.only or "interpolation" in args.only:
            shots["interpolation"] = capture_interpolation(url, args.out)
        if not args.only or "storyboard" in args.only:
            shots["storyboard"] = capture_storyboard(url, args.out)
        if not args.only or "change-request" in args.only:
            shots["change-request"] = capture_change_request(url, args.out)
        if os.environ.get("STUDIO_CLIP_MODEL") and (not args.only or "clip-checks" in args.only):
            shots["clip-checks"] = capture_clip_checks(url, args.out)
    for name, path in shots.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
