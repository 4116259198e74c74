"""The series' own endpoints (`/studio/v1`) against a real server over the bundled sample series,
the fake LLM and the demo model at 64x64, 2 steps: seasons and episodes with their covers, making
a target's images (a second call is all cached), the catalog's PNGs and records, portraits,
storyboards, campaigns, library search, the batch jobs' runs, and 404s and 422s that say why."""

from __future__ import annotations

import io
import zipfile
from urllib.parse import quote

import pytest
import requests

from studio.core.metadata import parse_parameters, read_png_metadata
from studio.server.background import BackgroundServer
from tests.server.conftest import server_settings
from tests.support.fakes import FakeBackend

API = "/studio/v1"


class Client:
    """requests against the server's /studio/v1."""

    def __init__(self, server: BackgroundServer):
        self.server, self.base = server, server.url + API

    def get(self, path: str, **kwargs) -> requests.Response:
        return requests.get(self.base + path, timeout=120, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(self.base + path, timeout=300, **kwargs)

    def ok(self, method: str, path: str, **kwargs):
        response = getattr(self, method)(path, **kwargs)
        assert response.status_code in (200, 201), response.text
        return response.json()

    @property
    def studio(self):
        return self.server.state.studio


@pytest.fixture
def api(tmp_path, shared_cache):
    settings = server_settings(tmp_path, shared_cache)
    with BackgroundServer(settings, chat_backend=FakeBackend()) as running:
        yield Client(running)


@pytest.fixture(scope="module")
def idle_api(tmp_path_factory, shared_cache):
    """One server for the tests that make nothing (the errors): started once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        for name in ("STUDIO_SERIES", "STUDIO_CONFIG", "STUDIO_LLM_MODEL", "OPENAI_BASE_URL"):
            patch.delenv(name, raising=False)
        settings = server_settings(tmp_path_factory.mktemp("idle"), shared_cache)
        with BackgroundServer(settings, chat_backend=FakeBackend()) as running:
            yield Client(running)


def test_seasons_and_episodes_before_anything_is_made(api):
    seasons = api.ok("get", "/seasons")
    assert [s["number"] for s in seasons] == [1, 2]
    first = seasons[0]
    assert first["id"] == "S01" and first["title"] and first["summary"]
    assert first["episodes"] == 12 and first["images"] == 0 and first["cover_url"] is None
    episodes = api.ok("get", "/episodes")
    assert len(episodes) == 24 and all(e["cover_url"] is None for e in episodes)
    assert [e["id"] for e in api.ok("get", "/episodes", params={"season": 2})][:2] == [
        "S02E01",
        "S02E02",
    ]
    assert api.ok("get", "/seasons/2/episodes") == api.ok("get", "/episodes?season=2")
    season = api.ok("get", "/seasons/1")
    assert len(season["styles"]) == 5 and all(not s["images"] for s in season["styles"])
    assert len(season["episode_list"]) == 12
    episode = api.ok("get", "/seasons/1/episodes/1")
    assert episode["title"] == "A Scandal in Bohemia" and episode["prompt"] is None
    assert "Sherlock Holmes" in episode["characters"]


def test_an_episodes_images_are_made_once_then_come_from_the_cache(api):
    made = api.ok("post", "/seasons/1/episodes/1/images")
    assert made["target"] == "S01E01" and made["failed"] == []
    assert made["images_rendered"] == 1 and made["prompts_written"] == 1 and made["llm_calls"] >= 1
    [image] = made["images"]
    assert image["cached"] is False and image["url"].startswith(api.server.url + API + "/images/")
    assert made["prompts"][0]["label"] == "S01E01" and made["prompts"][0]["prompt"]
    renders = len(api.studio.backend.calls)

    again = api.ok("post", "/seasons/1/episodes/1/images", json={"force": False})
    assert again["llm_calls"] == 0 and again["images_rendered"] == 0
    assert again["images_cached"] == 1 and again["prompts_cached"] == 1
    assert [i["key"] for i in again["images"]] == [image["key"]]
    assert again["images"][0]["cached"] is True
    assert len(api.studio.backend.calls) == renders  # no render

    listing = api.ok("get", "/seasons/1/episodes/1/images")
    assert [i["key"] for i in listing["images"]] == [image["key"]]
    assert listing["images"][0]["target"] == "S01E01#1" and listing["images"][0]["cached"] is None
    assert listing["episode"]["cover_url"] == image["url"]
    episodes = {e["id"]: e for e in api.ok("get", "/episodes", params={"season": 1})}
    assert episodes["S01E01"]["cover_key"] == image["key"] and episodes["S01E01"]["images"] == 1
    assert episodes["S01E02"]["cover_url"] is None
    assert api.ok("get", "/seasons")[0]["images"] == 1
    assert api.ok("get", "/seasons/1/episodes/1")["prompt"]["prompt"] == image["prompt"]

    jobs = api.ok("get", "/jobs")
    assert len(jobs) == 2 and jobs[0]["state"] == "finished"
    assert jobs[0]["selection"] == "S01E01; episodes only" and jobs[0]["images_done"] == 1
    assert jobs[1]["llm_calls"] >= 1 and jobs[0]["llm_calls"] == 0 and jobs[0]["llm"]
    assert jobs[0]["llm_concurrency"] >= 1

    png = requests.get(image["url"], timeout=30)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    parameters, provenance = read_png_metadata(png.content)
    assert parse_parameters(parameters)["Seed"] == str(image["seed"])
    assert provenance["prompt_key"]
    record = requests.get(image["record_url"], timeout=30).json()
    assert record["key"] == image["key"] and record["parameters"]["seed"] == image["seed"]
    assert record["provenance"]["prompt_key"] == provenance["prompt_key"]
    assert record["width"] == 64 and record["placeholder"] is True


def test_a_seasons_images_by_style_and_its_cover(api):
    made = api.ok("post", "/seasons/2/images")
    assert made["target"] == "S02" and made["images_rendered"] == 5 and not made["failed"]
    styles = api.ok("get", "/seasons/2/images")["styles"]
    assert len(styles) == 5
    assert all(len(s["images"]) == 1 and s["prompt"]["prompt"] for s in styles)
    assert {i["key"] for s in styles for i in s["images"]} == {i["key"] for i in made["images"]}
    season = api.ok("get", "/seasons")[1]
    assert season["cover_key"] == styles[0]["images"][0]["key"] and season["images"] == 5
    assert api.ok("post", "/seasons/2/images")["images_cached"] == 5


def test_a_characters_portrait_and_look(api):
    cast = api.ok("get", "/characters")
    assert cast[0]["name"] == "Sherlock Holmes" and cast[0]["description"]
    assert cast[0]["look"] is None and cast[0]["portrait_url"] is None
    made = api.ok("post", f"/characters/{quote('Sherlock Holmes')}/portrait")
    assert made["image"]["cached"] is False and made["image"]["kind"] == "character"
    assert made["character"]["look"]["descriptor"] and made["character"]["look"]["version"] == 1
    holmes = api.ok("get", "/characters/sherlock%20holmes")  # any case
    assert holmes["portrait_url"] == made["image"]["url"]
    again = api.ok("post", "/characters/Sherlock%20Holmes/portrait")
    assert again["image"]["cached"] is True and again["image"]["key"] == made["image"]["key"]


def test_a_storyboard_is_made_then_fetched_without_model_work(api):
    missing = api.get("/seasons/1/episodes/3/storyboard")
    assert missing.status_code == 404 and "no storyboard yet" in missing.json()["detail"]
    made = api.ok("post", "/seasons/1/episodes/3/storyboard")
    assert made["complete"] and 4 <= len(made["moments"]) <= 6
    assert all(m["image"]["url"] and m["title"] for m in made["moments"])
    calls = api.studio.llm.calls
    stored = api.ok("get", "/seasons/1/episodes/3/storyboard")
    assert stored == made and api.studio.llm.calls == calls


def test_a_campaign_runs_is_listed_fetched_and_exported(api):
    brief = {"source": "episode", "season": 1, "episode": 2, "platforms": ["X", "Instagram"]}
    made = api.post("/campaigns", json=brief)
    assert made.status_code == 201, made.text
    campaign = made.json()
    assert campaign["steps_done"] == ["concept", "posts", "image_prompts", "images", "review"]
    assert campaign["next_step"] is None and campaign["review"]["posts"] == 2
    assert [p["platform"] for p in campaign["posts"]] == ["X", "Instagram"]
    assert all(i["url"] and i["error"] is None for i in campaign["images"])
    [listed] = api.ok("get", "/campaigns")
    assert listed["id"] == campaign["id"] and listed["url"].endswith(campaign["id"])
    assert api.ok("get", f"/campaigns/{campaign['id']}") == campaign
    export = requests.get(campaign["export_url"], timeout=60)
    assert export.status_code == 200 and export.headers["content-type"] == "application/zip"
    assert "attachment" in export.headers["content-disposition"]
    assert export.headers["x-missing-images"] == "0"
    names = zipfile.ZipFile(io.BytesIO(export.content)).namelist()
    assert {"posts.csv", "posts.md", "campaign.json", "images/01-x.png"} <= set(names)
    again = api.ok("post", f"/campaigns/{campaign['id']}/run")  # nothing left to run
    assert again["steps_done"] == campaign["steps_done"]


def test_library_search_finds_the_episodes_prompt(api):
    made = api.ok("post", "/seasons/1/episodes/1/images")
    found = api.ok("get", "/library/search", params={"q": made["prompts"][0]["prompt"], "k": 3})
    assert found["k"] == 3 and 1 <= len(found["hits"]) <= 3
    best = found["hits"][0]
    assert best["text"] == made["images"][0]["prompt"] and best["score"] > 0.9
    assert best["image_url"] == made["images"][0]["url"]


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        ("get", "/seasons/9", ["Season 9 does not exist", "seasons 1, 2"]),
        ("get", "/seasons/9/images", ["Season 9 does not exist"]),
        ("post", "/seasons/9/images", ["Season 9 does not exist"]),
        ("get", "/episodes?season=3", ["Season 3 does not exist"]),
        ("get", "/seasons/1/episodes/99", ["S01E99", "does not exist", "episodes 1-12"]),
        ("post", "/seasons/1/episodes/99/images", ["S01E99"]),
        ("get", "/seasons/2/episodes/13/storyboard", ["S02E13"]),
        ("post", "/seasons/2/episodes/13/storyboard", ["S02E13"]),
        ("get", "/characters/Nobody", ["No character 'Nobody'", "Sherlock Holmes"]),
        ("post", "/characters/Nobody/portrait", ["No character 'Nobody'"]),
        ("get", "/images/0123abcd", ["Image '0123abcd' does not exist"]),
        ("get", "/images/0123abcd.png", ["Image '0123abcd' does not exist"]),
        ("get", "/campaigns/nope", ["Campaign 'nope' does not exist", "has none yet"]),
        ("get", "/campaigns/nope/export", ["Campaign 'nope' does not exist"]),
    ],
)
def test_unknown_things_are_404s_that_say_what_exists(idle_api, method, path, words):
    response = getattr(idle_api, method)(path)
    assert response.status_code == 404, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail


@pytest.mark.parametrize(
    ("method", "path", "body", "words"),
    [
        ("get", "/seasons/one", None, ["`season`", "integer"]),
        ("get", "/seasons/1/episodes/x/images", None, ["`episode`"]),
        ("get", "/library/search?q=castle&k=0", None, ["`k`"]),
        ("get", "/library/search?k=3", None, ["`q`"]),
        ("get", "/library/search?q=%20%20", None, ["`q`", "empty"]),
        ("get", "/jobs?limit=0", None, ["`limit`"]),
        ("post", "/seasons/1/episodes/1/images", {"force": [1]}, ["`force`"]),
        ("post", "/campaigns", {"platforms": ["Myspace"]}, ["`platforms`", "Myspace", "X"]),
        ("post", "/campaigns", {"language": "fr"}, ["`language`", "pt-BR"]),
        ("post", "/campaigns", {"season": 1}, ["`season` and `episode`"]),
        ("post", "/campaigns", {"source": "topic"}, ["`topic`"]),
        ("post", "/campaigns", {"source": "poster"}, ["`source`"]),
        ("post", "/campaigns", {"posts_per_platform": 11}, ["`posts_per_platform`"]),
        ("post", "/campaigns", {"until": "launch"}, ["`until`"]),
        (
            "post",
            "/campaigns",
            {"season": 1, "episode": 2, "reuse_image": "f00"},
            ["`reuse_image`"],
        ),
    ],
)
def test_bad_parameters_are_422s_that_name_the_field(idle_api, method, path, body, words):
    response = getattr(idle_api, method)(path, **({"json": body} if body is not None else {}))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail


def test_the_openapi_document_describes_the_endpoints(idle_api):
    spec = requests.get(idle_api.server.url + "/openapi.json", timeout=30).json()
    for path in ("/seasons", "/seasons/{season}/episodes/{episode}/images", "/campaigns",
                 "/campaigns/{campaign_id}/export", "/library/search", "/jobs"):  # fmt: skip
        assert API + path in spec["paths"]
    brief = spec["components"]["schemas"]["NewCampaign"]["properties"]
    assert "Instagram" in brief["platforms"]["description"]
