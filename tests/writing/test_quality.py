"""The prompt quality check: each check on fixtures written as the LLM got them wrong (Spanish and
Portuguese descriptions pasted in, a look that lost the raincoat, five styles that are one
prompt), and the whole check over a catalog the batch job made."""

from __future__ import annotations

from studio.writing.period import series_year
from studio.writing.quality import (
    Prompted,
    check_prompts,
    ends_cut,
    foreign_words,
    lost_items,
    overlap,
)
from tests.support.catalogs import small_studio


def words(text: str) -> int:  # a token counter: one token a word
    return len(text.split())


def test_foreign_words_are_found_and_names_are_kept():
    spanish = "Ingeniera de minas de unos treinta años, pelo negro recogido en una trenza, Lucía"
    assert foreign_words(spanish, ["Lucía"])[:3] == ["Ingeniera", "de", "minas"]
    assert "Lucía" not in foreign_words(spanish, ["Lucía"])
    portuguese = "Marta chega à Ilha do Vento, capa de chuva amarela"
    assert {"chega", "capa", "chuva", "amarela"} <= set(foreign_words(portuguese, ["Marta"]))
    english = "detective examining a clue, Victorian London street, film noir, a café at dusk"
    assert foreign_words(english) == []


def test_cut_phrases_and_dangling_colours_are_found():
    assert (
        ends_cut("young man, short black hair in a bun on the")
        == "short black hair in a bun on the"
    )
    assert ends_cut("young woman, straight gray hair, plaid black dress, blue") == "blue"
    assert ends_cut("young woman, yellow raincoat, sharp eyes") is None
    assert ends_cut("blue") is None  # one word alone is a phrase, not a cut one


def test_items_a_look_lost_are_named_in_any_language():
    description = "Faroleira de trinta e poucos anos, capa de chuva amarela, olhar atento"
    assert lost_items(description, "young woman, straight gray hair, plaid black dress") == [
        "raincoat"
    ]
    assert lost_items(description, "woman in her thirties, yellow raincoat, watchful eyes") == []
    assert lost_items("Caio, terno escuro, anel de sinete", "young man, dark terno") == [
        "suit",
        "ring",
    ]
    assert lost_items("a tall detective", "tall man") == []


def test_style_overlap_is_the_share_of_words_in_common():
    same = "The Andes in winter, grey sky with heavy fog, soft light from the crystals"
    assert overlap(same + ", oil painting", same + ", anime") > 0.7
    assert overlap("rain-soaked alley, neon reflections", "sunlit meadow, wildflowers") == 0.0


def test_the_whole_check_counts_each_kind_of_finding():
    looks = {
        "Marta": "woman in her thirties, grey short hair, yellow raincoat",
        "Caio": "young man, dark terno",
    }
    descriptions = {
        "Marta": "faroleira, capa de chuva amarela",
        "Caio": "terno escuro, anel de sinete",
    }
    style = "lighthouse keeper on a cliff, stormy night, lantern light, wide shot"
    prompts = [
        Prompted("S01E01", "episode", f"Marta on the cliff, {looks['Marta']}, storm"),
        Prompted("S01E02", "episode", "Marta and Caio argue on the pier, smartphone, fog"),
        Prompted(
            "S01E03",
            "episode",
            "Marta on the cliff, woman in her thirties, grey short hair, yellow raincoat, storm",
        ),  # fmt: skip
        Prompted("S01 oil", "season", style + ", oil painting", "S1"),
        Prompted("S01 anime", "season", style + ", anime", "S1"),
        Prompted("S01E01 moment 1", "storyboard", "the boat leaves, dawn", "board"),
        Prompted("S01E01 moment 2", "storyboard", "The boat leaves,  dawn", "board"),
        Prompted("S01E04", "episode", " ".join(["word"] * 80)),
        Prompted("S01E05", "episode", "a faroleira na ilha do vento"),
    ]
    report = check_prompts(prompts, looks, descriptions, words, year=1890)
    counts = report.counts
    assert counts["missing_descriptors"] == 2  # S01E02 names Marta and Caio, no looks in it
    assert counts["modern_words"] == 1 and report.of("modern_words")[0].detail == "smartphone"
    assert counts["duplicate_prompts"] == 1  # S01E01 and S01E03 are the same words
    assert counts["style_overlap"] == 1 and counts["storyboard_duplicates"] == 1
    assert counts["clip_window"] == 1 and report.of("clip_window")[0].label == "S01E04"
    assert {f.label for f in report.of("non_english")} == {"character Caio", "S01E05"}
    assert [f.detail for f in report.of("lost_items")] == ["suit, ring"]  # "terno" is no suit
    assert report.summary().startswith("Prompt quality: 9 prompts, 2 looks; 1 over CLIP's")
    assert report.as_dict()["counts"]["style_overlap"] == 1
    relaxed = check_prompts(prompts, looks, descriptions, words, year=None)
    assert relaxed.counts["modern_words"] == 0


def test_the_sample_is_a_period_series(tmp_path, shared_cache):
    with small_studio(tmp_path, shared_cache) as studio:
        assert series_year(studio.series) == 1901  # "Victorian": no year in its summaries


def test_the_check_over_a_catalog_the_batch_job_made(tmp_path, shared_cache):
    from studio.workflows.batch import Selection, run_job

    with small_studio(tmp_path, shared_cache) as studio:
        run_job(studio.series, Selection({1}, None, "all"), studio.settings, studio.llm,
                studio.images, dry_run=True)  # fmt: skip
        report = studio.prompt_quality()
    assert report.prompts >= 12 + 5 and report.looks >= 1
    assert report.counts["clip_window"] == 0 and report.counts["non_english"] == 0
    # the fake writes the same setting and details for all five styles: each style's own medium,
    # palette, light and camera still keep them apart
    assert report.counts["style_overlap"] == 0, report.lines()
