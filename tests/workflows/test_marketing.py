"""The campaign chain against the fake LLM and the demo model at a small size."""

import csv
import io
import json
import sqlite3
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import load_series
from studio.core.errors import CampaignError, LLMError, RenderError
from studio.workflows.marketing.campaign import (
    PLATFORMS,
    STEPS,
    Brief,
    aspect_size,
    check_post,
    tidy_cut,
)
from studio.workflows.marketing.chain import Chain
from studio.workflows.marketing.export import export_zip, missing_images, review
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def series():
    return load_series(SAMPLE_SERIES)[0]


def make_chain(tmp_path, shared_cache, series, backend=None):
    backend = backend or FakeBackend()
    studio = small_studio(tmp_path, shared_cache, chat=backend)
    return Chain(studio.llm, studio.images, series, studio.settings), backend, studio.store


def kinds(backend: FakeBackend, start: int = 0) -> list[str]:
    """Which step each LLM request was for, by the template's first words."""
    names = {
        "You are the social-media lead": "concept",
        "You write social-media posts": "posts",
        "You shorten social-media posts": "shorten",
        "You are an art director who writes prompts for Stable Diffusion 1.5 for social": "image",
    }
    found = []
    for request in backend.requests[start:]:
        system = request.messages[0][1]
        found.append(next(v for k, v in names.items() if system.startswith(k)))
    return found


def test_the_chain_runs_in_order_and_hands_each_output_to_the_next(tmp_path, shared_cache, series):
    chain, backend, store = make_chain(tmp_path, shared_cache, series)
    brief = Brief(source="episode", season=1, episode=2, platforms=["Instagram", "X", "TikTok"],
                  language="pt-BR", call_to_action="Assista hoje")  # fmt: skip
    campaign = chain.start(brief)
    chain.run(campaign)
    assert list(campaign.steps) == list(STEPS)
    assert kinds(backend) == ["concept", "posts", "posts", "posts", "image", "image", "image"]
    concept = campaign.steps["concept"]
    assert concept["hook"] == "Who is behind The Red-Headed League?"
    # The concept reaches the posts prompt; each post reaches its image prompt.
    assert json.dumps(concept["hook"])[1:-1] in backend.requests[1].messages[-1][1]
    assert "Brazilian Portuguese" in backend.requests[1].messages[-1][1]
    posts, prompts, images = (campaign.steps[s] for s in ("posts", "image_prompts", "images"))
    assert [p["platform"] for p in posts] == ["Instagram", "X", "TikTok"]
    assert all(p["text"].startswith(concept["hook"]) and "Assista hoje" in p["text"] for p in posts)
    for post, prompt in zip(posts, prompts, strict=True):
        assert " ".join(post["text"].split()[:8]) in prompt["prompt"]
    # Images at each platform's aspect ratio, in the catalog.
    sizes = [(store.find_image(i["cache_key"])["width"], store.find_image(i["cache_key"])["height"])
             for i in images]  # fmt: skip
    assert sizes == [aspect_size("4:5", 64), aspect_size("16:9", 64), aspect_size("9:16", 64)]
    assert sizes[1][0] > sizes[1][1] and sizes[2][0] < sizes[2][1]
    assert campaign.steps["review"] == {"ok": True, "issues": [], "posts": 3}
    # Saved in the catalog and listed.
    assert [row["id"] for row in store.campaigns()] == [campaign.id]
    assert chain.load(campaign.id).steps == campaign.steps


def test_aspect_sizes_are_multiples_of_16_near_the_base_area():
    for aspect in ("1:1", "4:5", "9:16", "16:9"):
        width, height = aspect_size(aspect)
        assert width % 16 == 0 and height % 16 == 0
        assert 0.85 < width * height / 512**2 < 1.15
    assert aspect_size("1:1") == (512, 512)
    # A small base keeps the aspect ratio but no side under the renderer's 64 pixels.
    assert aspect_size("16:9", 64) == (112, 64) and aspect_size("4:5", 64) == (64, 80)


def test_posts_over_the_limit_are_repaired_or_flagged(tmp_path, shared_cache, series):
    chain, backend, _ = make_chain(tmp_path, shared_cache, series, FakeBackend(long_posts=True))
    campaign = chain.start(Brief(source="season", season=1, platforms=["X"]))
    chain.run(campaign, until="posts")
    assert kinds(backend) == ["concept", "posts", "shorten"]
    (post,) = campaign.steps["posts"]
    assert post["repaired"] and not post["flags"]
    assert post["characters"] <= 280 and len(post["hashtags"]) == 3
    # A user's edit that is too long is flagged, not cut, and the review lists it.
    chain.edit(campaign, "posts", [{**post, "text": "x" * 300}])
    assert campaign.steps["posts"][0]["flags"] == [
        f"{300 + 2 + len(' '.join(post['hashtags']))} characters; X allows 280"
    ]
    chain.run(campaign)
    assert not campaign.steps["review"]["ok"]
    assert "Post 1 (X)" in campaign.steps["review"]["issues"][0]


def test_a_text_cut_by_the_length_limit_ends_on_a_whole_sentence_or_word():
    assert tidy_cut("Short and whole.", 120) == "Short and whole."
    cut = "Holmes finds the truth behind the vanished groom at last. Then he fo"
    assert tidy_cut(cut, len(cut)) == "Holmes finds the truth behind the vanished groom at last."
    cut = "Who fooled Mary Sutherland while Holmes watched the typewritten lett"
    assert (
        tidy_cut(cut, len(cut))
        == "Who fooled Mary Sutherland while Holmes watched the typewritten…"
    )


def test_check_post_normalises_hashtags_and_counts_them():
    post = check_post({"platform": "Instagram", "text": "Hi", "hashtags": ["Mystery", "#a b"]})
    assert post["hashtags"] == ["#Mystery", "#ab"] and post["characters"] == len(
        "Hi\n\n#Mystery #ab"
    )
    many = check_post({"platform": "Instagram", "text": "Hi",
                       "hashtags": [f"#t{n}" for n in range(31)]})  # fmt: skip
    assert many["flags"] == ["31 hashtags; Instagram allows 30"]
    assert PLATFORMS["X"].limit == 280 and PLATFORMS["Instagram"].limit == 2200


def test_a_malformed_step_output_is_repaired_by_asking_again(tmp_path, shared_cache, series):
    backend = FakeBackend(bad_answers=['{"hook": "only a hook"'])
    chain, backend, _ = make_chain(tmp_path, shared_cache, series, backend)
    campaign = chain.start(Brief(source="topic", topic="Holmes returns", platforms=["X"]))
    chain.run_step(campaign, "concept")
    assert len(backend.requests) == 2  # the broken answer, then the repaired one
    assert campaign.steps["concept"]["hook"].startswith("Who is behind")


def test_a_step_output_that_stays_malformed_is_reported(tmp_path, shared_cache, series):
    backend = FakeBackend(bad_answers=["not json"] * 10)
    chain, _, _ = make_chain(tmp_path, shared_cache, series, backend)
    campaign = chain.start(Brief(source="topic", topic="Holmes returns", platforms=["X"]))
    with pytest.raises(LLMError):
        chain.run_step(campaign, "concept")
    assert not campaign.done("concept")


def test_an_edit_reruns_only_the_later_steps(tmp_path, shared_cache, series):
    chain, backend, _ = make_chain(tmp_path, shared_cache, series)
    campaign = chain.start(
        Brief(source="episode", season=2, episode=1, platforms=["X", "LinkedIn"])
    )
    chain.run(campaign)
    concept, first_prompts = campaign.steps["concept"], campaign.steps["image_prompts"]
    before = len(backend.requests)
    posts = campaign.steps["posts"]
    edited = [{**posts[0], "text": "Silver Blaze gallops tonight."}, posts[1]]
    chain.edit(campaign, "posts", edited)
    assert list(campaign.steps) == ["concept", "posts"]
    chain.run(campaign)
    assert campaign.steps["concept"] == concept
    # Only the image prompts ran again; the unchanged post's prompt came from the cache.
    assert kinds(backend, before) == ["image"]
    assert "Silver Blaze gallops tonight" in campaign.steps["image_prompts"][0]["prompt"]
    assert campaign.steps["image_prompts"][1] == first_prompts[1]


def test_bad_briefs_and_edits_say_what_to_fix(tmp_path, shared_cache, series):
    chain, _, _ = make_chain(tmp_path, shared_cache, series)
    with pytest.raises(CampaignError, match="No episode S9E1"):
        chain.start(Brief(source="episode", season=9, episode=1))
    with pytest.raises(CampaignError, match="unknown: Myspace"):
        chain.start(Brief(source="topic", topic="x", platforms=["Myspace"]))
    with pytest.raises(CampaignError, match="Unknown language"):
        chain.start(Brief(source="topic", topic="x", language="fr"))
    campaign = chain.start(Brief(source="topic", topic="Holmes returns", platforms=["X"]))
    with pytest.raises(CampaignError, match="Run concept before posts"):
        chain.run_step(campaign, "posts")
    chain.run_step(campaign, "concept")
    with pytest.raises(CampaignError, match="not valid at hashtags"):
        chain.edit(campaign, "concept", {**campaign.steps["concept"], "hashtags": "#one"})


def test_reusing_an_episode_image_renders_nothing(tmp_path, shared_cache, series):
    chain, _, store = make_chain(tmp_path, shared_cache, series)
    first = chain.start(Brief(source="episode", season=1, episode=1, platforms=["Facebook"]))
    chain.run(first)
    existing = first.steps["images"][0]["cache_key"]
    count = len(store.images())
    second = chain.start(Brief(source="episode", season=1, episode=1,
                               platforms=["Instagram", "X"], reuse_image=existing))  # fmt: skip
    chain.run(second)
    assert [i["cache_key"] for i in second.steps["images"]] == [existing, existing]
    assert len(store.images()) == count
    # The export cuts the reused image to each platform's aspect ratio, parameters kept.
    archive = zipfile.ZipFile(io.BytesIO(export_zip(second, store).data))
    instagram = Image.open(io.BytesIO(archive.read("images/01-instagram.png")))
    x_image = Image.open(io.BytesIO(archive.read("images/02-x.png")))
    assert instagram.size == (51, 64) and x_image.size == (64, 36)
    assert "Steps: 2" in instagram.text["parameters"]


def test_export_zip_has_images_posts_and_the_campaign(tmp_path, shared_cache, series):
    chain, _, store = make_chain(tmp_path, shared_cache, series)
    campaign = chain.start(Brief(source="episode", season=1, episode=5,
                                 platforms=["Instagram", "X"], posts_per_platform=2))  # fmt: skip
    chain.run(campaign)
    export = export_zip(campaign, store)
    assert export.missing == []
    archive = zipfile.ZipFile(io.BytesIO(export.data))
    names = sorted(archive.namelist())
    assert names == ["campaign.json", "images/01-instagram.png", "images/02-instagram.png",
                     "images/03-x.png", "images/04-x.png", "posts.csv", "posts.md"]  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(archive.read("posts.csv").decode())))
    assert [r["platform"] for r in rows] == ["Instagram", "Instagram", "X", "X"]
    assert rows[2]["limit"] == "280" and rows[2]["image"] == "images/03-x.png"
    markdown = archive.read("posts.md").decode()
    assert campaign.steps["concept"]["hook"] in markdown and "![X](images/03-x.png)" in markdown
    saved = json.loads(archive.read("campaign.json"))
    assert saved["steps"]["posts"][0]["text"] == campaign.steps["posts"][0]["text"]
    image = store.find_image(campaign.steps["images"][0]["cache_key"])
    assert archive.read("images/01-instagram.png") == store.image_path(image).read_bytes()


def read_export(export) -> tuple[list[str], list[dict[str, str]], str, dict]:
    archive = zipfile.ZipFile(io.BytesIO(export.data))
    rows = list(csv.DictReader(io.StringIO(archive.read("posts.csv").decode())))
    saved = json.loads(archive.read("campaign.json"))
    return sorted(archive.namelist()), rows, archive.read("posts.md").decode(), saved


def reviewed_campaign(tmp_path, shared_cache, series):
    """Three posts, each with its own rendered image, through the review."""
    chain, _, store = make_chain(tmp_path, shared_cache, series)
    campaign = chain.start(Brief(source="episode", season=1, episode=4,
                                 platforms=["Instagram", "X", "TikTok"]))  # fmt: skip
    chain.run(campaign)
    assert campaign.steps["review"]["ok"]
    return chain, store, campaign


def delete_catalog_row(store, cache_key: str) -> None:
    """What a manual clean-up of the catalog does (the store has no way to delete an image)."""
    with sqlite3.connect(store.data_dir / "catalog.sqlite") as db:
        db.execute("DELETE FROM images WHERE cache_key = ?", (cache_key,))


@pytest.mark.parametrize("row_too", [False, True], ids=["file-deleted", "row-deleted"])
def test_a_missing_image_is_reported_and_marked_in_the_export(
    tmp_path, shared_cache, series, row_too
):
    chain, store, campaign = reviewed_campaign(tmp_path, shared_cache, series)
    gone = campaign.steps["images"][1]  # the X post's
    row = store.find_image(gone["cache_key"])
    store.image_path(row).unlink()
    if row_too:
        delete_catalog_row(store, gone["cache_key"])
    reason = ("is missing from the catalog" if row_too
              else f"file is missing from the data folder ({row['path']})")  # fmt: skip
    message = f"Post 2 (X): its image {reason} — rerun the images step"

    # The stored review predates the deletion; the review as of now reports it, as does the step.
    assert [m.message for m in missing_images(campaign, store)] == [message]
    assert review(campaign, store) == {"ok": False, "issues": [message], "posts": 3}
    chain.run_step(campaign, "review")
    assert campaign.steps["review"]["issues"] == [message]

    export = export_zip(campaign, store)
    assert [m.message for m in export.missing] == [message]
    names, rows, markdown, saved = read_export(export)
    assert names == ["campaign.json", "images/01-instagram.png", "images/03-tiktok.png",
                     "posts.csv", "posts.md"]  # fmt: skip
    assert [r["image"] for r in rows] == [
        "images/01-instagram.png",
        f"MISSING: its image {reason} — rerun the images step",
        "images/03-tiktok.png",
    ]
    assert f"> **MISSING IMAGE:** its image {reason} — rerun the images step" in markdown
    assert "![Instagram](images/01-instagram.png)" in markdown and "![X]" not in markdown
    assert "![TikTok](images/03-tiktok.png)" in markdown
    assert saved["steps"]["review"]["issues"] == [message]

    # Rerunning the images step renders the missing image again; nothing is missing then.
    chain.run_step(campaign, "images")
    chain.run(campaign)
    assert campaign.steps["review"]["ok"] and export_zip(campaign, store).missing == []


def test_a_missing_reused_image_marks_every_post_and_says_to_choose_another(
    tmp_path, shared_cache, series
):
    chain, store, first = reviewed_campaign(tmp_path, shared_cache, series)
    reused = first.steps["images"][0]["cache_key"]
    second = chain.start(Brief(source="episode", season=1, episode=4, platforms=["X", "TikTok"],
                               reuse_image=reused))  # fmt: skip
    chain.run(second)
    delete_catalog_row(store, reused)
    export = export_zip(second, store)
    assert [m.post for m in export.missing] == [1, 2]
    assert all("choose another image to reuse" in m.message for m in export.missing)
    names, rows, _, _ = read_export(export)
    assert not any(n.startswith("images/") for n in names)
    assert all(
        r["image"].startswith("MISSING: its image is missing from the catalog") for r in rows
    )


def test_a_post_whose_image_failed_to_render_is_reported_not_dropped(
    tmp_path, shared_cache, series, monkeypatch
):
    chain, _, store = make_chain(tmp_path, shared_cache, series)
    backend = chain.images.backend
    real = backend.render

    def fail_for_x(requests, **options):  # X's 16:9 is the only landscape size here
        if any(request.width > request.height for request in requests):
            raise RenderError("The image model ran out of memory.")
        return real(requests, **options)

    monkeypatch.setattr(backend, "render", fail_for_x)
    campaign = chain.start(Brief(source="season", season=1, platforms=["Instagram", "X"]))
    chain.run(campaign)
    message = ("Post 2 (X): its image failed to render (The image model ran out of memory.) — "
               "rerun the images step")  # fmt: skip
    assert campaign.steps["review"] == {"ok": False, "issues": [message], "posts": 2}
    export = export_zip(campaign, store)
    names, rows, markdown, _ = read_export(export)
    assert "images/01-instagram.png" in names and rows[1]["image"].startswith("MISSING: ")
    assert "MISSING IMAGE" in markdown

    # When no image renders at all, the step fails as a whole, as before.
    chain.edit(campaign, "posts", [{**campaign.steps["posts"][1], "text": "Only X now."}])
    chain.run(campaign, until="image_prompts")
    with pytest.raises(RenderError, match="out of memory"):
        chain.run_step(campaign, "images")
    assert not campaign.done("images")


def test_the_marketing_page_warns_of_missing_images_by_the_download(
    tmp_path, shared_cache, series, monkeypatch
):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from studio.llm import client as llm_client
    from tests.support.catalogs import SMALL_ENV

    for name, value in SMALL_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(llm_client, "make_backend", lambda settings, *_: FakeBackend())
    chain, store, campaign = reviewed_campaign(tmp_path / "data", shared_cache, series)
    gone = store.find_image(campaign.steps["images"][2]["cache_key"])
    store.image_path(gone).unlink()
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboard.py"),
                               default_timeout=120)  # fmt: skip
        at.query_params["campaign"] = campaign.id
        at.run()
        at.switch_page("pages/marketing.py").run()
        assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
        # (A store opening drops the rows of deleted files: the page may find the row gone too.)
        warnings = [w.value for w in at.warning]
        assert any(w.startswith("Post 3 (TikTok): its image ")
                   and w.endswith(" — rerun the images step") for w in warnings)  # fmt: skip
        assert any("The zip leaves out 1 image(s) (post 3)" in w for w in warnings)
        assert not any(s.value.startswith("All 3 posts") for s in at.success)
        assert any(c.value.startswith("3. TikTok: its image ") for c in at.caption)

        at.button(key="mk_rerun_images").click().run()
        assert not at.exception and not at.error
        assert any(s.value.startswith("All 3 posts") for s in at.success)
        assert missing_images(chain.load(campaign.id), store) == []
    finally:
        st.cache_resource.clear()


def test_a_campaign_reuses_a_storyboard_panel_and_a_portrait(tmp_path, shared_cache, series):
    from studio.workflows.marketing.export import crop_to_aspect
    from studio.workflows.marketing.reuse import reusable_images

    studio = small_studio(tmp_path, shared_cache, chat=FakeBackend())
    chain, store = Chain(studio.llm, studio.images, series, studio.settings), studio.store
    board = studio.storyboard(1, 3)
    episode = next(e for e in series.episodes if (e.season, e.episode) == (1, 3))
    name = series.characters_of(episode)[0].name
    studio.character_portrait(name)
    portrait = studio.portrait_of(name)
    panel = board.images[1]

    # The episode offers its storyboard's panels in story order and its cast's portraits.
    options = reusable_images(store, series, 1, 3)
    panels = [o for o in options if o.kind == "storyboard"]
    total = len(board.images)
    assert [(o.cache_key, o.label) for o in panels] == [
        (image.cache_key, f"Storyboard panel {n} of {total}")
        for n, image in enumerate(board.images, start=1)
    ]
    assert (portrait.cache_key, f"Portrait of {name}") in [
        (o.cache_key, o.label) for o in options if o.kind == "portrait"
    ]

    backend = chain.images.backend
    real, rendered = backend.render, []

    def counting(requests, **options):
        rendered.extend(requests)
        return real(requests, **options)

    backend.render = counting
    brief = Brief(source="episode", season=1, episode=3, platforms=["Instagram", "X", "TikTok"],
                  post_images={"1": panel.cache_key, "2": portrait.cache_key})  # fmt: skip
    campaign = chain.start(brief)
    chain.run(campaign)
    images = campaign.steps["images"]
    assert [i["cache_key"] for i in images[:2]] == [panel.cache_key, portrait.cache_key]
    assert [i["reused"] for i in images] == [True, True, False]
    assert images[0]["source"] == "Storyboard panel 2 of S01E03"
    assert images[1]["source"] == f"Portrait of {name}"
    # Only the third post rendered (TikTok's 9:16): the panel and the portrait were reused.
    assert len(rendered) == 1 and rendered[0].width < rendered[0].height
    review_now = campaign.steps["review"]
    assert review_now["ok"] and review_now["reused"] == [
        "Post 1 (Instagram): Storyboard panel 2 of S01E03",
        f"Post 2 (X): Portrait of {name}",
    ]

    export = export_zip(campaign, store)
    assert export.missing == []
    names, rows, markdown, saved = read_export(export)
    assert names == ["campaign.json", "images/01-instagram.png", "images/02-x.png",
                     "images/03-tiktok.png", "posts.csv", "posts.md"]  # fmt: skip
    archive = zipfile.ZipFile(io.BytesIO(export.data))
    panel_png = store.image_path(store.find_image(panel.cache_key)).read_bytes()
    assert archive.read("images/01-instagram.png") == crop_to_aspect(panel_png, "4:5")
    portrait_png = store.image_path(store.find_image(portrait.cache_key)).read_bytes()
    assert archive.read("images/02-x.png") == crop_to_aspect(portrait_png, "16:9")
    assert [r["image_source"] for r in rows] == [
        "Storyboard panel 2 of S01E03",
        f"Portrait of {name}",
        "rendered",
    ]
    assert "*Reused image: Storyboard panel 2 of S01E03*" in markdown
    assert saved["brief"]["post_images"] == {"1": panel.cache_key, "2": portrait.cache_key}
    assert saved["steps"]["review"]["reused"] == review_now["reused"]


def test_the_marketing_page_offers_storyboard_panels_and_portraits_per_post(
    tmp_path, shared_cache, series, monkeypatch
):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from studio.llm import client as llm_client
    from tests.support.catalogs import SMALL_ENV

    for name, value in SMALL_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(llm_client, "make_backend", lambda settings, *_: FakeBackend())
    studio = small_studio(tmp_path / "data", shared_cache, chat=FakeBackend())
    board = studio.storyboard(1, 3)
    episode = next(e for e in series.episodes if (e.season, e.episode) == (1, 3))
    name = series.characters_of(episode)[0].name
    studio.character_portrait(name)
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "dashboard.py"),
                               default_timeout=120)  # fmt: skip
        at.run()
        at.switch_page("pages/marketing.py").run()
        at.radio(key="mk_view").set_value("New campaign").run()
        at.selectbox(key="mk_episode").select_index(series.episodes.index(episode)).run()
        assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
        options = at.selectbox(key="mk_reuse").options
        assert options[0] == "Render new images"
        panels = [f"Reuse: Storyboard panel {n} of {len(board.images)}"
                  for n in range(1, len(board.images) + 1)]  # fmt: skip
        assert all(p in options for p in panels) and f"Reuse: Portrait of {name}" in options
        at.selectbox(key="mk_post_image_1").set_value(panels[0])
        at.selectbox(key="mk_post_image_2").set_value(f"Reuse: Portrait of {name}").run()
        at.button(key="mk_start").click().run()
        assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
        (row,) = studio.store.campaigns()
        saved = studio.store.campaign(row["id"])
        assert saved["brief"]["post_images"] == {
            "1": board.images[0].cache_key,
            "2": studio.portrait_of(name).cache_key,
        }
    finally:
        st.cache_resource.clear()
