"""The prompt library keeps the studio's one prompt limit: in its search query and idea, in the
rows it imports, and in what `improve` quotes to the LLM."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from studio.core.errors import StudioError
from studio.core.params import MAX_PROMPT, RenderRequest
from studio.library.service import EXAMPLE_CHARS, MAX_QUERY
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend

AT_LIMIT = ("a lighthouse on a cliff at dawn, oil painting, " * 60)[:MAX_PROMPT]
OVER = "a lighthouse on a cliff at dawn, " * 3181 + "x" * 27  # 105,000 characters


def write_csv(path: Path, rows) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("id", "prompt", "source_site"))
        writer.writerows(rows)
    return path


@pytest.fixture()
def chat() -> FakeBackend:
    return FakeBackend()


@pytest.fixture()
def fresh(tmp_path, chat):
    with small_studio(tmp_path / "data", tmp_path / "cache", chat=chat) as made:
        yield made


def test_the_search_query_and_the_idea_have_the_prompt_limit(fresh):
    assert MAX_QUERY == MAX_PROMPT  # any prompt the studio takes can be pasted into a search
    for call, name in ((fresh.library.search, "search"), (fresh.library.improve, "idea")):
        with pytest.raises(StudioError) as caught:
            call(OVER)
        assert str(caught.value) == (
            f"The {name} is 105,000 characters long; keep it under {MAX_PROMPT:,}."
        )


@pytest.mark.slow
def test_an_import_skips_and_reports_rows_over_the_limit_and_stores_none_of_them(fresh, tmp_path):
    path = write_csv(
        tmp_path / "prompts.csv",
        [("1", AT_LIMIT, "lexica.art"), ("2", AT_LIMIT + "!", "lexica.art"),
         ("3", OVER, "lexica.art"), ("4", "a red fox in the snow", "lexica.art")],
    )  # fmt: skip
    RenderRequest(AT_LIMIT).check()  # what the library imports, the studio renders
    report = fresh.library.import_csv(path)
    assert (report.rows, report.added) == (4, 2)
    assert report.skipped == {f"prompt longer than {MAX_PROMPT:,} characters": 2}
    assert report.examples == [
        f"line 3: prompt longer than {MAX_PROMPT:,} characters",
        f"line 4: prompt longer than {MAX_PROMPT:,} characters",
    ]
    assert f"2 skipped: prompt longer than {MAX_PROMPT:,} characters" in report.summary()
    assert fresh.library.stats()["import"] == 2
    hits = fresh.library.search(AT_LIMIT, k=10)  # a query as long as any prompt
    assert sorted(len(hit.text) for hit in hits if hit.item.kind == "import") == [21, MAX_PROMPT]


@pytest.mark.slow
def test_improve_takes_an_idea_as_long_as_a_prompt_and_quotes_examples_briefly(
    fresh, tmp_path, chat
):
    fresh.library.import_csv(write_csv(tmp_path / "p.csv", [("1", AT_LIMIT, "lexica.art")]))
    idea = ("a lighthouse keeper's long night, " * 50)[: MAX_PROMPT - 100]
    better = fresh.library.improve(idea)
    assert len(better.prompts) == 3 and better.examples[0].text == AT_LIMIT
    quoted = "\n".join(content for _, content in chat.requests[-1].messages)
    assert AT_LIMIT[:EXAMPLE_CHARS] in quoted and AT_LIMIT[: EXAMPLE_CHARS + 1] not in quoted
