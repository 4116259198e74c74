"""The Studio's prompt controls in AppTest: weights, long prompts, LoRAs chosen from the folder,
and the prompt interpolation tab with its strip and downloads."""

from __future__ import annotations

import pytest

from studio.catalog.store import Store
from studio.images.backends.diffusers.demo import build_demo_lora
from studio.images.backends.diffusers.weights import resolve_image_model
from tests.support.markdown import shown
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

STUDIO = "pages/studio.py"


@pytest.fixture
def loras(app_env, monkeypatch, shared_cache):  # noqa: F811
    folder = app_env.parent / "loras"
    build_demo_lora(resolve_image_model("demo", shared_cache), folder / "holmes.safetensors")
    monkeypatch.setenv("STUDIO_LORA_DIR", str(folder))
    return folder


def run_ok(at):
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


@pytest.mark.slow
def test_a_chosen_lora_and_weights_make_an_image_with_its_hash(app_env, loras):  # noqa: F811
    at = open_page(STUDIO)
    at.text_area(key="st_prompt").set_value("a (detective:1.3) on a [foggy] street")
    at.multiselect(key="st_loras").set_value(["holmes"])
    run_ok(at)
    at.slider(key="st_lora_holmes").set_value(0.5)
    run_ok(at)
    assert any("tokens" in c.value for c in at.caption)
    at.button(key="st_generate").click()
    run_ok(at)
    [row] = Store(app_env).images(target="studio")
    assert row.prompt == "a (detective:1.3) on a [foggy] street <lora:holmes:0.5>"
    assert row.provenance["loras"][0]["name"] == "holmes"


@pytest.mark.slow
def test_a_long_prompt_warns_until_long_prompts_are_on(app_env):  # noqa: F811
    at = open_page(STUDIO)
    at.text_area(key="st_prompt").set_value(", ".join(f"detail {n}" for n in range(40)))
    run_ok(at)
    assert any("the prompt is cut" in w.value for w in at.warning)
    at.checkbox(key="st_long_prompt").check()
    run_ok(at)
    assert not any("the prompt is cut" in w.value for w in at.warning)
    assert any("chunks of 77" in c.value for c in at.caption)
    at.button(key="st_generate").click()
    run_ok(at)
    [row] = Store(app_env).images(target="studio")
    assert row.long_prompt


RENDER_BUTTONS = ("st_generate", "st_grid_render", "st_morph_render")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("prompt", "message"),
    [("a (unclosed street", "is never closed"), ("a (detective:abc) street", "has to be a number")],
)
def test_a_prompt_syntax_error_shows_once_and_nothing_renders_it(app_env, prompt, message):  # noqa: F811
    at = open_page(STUDIO)
    at.text_area(key="st_prompt").set_value(prompt)
    at.run()
    assert not at.exception
    [error] = at.error  # once, under the prompt: no render button can repeat it
    assert message in error.value and "write \\(" in shown(error.value)  # as written
    assert all(at.button(key=key).disabled for key in RENDER_BUTTONS)
    at.text_area(key="st_prompt").set_value("a (detective:1.2) street")
    run_ok(at)
    assert not any(at.button(key=key).disabled for key in RENDER_BUTTONS)


@pytest.mark.slow
def test_the_interpolation_tab_renders_a_strip_with_downloads(app_env):  # noqa: F811
    at = open_page(STUDIO)
    at.slider(key="st_morph_frames").set_value(3)
    run_ok(at)
    at.button(key="st_morph_render").click()
    run_ok(at)
    rows = Store(app_env).images(target="studio")
    assert sorted(r.blend or 0 for r in rows) == [0, 0, 0.5]
    downloads = [b for b in at.get("download_button")]
    assert len(downloads) >= 3
