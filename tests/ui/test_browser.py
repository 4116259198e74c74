"""The real dashboard in a real browser: `streamlit run dashboard.py` driven by headless Chromium.

Opens every page, generates an image in the Studio, reads a catalog PNG dropped on the Gallery
and sends it to the Studio, searches the Prompt Library in Portuguese and sends a found prompt to
the Studio, inpaints with a mask painted by the mouse on the Studio's canvas, renders from a
sketch drawn by the mouse (ControlNet), makes an episode's
storyboard and asks for a change to its image; fails on any Streamlit
exception element. Screenshots go to
`test-artifacts/browser/` (or $STUDIO_TEST_ARTIFACTS). CI sets STUDIO_REQUIRE_BROWSER=1 so a
missing Chromium fails instead of skipping.
"""

import os
import shutil
from pathlib import Path

import pytest

from studio.catalog.store import Store
from tests.support.browser import (
    CHROMIUM,
    ROOT,
    capture_change_request,
    capture_guided,
    capture_inpaint,
    capture_pages,
    capture_storyboard,
    chromium_page,
    click_for,
    dashboard_server,
    exceptions_on,
    scene_png,
    search_library,
    wait_idle,
)
from tests.support.catalogs import SMALL_ENV
from tests.support.fakes import FakeOpenAIServer

pytestmark = pytest.mark.browser


def _browser_missing() -> str:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements.txt)"
    return ""


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("STUDIO_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def app_env(request, tmp_path_factory, shared_cache):
    """The dashboard's environment: the sample catalog and a fake LLM server; and the catalog."""
    missing = _browser_missing()
    if missing:
        if os.environ.get("STUDIO_REQUIRE_BROWSER") == "1":
            pytest.fail(f"The browser test needs Chromium and Playwright: {missing}.")
        pytest.skip(missing)
    data = tmp_path_factory.mktemp("browser") / "data"
    shutil.copytree(request.getfixturevalue("sample_catalog"), data)  # made after the skip
    with FakeOpenAIServer() as llm_server:
        env = {
            **SMALL_ENV,
            "STUDIO_DATA_DIR": str(data),
            "STUDIO_CACHE_DIR": str(shared_cache),
            "HF_HUB_OFFLINE": "1",
            # The app's LLM: an OpenAI-compatible server on localhost with the fake's answers.
            "OPENAI_BASE_URL": llm_server.url,
            "OPENAI_API_KEY": "test-key",
            "STUDIO_LLM_MODEL": "fake-llm",
            "STUDIO_CONTROLNETS": "scribble=demo",  # the sketch-guided render's
        }
        yield env, data


@pytest.fixture(scope="module")
def server(app_env, artifacts):
    env, data = app_env
    with dashboard_server(env, artifacts / "streamlit.log") as url:
        yield url, data


@pytest.mark.parametrize("path", ["studio", "marketing?campaign=nope"])
def test_a_deep_link_opened_first_after_a_start_goes_through_the_dashboard(
    app_env, artifacts, path
):
    """With a `pages/` folder Streamlit runs a page on its own until a session calls st.navigation:
    the first request after a start must still get dashboard.py's navigation and sidebar."""
    env, _ = app_env
    name = path.split("?")[0]
    log = artifacts / f"streamlit-first-{name}.log"
    with dashboard_server(env, log) as url, chromium_page() as page:
        page.goto(f"{url}/{path}")  # the server's very first session
        wait_idle(page)
        page.screenshot(path=str(artifacts / f"first-request-{name}.png"))
        assert not exceptions_on(page)
        assert not page.get_by_text("Page not found").count()  # no popup on the way
        assert page.locator("h1").first.inner_text().startswith(name.title())
        nav = page.locator('[data-testid="stSidebarNav"]')
        links = [text.splitlines()[-1] for text in nav.locator("a").all_inner_texts()]  # no icon
        assert links == [
            "Episodes",
            "Seasons",
            "Characters",
            "Studio",
            "Gallery",
            "Prompt Library",
            "Marketing Assistant",
            "Batch jobs",
        ]
        sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
        assert "Catalog:" in sidebar and "Image model:" in sidebar  # ui.sidebar()
        assert page.url == f"{url}/{path}"
        if "campaign=nope" in path:  # the query reached the page
            assert page.get_by_text("No saved campaign nope").is_visible()


def test_every_page_opens_without_an_exception(server, artifacts):
    url, _ = server
    extra = {"episode": "?episode=S01E05", "character": "characters?character=Irene%20Adler"}
    shots = capture_pages(url, artifacts, extra)
    assert all(path.stat().st_size > 10_000 for path in shots.values())


def test_generate_in_the_studio_then_reproduce_a_png_from_the_gallery(server, artifacts):
    url, data = server
    with chromium_page() as page:
        page.goto(f"{url}/studio")
        wait_idle(page)
        prompt = page.get_by_label("Prompt", exact=True)
        prompt.fill("a hansom cab in the fog, gaslight")
        prompt.press("Control+Enter")  # commit the text area's value
        prompt.blur()  # a focused text area can swallow the next click (see click_for)
        wait_idle(page)
        click_for(
            page, page.get_by_role("button", name="Generate"), "text=seed 42 · DPM++ 2M Karras"
        )
        wait_idle(page)
        page.screenshot(path=str(artifacts / "studio-generated.png"))
        assert not exceptions_on(page)
        rows = Store(data).images(target="studio")
        assert [r["prompt"] for r in rows] == ["a hansom cab in the fog, gaslight"]

        # Drop a catalog PNG on the Gallery: its parameters are read and sent to the Studio.
        dropped = Store(data).images(target="episode", season=1, episode=3)[0]
        page.goto(f"{url}/gallery")
        wait_idle(page)
        page.get_by_role("tab", name="PNG Info").click()
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
            str(data / dropped["path"])
        )
        page.wait_for_selector("text=Provenance (series studio)", timeout=60_000)
        wait_idle(page)
        page.screenshot(path=str(artifacts / "gallery-png-info.png"))
        assert not exceptions_on(page)
        send = page.get_by_role("button", name="Send to Studio", exact=True)
        send.last.click()  # the dropped PNG's
        page.wait_for_selector("h1:has-text('Studio')", timeout=60_000)
        wait_idle(page)
        assert page.get_by_label("Prompt", exact=True).input_value() == dropped["prompt"]
        page.screenshot(path=str(artifacts / "studio-from-png.png"))
        assert not exceptions_on(page)


def test_search_the_prompt_library_and_send_a_prompt_to_the_studio(server, artifacts):
    url, data = server
    with chromium_page(height=1300) as page:
        search_library(page, url, "detetive examinando uma pista")
        page.screenshot(path=str(artifacts / "library-search.png"))
        cards = page.get_by_role("button", name="Send to Studio", exact=True)
        assert cards.count() >= 6
        first = page.locator('[data-testid="stText"]').first.inner_text()
        assert "detective examining a clue" in first  # the English prompts, from Portuguese
        cards.first.click()
        page.wait_for_selector("h1:has-text('Studio')", timeout=60_000)
        wait_idle(page)
        page.screenshot(path=str(artifacts / "studio-from-library.png"))
        assert not exceptions_on(page)
        prompt = page.get_by_label("Prompt", exact=True).input_value()
        assert " ".join(prompt.split()) == " ".join(first.split())
        assert prompt in {row.prompt for row in Store(data).images()}


def test_a_campaign_in_the_marketing_assistant(server, artifacts):
    url, data = server
    with chromium_page(height=1400) as page:
        page.goto(f"{url}/marketing")
        wait_idle(page)
        page.get_by_role("button", name="Start the campaign").click()
        page.wait_for_timeout(1000)
        wait_idle(page)
        page.screenshot(path=str(artifacts / "marketing-concept.png"))
        page.wait_for_selector("text=Who is behind A Scandal in Bohemia?", timeout=120_000)
        wait_idle(page)
        page.get_by_role("button", name="Run all remaining steps").click()
        page.wait_for_selector("text=Download the campaign", timeout=180_000)
        wait_idle(page)
        page.screenshot(path=str(artifacts / "marketing-campaign.png"), full_page=True)
        assert not exceptions_on(page)
    (saved,) = Store(data).campaigns()
    steps = Store(data).campaign(saved["id"])["steps"]
    assert steps["review"]["ok"] and [p["platform"] for p in steps["posts"]] == ["Instagram", "X"]


def test_inpaint_with_a_mask_painted_on_the_canvas(server, artifacts, tmp_path):
    url, data = server
    before = {row.id for row in Store(data).images(mode="inpaint")}
    shot = capture_inpaint(url, artifacts, scene_png(tmp_path / "scene.png", size=64))
    assert shot.stat().st_size > 10_000
    (made,) = [row for row in Store(data).images(mode="inpaint") if row.id not in before]
    assert (made.width, made.height, made.strength) == (64, 64, 1.0)
    mask = Store(data).input_image(made.mask_image)
    assert mask.size == (64, 64)
    left, top, right, bottom = mask.getbbox()  # the stroke, not the whole image
    assert 0 < left < right < 64 and 0 < top < bottom < 64


def test_a_sketch_drawn_with_the_mouse_guides_a_render(server, artifacts):
    url, data = server
    shot = capture_guided(url, artifacts)
    assert shot.stat().st_size > 10_000
    (made,) = [row for row in Store(data).images(target="studio") if row.control_image]
    assert (made.control_type, made.control_scale) == ("scribble", 1.0)
    sketch = Store(data).input_image(made.control_image).convert("L")
    assert sketch.size == (made.width, made.height)
    left, top, right, bottom = sketch.getbbox()  # white strokes on black, where drawn
    assert right - left > made.width // 2 and bottom - top > made.height // 4


def test_a_storyboard_on_the_episode_page(server, artifacts):
    url, data = server
    shot = capture_storyboard(url, artifacts, "S01E04", wait_ms=120_000)
    assert shot.stat().st_size > 10_000
    panels = Store(data).images(target="storyboard", season=1, episode=4)
    assert [p.image_index for p in panels] == [0, 1, 2, 3]


def test_a_change_request_typed_and_applied_on_the_episode_page(server, artifacts):
    """Type the request, click: the LLM's reasoning and the new image show, the old one stays."""
    url, data = server
    (old,) = Store(data).images(target="episode", season=1, episode=5)
    shot = capture_change_request(
        url, artifacts, "S01E05", "Watson in the foreground", wait_ms=120_000
    )
    assert shot.stat().st_size > 10_000
    images = Store(data).images(target="episode", season=1, episode=5)
    assert [i.cache_key for i in images][:1] == [old.cache_key] and len(images) == 2
    assert images[1].provenance["revision"] == {
        "from": old.cache_key,
        "request": "Watson in the foreground",
        "trace": images[1].provenance["revision"]["trace"],
    }
    assert len(images[1].provenance["revision"]["trace"]) == 3


def test_click_for_clicks_again_only_when_nothing_came():
    """The helper behind the Studio's Generate: a dropped first click is repeated once; a button
    that works the first time is clicked once."""
    if _browser_missing():
        pytest.skip(_browser_missing())
    page_html = """<div data-testid="stApp"><h1>Test</h1>
        <button id="drop" onclick="this.dataset.n = (+this.dataset.n || 0) + 1;
            if (this.dataset.n > 1) document.body.append('made by drop')">drop</button>
        <button id="once" onclick="window.clicks = (window.clicks || 0) + 1;
            document.body.append('made by once')">once</button></div>"""
    with chromium_page() as page:
        page.set_content(page_html)
        click_for(page, page.locator("#drop"), "text=made by drop", timeout_ms=4_000)
        assert page.locator("#drop").get_attribute("data-n") == "2"
        click_for(page, page.locator("#once"), "text=made by once", timeout_ms=4_000)
        assert page.evaluate("window.clicks") == 1
        with pytest.raises(Exception, match="Timeout"):  # never comes: fails after two clicks
            click_for(page, page.locator("#once"), "text=never", timeout_ms=2_000)
        assert page.evaluate("window.clicks") == 3
