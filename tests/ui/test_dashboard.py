"""The dashboard's pages driven by Streamlit's AppTest, on the sample catalog and on an empty one.

Images come from the demo model at 64x64 and 2 steps, prompts from the fake LLM at the llm.py
boundary; each test works on its own copy of the catalog.
"""

import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from studio.catalog.store import Store
from studio.llm import client as llm_client
from tests.support.catalogs import SMALL_ENV
from tests.support.fakes import FakeBackend

APP = str(Path(__file__).resolve().parents[2] / "dashboard.py")
PAGES = [
    "pages/episodes.py",
    "pages/seasons.py",
    "pages/studio.py",
    "pages/gallery.py",
    "pages/marketing.py",
    "pages/characters.py",
]


@pytest.fixture
def app_env(monkeypatch, tmp_path):
    for name, value in SMALL_ENV.items():
        monkeypatch.setenv(name, value)
    backend = FakeBackend(by_seed=True)
    monkeypatch.setattr(llm_client, "make_backend", lambda settings, *_: backend)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path / "data"
    st.cache_resource.clear()


@pytest.fixture
def catalog(app_env, sample_catalog) -> Store:
    """The sample catalog copied to this test's data folder; a Store to check it with."""
    shutil.copytree(sample_catalog, app_env)
    return Store(app_env)


def open_page(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params.update(query)
    at.run()
    if page != PAGES[0]:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_the_sample_catalog(catalog, page):
    at = open_page(page)
    assert not at.error, [e.value for e in at.error]
    assert any("demo" in w.value for w in at.warning)  # the placeholder banner


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_on_an_empty_catalog(app_env, page):
    at = open_page(page)
    assert not at.error, [e.value for e in at.error]
    assert at.info or at.title  # an empty state is explained, not blank


def test_episodes_grid_has_a_card_per_episode_of_the_season(catalog):
    at = open_page(PAGES[0])
    opens = [b for b in at.button if b.key and b.key.startswith("ep_open_")]
    assert [b.key for b in opens] == [f"ep_open_S01E{n:02d}" for n in range(1, 13)]
    at.selectbox(key="ep_season").set_value(2).run()
    assert len([b for b in at.button if b.key and b.key.startswith("ep_open_S02")]) == 12
    at.text_input(key="ep_search").set_value("Silver Blaze").run()
    assert [b.key for b in at.button if b.key and b.key.startswith("ep_open_")] == [
        "ep_open_S02E01"
    ]


@pytest.mark.slow
def test_open_an_episode_then_regenerate_adds_a_catalog_row(catalog):
    at = open_page(PAGES[0])
    at.button(key="ep_open_S01E02").click().run()
    assert at.query_params["episode"] in ("S01E02", ["S01E02"])
    assert "The Red-Headed League" in at.title[0].value
    before = catalog.images(target="episode", season=1, episode=2)
    assert len(before) == 1
    at.slider(key="ep_S01E02_cfg").set_value(9.5)
    at.number_input(key="ep_S01E02_seed").set_value(7)
    at.button(key="ep_S01E02_generate").click().run()
    assert not at.exception and not at.error
    after = catalog.images(target="episode", season=1, episode=2)
    assert len(after) == 2
    new = after[-1]
    assert (new["cfg"], new["seed"], new["image_index"]) == (9.5, 7, 1)
    assert new["prompt"] == before[0]["prompt"]
    # The same settings again come from the catalog: no new row.
    at.button(key="ep_S01E02_generate").click().run()
    assert len(catalog.images(target="episode", season=1, episode=2)) == 2
    # The new image can be made the cover, which the season's grid then shows.
    at.button(key=f"ep_cover_{new['id']}").click().run()
    assert catalog.cover_keys(1) == {2: new["cache_key"]}
    assert catalog.episode_covers(1)[2]["id"] == new["id"]


@pytest.mark.slow
@pytest.mark.compile
def test_an_image_card_says_which_path_of_the_fast_path_made_it(catalog, monkeypatch, tmp_path):
    """With the fast path on, the first image of a shape is rendered eagerly while its compile
    runs in the background, and its card says so."""
    monkeypatch.setenv("STUDIO_FAST_PATH", "on")
    monkeypatch.setenv("STUDIO_COMPILE_SCOPE", "regional")  # the quickest compile on 2 cores
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    at = open_page(PAGES[0], episode="S01E02")
    at.number_input(key="ep_S01E02_seed").set_value(11)
    at.button(key="ep_S01E02_generate").click().run()
    assert not at.exception and not at.error
    new = catalog.images(target="episode", season=1, episode=2)[-1]
    assert new.provenance["render_path"] == "eager"
    assert any("Rendered eagerly" in c.value for c in at.caption)


def test_rewrite_the_prompt_asks_the_llm_again_and_fills_the_prompt(catalog):
    at = open_page(PAGES[0], episode="S01E01")
    first = at.text_area(key="ep_S01E01_prompt").value
    at.button(key="ep_S01E01_rewrite").click().run()
    assert not at.exception and not at.error
    rewritten = at.text_area(key="ep_S01E01_prompt").value
    assert rewritten != first and "take 1235" in rewritten  # the next sampling seed
    assert len(catalog.prompts(target="episode", season=1, episode=1)) == 2


def test_unknown_episode_in_the_link_is_an_error_not_an_exception(catalog):
    at = open_page(PAGES[0], episode="S09E99")
    assert any("No episode S09E99" in e.value for e in at.error)


@pytest.mark.slow
def test_seasons_page_shows_five_styles_the_trace_and_regenerates_a_style(catalog):
    at = open_page(PAGES[1])
    styles = [m.value for m in at.markdown if m.value.startswith("**") and "Q:" not in m.value]
    assert styles[:5] == [
        "**Oil painting**",
        "**Film noir still**",
        "**Watercolour illustration**",
        "**Art deco poster**",
        "**Anime key visual**",
    ]
    questions = [m.value for m in at.markdown if m.value.startswith("**Q:")]
    assert len(questions) == 4
    at.selectbox(key="se_style").set_value("film_noir").run()
    at.number_input(key="se_1_film_noir_seed").set_value(11)
    at.button(key="se_1_film_noir_generate").click().run()
    assert not at.exception and not at.error
    rows = catalog.images(target="season", season=1, style="film_noir")
    assert len(rows) == 2 and rows[-1]["seed"] == 11


@pytest.mark.slow
def test_studio_generates_an_image_into_the_catalog(app_env):
    at = open_page(PAGES[2])
    at.text_area(key="st_prompt").set_value("a violin on a windowsill")
    at.selectbox(key="st_sampler").set_value("Euler a")
    at.button(key="st_generate").click().run()
    assert not at.exception and not at.error
    rows = Store(app_env).images(target="studio")
    assert [(r["prompt"], r["sampler"], r["width"]) for r in rows] == [
        ("a violin on a windowsill", "Euler a", 64)
    ]


@pytest.mark.slow
def test_studio_grid_has_a_cell_per_value_pair(app_env):
    at = open_page(PAGES[2])
    at.selectbox(key="st_grid_x").set_value("CFG scale").run()
    at.text_input(key="st_grid_x_CFG scale").set_value("3, 7, 12")
    at.selectbox(key="st_grid_y").set_value("Seed").run()
    at.text_input(key="st_grid_y_Seed").set_value("1, 2")
    at.button(key="st_grid_render").click().run()
    assert not at.exception and not at.error
    assert at.session_state["st_grid_cells"] == 6
    sheet = Image.open(io.BytesIO(at.session_state["st_grid_png"]))
    assert sheet.width > 3 * 64 and sheet.height > 2 * 64
    rows = Store(app_env).images(target="studio")
    assert sorted((r["cfg"], r["seed"]) for r in rows) == [
        (3.0, 1),
        (3.0, 2),
        (7.0, 1),
        (7.0, 2),
        (12.0, 1),
        (12.0, 2),
    ]


def test_studio_grid_with_bad_values_says_what_to_write(app_env):
    at = open_page(PAGES[2])
    at.text_input(key="st_grid_x_CFG scale").set_value("3, lots")
    at.button(key="st_grid_render").click().run()
    assert not at.exception
    assert any("'lots' is not a valid CFG scale value" in e.value for e in at.error)


@pytest.mark.slow
def test_gallery_filters_and_send_to_studio(catalog):
    total = len(catalog.images())
    at = open_page(PAGES[3])
    assert any(f"{total} of {total} images" in c.value for c in at.caption)
    at.radio(key="ga_kind").set_value("real").run()
    assert any(f"0 of {total} images" in c.value for c in at.caption)
    at.radio(key="ga_kind").set_value("all").run()
    at.multiselect(key="ga_target").set_value(["season"]).run()
    assert any(f"10 of {total} images" in c.value for c in at.caption)
    newest = catalog.images(target="season")[-1]
    at.button(key=f"send_ga_{newest['id']}").click().run()
    assert not at.exception
    assert at.text_area(key="st_prompt").value == newest["prompt"]
    assert at.number_input(key="st_seed").value == newest["seed"]


def test_a_model_that_cannot_load_is_an_error_with_the_fix(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_IMAGE_MODEL", str(tmp_path / "missing.safetensors"))
    at = open_page(PAGES[2])
    at.button(key="st_generate").click().run()
    assert not at.exception
    assert any("failed" in e.value for e in at.error)


@pytest.mark.slow
def test_marketing_page_produces_a_campaign_step_by_step(catalog):
    at = open_page(PAGES[4])
    at.selectbox(key="mk_episode").set_value(
        next(o for o in at.selectbox(key="mk_episode").options if o.startswith("S01E03"))
    )
    at.multiselect(key="mk_platforms").set_value(["X", "TikTok"])
    at.selectbox(key="mk_language").set_value("es")
    at.button(key="mk_start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (saved,) = catalog.campaigns()
    campaign = catalog.campaign(saved["id"])
    assert list(campaign["steps"]) == ["concept"]
    assert campaign["brief"]["episode"] == 3 and campaign["brief"]["language"] == "es"
    assert any("Who is behind A Case of Identity?" in m.value for m in at.markdown)

    # An edit of the concept is saved; the next steps then use it.
    edit = next(t for t in at.text_area if t.key.startswith("mk_json_concept"))
    concept = json.loads(edit.value)
    edit.set_value(json.dumps({**concept, "hook": "¿Quién engañó a Mary?"}))
    at.button(key="mk_save_concept").click().run()
    assert catalog.campaign(saved["id"])["steps"]["concept"]["hook"] == "¿Quién engañó a Mary?"

    at.button(key="mk_run_all").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    steps = catalog.campaign(saved["id"])["steps"]
    assert list(steps) == ["concept", "posts", "image_prompts", "images", "review"]
    assert [p["platform"] for p in steps["posts"]] == ["X", "TikTok"]
    assert all(p["text"].startswith("¿Quién engañó a Mary?") for p in steps["posts"])
    assert steps["review"]["ok"]
    assert len(catalog.images(target="campaign")) == 2
    assert any(s.value.startswith("All 2 posts") for s in at.success)


def test_marketing_page_with_no_platform_says_what_to_fix(catalog):
    at = open_page(PAGES[4])
    at.multiselect(key="mk_platforms").set_value([])
    at.button(key="mk_start").click().run()
    assert not at.exception
    assert any("Choose platforms" in e.value for e in at.error)
    assert catalog.campaigns() == []


@pytest.mark.slow
def test_a_link_to_a_saved_campaign_opens_it(catalog):
    at = open_page(PAGES[4])
    at.button(key="mk_start").click().run()
    (saved,) = catalog.campaigns()
    linked = open_page(PAGES[4], campaign=saved["id"])
    assert any(h.value == saved["name"] for h in linked.subheader)
    assert any(
        "No saved campaign nope" in e.value for e in open_page(PAGES[4], campaign="nope").error
    )


def a1111_png(parameters: str) -> bytes:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", parameters)
    buffer = io.BytesIO()
    Image.new("RGB", (32, 48), "navy").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


A1111_OUT_OF_RANGE = (
    "a castle on a hill at dawn\nNegative prompt: blurry\n"
    "Steps: 200, Sampler: Euler a, CFG scale: 35, Seed: -1, Size: 1000x1500, Model: sdxl_base"
)


def test_an_a1111_png_with_values_past_our_ranges_opens_the_studio_clamped(app_env):
    at = open_page(PAGES[3])
    at.file_uploader(key="ga_upload").set_value(
        ("castle.png", a1111_png(A1111_OUT_OF_RANGE), "image/png")
    ).run()
    assert not at.exception
    warnings = " ".join(w.value for w in at.warning)
    assert "Steps 200 -> 150, our maximum" in warnings and "CFG scale 35 -> 30" in warnings
    at.button(key="ga_send_upload").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.text_area(key="st_prompt").value == "a castle on a hill at dawn"
    assert at.slider(key="st_steps").value == 150 and at.slider(key="st_cfg").value == 30.0
    assert (at.number_input(key="st_width").value, at.number_input(key="st_height").value) == (
        1000,
        1496,
    )
    assert at.checkbox(key="st_random").value  # A1111's Seed: -1 is "random", not 4294967295
    assert any("Steps 200 -> 150" in i.value for i in at.info)
    # Leaving and coming back keeps the page usable and the imported prompt.
    at.switch_page(PAGES[3]).run()
    at.switch_page(PAGES[2]).run()
    assert not at.exception
    assert at.text_area(key="st_prompt").value == "a castle on a hill at dawn"


def test_values_past_the_widgets_ranges_in_a_session_are_clamped_not_fatal(app_env):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["st_cfg"] = 99.0
    at.session_state["st_steps"] = float("nan")
    at.session_state["st_width"] = 5000
    at.run()
    at.switch_page(PAGES[2]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.slider(key="st_cfg").value == 30.0
    assert at.number_input(key="st_width").value == 2048
    assert any("our maximum" in i.value for i in at.info)


def test_the_grid_refuses_nan_cfg_and_leaves_nothing_behind(app_env):
    at = open_page(PAGES[2])
    at.text_input(key="st_grid_x_CFG scale").set_value("3, nan")
    at.button(key="st_grid_render").click().run()
    assert not at.exception
    assert any("'nan' on the CFG scale axis" in e.value for e in at.error)
    assert Store(app_env).images() == []
    assert not list((app_env / "images").rglob("*.png"))


def test_png_info_on_a_file_that_is_not_an_image_says_so_plainly(app_env):
    at = open_page(PAGES[3])
    at.file_uploader(key="ga_upload").set_value(("notes.png", b"not a png at all", "image/png"))
    at.run()
    assert not at.exception
    (error,) = at.error
    assert "not an image the studio can read" in error.value
    assert "BytesIO" not in error.value and "restart" not in error.value


def test_a_damaged_catalog_is_named_with_the_fix(catalog):
    path = catalog.catalog_path
    catalog.close()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    at = open_page(PAGES[3])
    assert any(str(path) in e.value and "dataprep.py --recover" in e.value for e in at.error), [
        e.value for e in at.error
    ]


def test_the_dashboard_listens_on_this_machine_only():
    result = subprocess.run(
        [sys.executable, "-m", "streamlit", "config", "show"],
        cwd=Path(APP).parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert '\naddress = "localhost"\n' in result.stdout
