"""The Characters page, the episode page's storyboard and change requests, driven by AppTest.

Images come from the demo model at 64x64 and 2 steps, the LLM's answers from the fake at the
llm.py boundary (it answers the look, storyboard, change-request and reality schemas).
"""

import shutil

import pytest

from studio import ui
from studio.catalog.store import Store
from tests.support.apptests import errors, run
from tests.ui.test_dashboard import app_env, open_page  # noqa: F401 - app_env is a fixture

CHARACTERS = "pages/characters.py"
EPISODES = "pages/episodes.py"
SEASONS = "pages/seasons.py"
ODD_NAME = 'Zoë "Ziggy" O\'Hara'
QUOTED = ODD_NAME.replace('"', '""')  # in a CSV field


@pytest.fixture
def catalog(app_env, sample_catalog) -> Store:  # noqa: F811
    shutil.copytree(sample_catalog, app_env)
    return Store(app_env)


@pytest.fixture
def tiny(app_env, monkeypatch, tmp_path) -> Store:  # noqa: F811
    """A two-episode series whose heroine has an accented, quoted name, beside a character the
    characters table does not have; an empty catalog."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "episodes.csv").write_text(
        "season,episode,title,summary,characters\n"
        '1,1,Pilot,"Zoë finds a map in the attic. She follows it to the harbour at dawn. A '
        'stranger in a grey coat waits by the boats. They sail out together into the fog.",'
        f'"{QUOTED}; The Stranger"\n'
        '1,2,Squall,"The boat drifts in a storm. The Stranger steers it home.",'
        f'"{QUOTED}; The Stranger"\n',
        encoding="utf-8",
    )
    (folder / "characters.csv").write_text(
        f'name,description\n"{QUOTED}","A wiry girl of twelve with a red scarf and muddy boots."\n',
        encoding="utf-8",
    )
    monkeypatch.setenv("STUDIO_SERIES", str(folder))
    return Store(app_env)


def sheet_prefix(name: str) -> str:
    return f"ch_{ui.widget_id(name)}"


@pytest.mark.slow
def test_the_cast_is_shown_most_important_first_with_portraits_and_looks(catalog):
    at = open_page(CHARACTERS)
    assert not at.error, errors(at)
    assert at.title[0].value == "Characters"
    opens = [b.key for b in at.button if b.key and b.key.startswith("ch_open_")]
    assert opens[:2] == [
        f"ch_open_{ui.widget_id(n)}" for n in ("Sherlock Holmes", "Dr. John Watson")
    ]
    assert len(opens) == 24  # one page of the 79
    holmes = catalog.character("Sherlock Holmes")
    assert any(holmes.descriptor in c.value for c in at.caption)
    # The 15 of the cast have portraits; the others say they have none.
    assert len(at.get("image")) == 15
    assert sum(c.value == "No portrait yet" for c in at.caption) == 24 - 15
    at.text_input(key="ch_search").set_value("moriarty")
    run(at)
    assert [b.key for b in at.button if b.key and b.key.startswith("ch_open_")] == [
        f"ch_open_{ui.widget_id('Professor James Moriarty')}"
    ]


@pytest.mark.slow
def test_a_character_with_an_accented_quoted_name_opens_gets_a_look_and_a_portrait(tiny):
    at = open_page(CHARACTERS)
    assert not at.error, errors(at)
    prefix = sheet_prefix(ODD_NAME)
    at.button(key=f"ch_open_{ui.widget_id(ODD_NAME)}").click()
    run(at)
    assert at.query_params["character"] in (ODD_NAME, [ODD_NAME])
    assert at.title[0].value == ODD_NAME
    assert any("No look yet" in i.value for i in at.info)
    at.button(key=f"{prefix}_write").click()
    run(at)
    assert not at.error, errors(at)
    look = tiny.character(ODD_NAME)
    assert (look.version, look.source) == (1, "llm")
    assert at.text_area(key=f"{prefix}_v1_descriptor").value == look.descriptor
    at.button(key=f"{prefix}_render").click()
    run(at)
    assert not at.error, errors(at)
    (portrait,) = tiny.images(target="character", style=ODD_NAME)
    assert look.descriptor in portrait.prompt
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert f"Portrait of {ODD_NAME} (look v1)" in captions
    # The portrait is one of the images the character appears in.
    assert at.button(key=f"send_{prefix}_in_{portrait.id}")


def test_a_link_to_a_character_not_in_the_table_shows_where_the_look_comes_from(tiny):
    at = open_page(CHARACTERS, character="the stranger")  # any case, as in a typed link
    assert not at.error, errors(at)
    assert at.title[0].value == "The Stranger"
    assert any(
        "not in the characters table; written from 2 episode summaries" in c.value
        for c in at.caption
    )
    missing = open_page(CHARACTERS, character="Nobody At All")
    assert any("No character 'Nobody At All'" in e for e in errors(missing))
    assert missing.title[0].value == "Characters"  # the cast, to pick from


def test_an_edited_descriptor_is_version_2_and_an_empty_one_saves_nothing(tiny):
    at = open_page(CHARACTERS, character=ODD_NAME)
    prefix = sheet_prefix(ODD_NAME)
    at.button(key=f"{prefix}_write").click()
    run(at)
    first = tiny.character(ODD_NAME)

    at.text_area(key=f"{prefix}_v1_descriptor").set_value("   ")
    at.button(key=f"{prefix}_save").click()
    run(at)
    assert any("Saving the look failed" in e and "is empty" in e for e in errors(at))
    assert [v.version for v in tiny.character_versions(ODD_NAME)] == [1]
    assert at.text_area(key=f"{prefix}_v1_descriptor").value == "   "  # the typed text stays

    edited = "girl of twelve, freckles, red scarf, muddy boots"
    at.text_area(key=f"{prefix}_v1_descriptor").set_value(edited)
    at.button(key=f"{prefix}_save").click()
    run(at)
    assert not at.error, errors(at)
    second = tiny.character(ODD_NAME)
    assert (second.version, second.source, second.descriptor) == (2, "edit", edited)
    assert second.portrait == first.portrait.replace(first.descriptor, edited)
    assert at.text_area(key=f"{prefix}_v2_descriptor").value == edited
    table = at.dataframe[0].value
    assert table["version"].tolist() == [2, 1]
    assert table["source"].tolist() == ["edit", "llm"]


@pytest.mark.slow
def test_an_alternate_reality_is_drawn_from_the_portrait_and_says_so(tiny):
    at = open_page(CHARACTERS, character=ODD_NAME)
    prefix = sheet_prefix(ODD_NAME)
    at.selectbox(key=f"{prefix}_reality").set_value("Other…")
    run(at)
    at.text_input(key=f"{prefix}_reality_other").set_value("a Western saloon")
    at.slider(key=f"{prefix}_strength").set_value(0.5)  # 2 steps x 0.5: one denoising step
    at.button(key=f"{prefix}_reality_generate").click()
    run(at)
    assert not at.error, errors(at)
    (portrait,) = tiny.images(target="character", style=ODD_NAME)  # made on the way
    (made,) = tiny.images(target="reality", style=ODD_NAME)
    assert (made.mode, made.strength) == ("img2img", 0.5)
    assert made.provenance["reality"]["from"] == portrait.cache_key
    assert made.provenance["reality"]["reality"] == "a Western saloon"
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert f"{ODD_NAME} in a Western saloon" in captions
    lineage = f"a Western saloon, from Portrait of {ODD_NAME} (look v1), strength 0.5"
    assert lineage in [c.value for c in at.caption]

    # A second reality lists the first among the earlier ones.
    at.selectbox(key=f"{prefix}_reality").set_value("anime")
    at.button(key=f"{prefix}_reality_generate").click()
    run(at)
    assert len(tiny.images(target="reality", style=ODD_NAME)) == 2
    assert any(m.value == "**Earlier realities (1)**" for m in at.markdown)


@pytest.mark.slow
def test_the_storyboard_button_makes_the_panels_and_the_downloads(catalog):
    at = open_page(EPISODES, episode="S01E03")
    downloads = ["Download the strip (PNG)", "Download the panels (zip)"]
    assert not [d for d in at.get("download_button") if d.label in downloads]
    at.button(key="ep_S01E03_board_make").click()
    run(at)
    assert not at.error, errors(at)
    panels = catalog.images(target="storyboard", season=1, episode=3)
    assert len(panels) == 4  # the summary's 4 sentences
    captions = [caption for image in at.get("image") for caption in image.captions]
    titles = [f"{n}. Moment {n} of A Case of Identity" for n in range(1, 5)]
    assert [c for c in captions if c in titles] == titles  # in story order
    assert [d.label for d in at.get("download_button") if d.label in downloads] == downloads
    assert at.button(key="ep_S01E03_board_make").label == "Make it again"


@pytest.mark.slow
def test_a_change_request_makes_a_new_image_with_its_reasoning_and_keeps_the_old(catalog):
    at = open_page(EPISODES, episode="S01E02")
    (old,) = catalog.images(target="episode", season=1, episode=2)
    at.text_input(key="ep_S01E02_change_request").set_value("night instead of day")
    at.button(key="ep_S01E02_change_apply").click()
    run(at)
    assert not at.error, errors(at)
    images = catalog.images(target="episode", season=1, episode=2)
    assert [i.cache_key for i in images][0] == old.cache_key  # the old image stays
    (new,) = images[1:]
    revision = new.provenance["revision"]
    assert (revision["from"], revision["request"]) == (old.cache_key, "night instead of day")
    assert new.prompt != old.prompt and new.seed == old.seed
    steps = [m.value for m in at.markdown if m.value.startswith("**Q:")]
    assert steps[0].startswith("**Q: What does the request mean for the picture?**")
    assert "The user wants: night instead of day" in steps[0]
    assert any(c.value == "Revised from #1: night instead of day" for c in at.caption)

    # The old prompt is one click away, in the Regenerate controls.
    at.text_area(key="ep_S01E02_prompt").set_value("something else entirely")
    at.button(key=f"back_ep_{new.id}").click()
    run(at)
    assert at.text_area(key="ep_S01E02_prompt").value == old.prompt
    assert len(catalog.images(target="episode", season=1, episode=2)) == 2


def test_an_empty_change_request_says_what_to_type_and_makes_nothing(catalog):
    at = open_page(EPISODES, episode="S01E02")
    at.text_input(key="ep_S01E02_change_request").set_value("  ")
    at.button(key="ep_S01E02_change_apply").click()
    run(at)
    assert any("Applying the change failed" in e and "is empty" in e for e in errors(at))
    assert len(catalog.images(target="episode", season=1, episode=2)) == 1


@pytest.mark.slow
def test_a_change_request_on_the_seasons_page_keeps_the_self_ask_trace(catalog):
    at = open_page(SEASONS)
    at.selectbox(key="se_style").set_value("anime")
    run(at)
    at.text_input(key="se_1_anime_change_request").set_value("less gloomy")
    at.button(key="se_1_anime_change_apply").click()
    run(at)
    assert not at.error, errors(at)
    old, new = catalog.images(target="season", season=1, style="anime")
    assert new.provenance["revision"]["from"] == old.cache_key
    questions = [m.value for m in at.markdown if m.value.startswith("**Q:")]
    change = [q for q in questions if any(f"**Q: {r}**" in q for r in ui.REVISION_QUESTIONS)]
    assert len(questions) - len(change) == 4  # the season's self-ask is still there
    assert change  # and the change's steps are shown with it
    assert any(c.value == "Revised from #1: less gloomy" for c in at.caption)

    # Back to the old prompt from the style's card: the style and its controls are loaded.
    at.text_area(key="se_1_anime_prompt").set_value("something else entirely")
    at.selectbox(key="se_style").set_value("oil_painting")
    run(at)
    at.button(key=f"back_se_anime_{new.id}").click()
    run(at)
    assert at.selectbox(key="se_style").value == "anime"
    assert at.text_area(key="se_1_anime_prompt").value == old.prompt


@pytest.mark.slow
def test_with_an_ip_adapter_regenerate_can_condition_on_a_portrait(
    catalog, monkeypatch, shared_cache
):
    from studio.images.backends.diffusers.demo import build_demo_ip_adapter

    at = open_page(EPISODES, episode="S01E02")
    assert not [c for c in at.checkbox if c.key == "ipa_ep_S01E02"]  # no adapter, no box
    monkeypatch.setenv("STUDIO_IP_ADAPTER", str(build_demo_ip_adapter(shared_cache / "ipa")))
    at = open_page(EPISODES, episode="S01E02")
    at.checkbox(key="ipa_ep_S01E02").check()
    run(at)
    at.selectbox(key="ipa_ep_S01E02_name").set_value("Sherlock Holmes")
    at.slider(key="ipa_ep_S01E02_scale").set_value(0.8)
    run(at)
    at.button(key="ep_S01E02_generate").click()
    run(at)
    assert not at.error, errors(at)
    made = catalog.images(target="episode", season=1, episode=2)[-1]
    (portrait,) = catalog.images(target="character", style="Sherlock Holmes")
    assert made.reference_scale == 0.8 and made.reference_image is not None
    assert catalog.input_path(made.reference_image).is_file()
    assert made.reference_image == ui.current_studio().reference_of("Sherlock Holmes")
    assert portrait.cache_key != made.cache_key
