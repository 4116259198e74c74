"""English image prompts for a series written in Spanish or Portuguese: the fields that reach the
image model are checked after each answer and repaired by a translation call (names kept as
written); titles and rationales stay in the data's language; the run's report counts the fixes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio.core.dataset import load_series
from studio.workflows.batch import Selection, run_job
from studio.writing.english import drop_words, ensure_english, foreign_fields
from studio.writing.quality import check_catalog, foreign_words
from tests.support.catalogs import small_studio
from tests.support.fakes import FakeBackend

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class PastingBackend(FakeBackend):
    """Writes as the small model did for a Spanish or Portuguese series: each character's
    description pasted into the prompt fields and the look, in the data's language."""

    def answer(self, request):
        data = super().answer(request)
        if request.messages[0][1].startswith("You translate the fields"):
            return data
        user = request.messages[-1][1]
        pasted = "mujer de la mina, pelo negro en una trenza, capa de chuva amarela"
        if "person" in data:  # a look
            data["clothing"] = "capa de chuva amarela"
            data["person"] = "faroleira de trinta anos"
        elif "subject" in data and "rationale" in data:  # an episode
            data["subject"] = f"Lucía en el túnel, {pasted}"
            data["rationale"] = "El momento en que Lucía encuentra los cristales."
        elif "moments" not in data and all(isinstance(v, dict) for v in data.values()):
            for style in data.values():  # season styles
                style["setting"] = "los Andes en invierno, niebla"
        del user
        return data


def test_foreign_fields_are_found_and_words_dropped():
    data = {"subject": "Lucía en el túnel", "setting": "a quiet harbour", "style": "oil"}
    assert foreign_fields(data, ["subject", "setting"], ["Lucía"]) == {
        "subject": ["en", "el", "túnel"]
    }
    assert (
        drop_words("Lucía en el túnel, stone walls", ["en", "el", "túnel"]) == "Lucía, stone walls"
    )


def test_english_fields_come_back_translated_with_names_kept(tmp_path, shared_cache):
    with small_studio(tmp_path, shared_cache) as studio:
        data = {"subject": "Lucía, mujer de la mina, pelo negro", "setting": "old mine"}
        fixed, fix = ensure_english(studio.llm, data, ["subject", "setting"], ["Lucía"])
        assert fix is not None and fix.fields == ("subject",)
        assert "Lucía" in fixed["subject"] and "woman" in fixed["subject"]
        assert foreign_words(fixed["subject"], ["Lucía"]) == [] and fixed["setting"] == "old mine"
        again, _ = ensure_english(studio.llm, data, ["subject", "setting"], ["Lucía"])
        assert again == fixed  # the translation is cached like every answer
        same, none = ensure_english(studio.llm, {"subject": "a lighthouse"}, ["subject"], [])
        assert none is None and same == {"subject": "a lighthouse"}


@pytest.mark.parametrize("folder", ["spanish_series", "portuguese_series"])
def test_a_series_in_another_language_gets_english_prompts(tmp_path, shared_cache, folder):
    series, _ = load_series(FIXTURES / folder)
    backend = PastingBackend()
    with small_studio(tmp_path, shared_cache, chat=backend, series=FIXTURES / folder) as studio:
        summary = run_job(series, Selection(None, None, "all"), studio.settings, studio.llm,
                          studio.images, dry_run=True)  # fmt: skip
        report = check_catalog(studio.store, series, studio.backend.count_tokens)
        assert summary.repairs, "the pasted descriptions were repaired and counted"
        assert report.counts["non_english"] == 0, report.lines()
        episodes = [s for label, s in summary.prompts if label.startswith("S01E")]
        assert episodes and all("Lucía" in s.prompt for s in episodes) == (
            folder == "spanish_series"
        )
        if folder == "spanish_series":  # the name as written, the rationale in Spanish
            assert all("Lucy" not in s.prompt for s in episodes)
            assert episodes[0].rationale.startswith("El momento")
        looks = {name: c.descriptor for name, c in studio.store.characters().items()}
        assert all(foreign_words(look) == [] for look in looks.values()), looks
        asked = [json.loads(json.dumps(r.schema)) for r in backend.requests]
        assert any(
            set(s["properties"])
            <= {
                "person",
                "face",
                "hair",
                "clothing",
                "palette",
                "expression",
                "background",
                "lighting",
            }
            and len(s["properties"]) < 8
            for s in asked
        )  # a look's fields translated


class ForgetfulBackend(FakeBackend):
    """Writes a look as the small model did: the raincoat and the ring gone, a phrase cut short."""

    def answer(self, request):
        data = super().answer(request)
        if "person" in data:
            data.update(clothing="plaid black dress", hair="short black hair in a bun on the")
        return data


def test_a_look_keeps_the_items_its_description_names(tmp_path, shared_cache):
    folder = FIXTURES / "portuguese_series"
    series, _ = load_series(folder)
    backend = ForgetfulBackend()
    with small_studio(tmp_path, shared_cache, chat=backend, series=folder) as studio:
        summary = run_job(series, Selection(None, None, "characters"), studio.settings,
                          studio.llm, studio.images, dry_run=True)  # fmt: skip
        looks = {name: c.descriptor for name, c in studio.store.characters().items()}
        assert "raincoat" in looks["Marta"] and "ring" in looks["Caio"], looks
        assert "suit" in looks["Caio"]
        assert not looks["Marta"].endswith(("on the", "on", "the")), looks
        assert any("kept raincoat" in r for r in summary.repairs), summary.repairs
        report = check_catalog(studio.store, series, studio.backend.count_tokens)
        assert report.counts["lost_items"] == 0 and report.counts["cut_words"] == 0, report.lines()


def test_names_keep_their_possessive_and_items_get_a_glossary():
    from studio.writing.language import glossary

    assert foreign_words("Lucía's lantern, Tomás", ["Lucía", "Tomás"]) == []
    assert glossary("capa de chuva amarela, anel de sinete") == {
        "capa de chuva": "raincoat",
        "anel": "ring",
    }


class CopyingBackend(FakeBackend):
    """Writes one poster for all five styles, as the small model did for a Portuguese season."""

    def answer(self, request):
        data = super().answer(request)
        if "Its moment:" in request.messages[-1][1]:  # a style's poster, whatever came before
            data.update(subject="a woman on a cliff", setting="a windy island at dusk",
                        details="lighthouse, gulls")  # fmt: skip
        return data


def test_five_styles_that_came_back_alike_are_asked_again_apart(tmp_path, shared_cache):
    backend = CopyingBackend()
    with small_studio(tmp_path, shared_cache, chat=backend) as studio:
        summary = run_job(studio.series, Selection({1}, None, "seasons"), studio.settings,
                          studio.llm, studio.images, dry_run=True)  # fmt: skip
        again = [r for r in backend.requests if "came out as the same picture" in r.messages[0][1]]
        assert len(again) == 4  # every style after the first
        assert any("asked again apart" in r for r in summary.repairs)
        report = studio.prompt_quality()
        assert report.counts["style_overlap"] == 0, report.lines()


def test_each_style_is_asked_on_the_shared_season_data_and_sees_the_earlier_posters(
    tmp_path, shared_cache
):
    backend = FakeBackend()
    with small_studio(tmp_path, shared_cache, chat=backend) as studio:
        run_job(studio.series, Selection({1}, None, "seasons"), studio.settings, studio.llm,
                studio.images, dry_run=True)  # fmt: skip
    asked = [r for r in backend.requests if "Its moment:" in r.messages[-1][1]]
    assert len(asked) == 5
    # Everything but the question is the same for the five: the embedded model evaluates it once.
    assert len({r.messages[:-1] for r in asked}) == 1
    questions = [r.messages[-1][1] for r in asked]
    assert "none yet" in questions[0]
    assert all("Oil painting:" in q for q in questions[1:])
    assert "Art deco poster:" in questions[4] and "Anime" not in questions[4].split("written")[1]


def test_a_look_keeps_an_item_named_by_another_of_its_words():
    from studio.writing.cast import fit_descriptor, item_words

    description = "A former army surgeon in a dark suit, bowler hat and overcoat."
    parts = {
        "person": "sturdy man in his thirties",
        "face": "square-shouldered, neat moustache, sun-browned face with a slight stiffness",
        "hair": "neat hair",
        "clothing": "dark suit, bowler hat and overcoat",
        "palette": "rusty orange, olive green",
    }
    look = fit_descriptor(parts, lambda text: len(text.split()) * 2, item_words(description))
    assert "overcoat" in look and "bowler hat" in look, look
