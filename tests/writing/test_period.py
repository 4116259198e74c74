"""Modern things in a period series: the series' year, the words that came after it, and the
phrases dropped from an LLM's answer before its prompt is built."""

from __future__ import annotations

from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import Episode, Season, Series, load_series
from studio.images.backends.diffusers.models import count_tokens
from studio.llm.client import LLM, JSONAnswer
from studio.writing.period import modern_words, period_answer, series_year
from studio.writing.prompting import write_episode_prompt
from tests.support.fakes import FakeBackend


def _series(summary: str) -> Series:
    return Series("Show", {1: Season(1)}, [Episode(1, 1, "Pilot", summary, ())])


def test_the_year_a_series_is_set_in():
    assert series_year(_series("In 1923 a chauffeur drives through Birmingham.")) == 1923
    assert series_year(_series("London, 1888 and 1891: fog.")) == 1891  # the latest year
    assert series_year(_series("A Victorian mill town.")) == 1901  # the end of the era
    assert series_year(_series("In 2019 a hacker wakes up.")) is None  # a series of today
    assert series_year(_series("A baker and her cat.")) is None  # no year, no era


def test_modern_words_are_those_after_the_series_year():
    text = "a car by a neon sign, smartphone glow, folding screen, screen print"
    assert modern_words(text, 1901) == ["car", "neon", "smartphone"]
    assert modern_words(text, 1923) == ["smartphone"]  # cars and neon by 1923
    assert modern_words("Victorian parlour, gaslight", 1901) == []


def test_modern_phrases_are_dropped_from_the_prompt_fields_only():
    victorian = _series("A Victorian detective in the fog.")
    answer = JSONAnswer(
        {
            "lighting": "warm lantern glow, neon reflections",
            "details": "a smartphone",  # its only phrase stays: the check still counts it
            "negative_prompt": "modern cars, neon",  # lists what must not appear
        },
        "key",
        True,
        ("an earlier repair",),
    )
    fixed = period_answer(answer, ("lighting", "details"), victorian)
    assert fixed.data["lighting"] == "warm lantern glow"
    assert fixed.data["details"] == "a smartphone"
    assert fixed.data["negative_prompt"] == "modern cars, neon"
    assert fixed.key == "key" and fixed.cached
    assert fixed.repairs == (
        "an earlier repair",
        "dropped 'neon reflections': modern in a series set before 1902",
    )
    assert answer.data["lighting"] == "warm lantern glow, neon reflections"  # not changed
    assert period_answer(answer, ("lighting",), _series("In 2019, a hacker.")) is answer


def test_a_season_or_storyboard_answer_is_fixed_in_each_group():
    victorian = _series("A Victorian detective in the fog.")
    answer = JSONAnswer(
        {
            "moments": [{"setting": "Baker Street, a parked car"}, {"setting": "a parlour"}],
            "oil": {"details": "pipe, laptop on the desk"},
        },
        "key",
        False,
    )
    fixed = period_answer(answer, ("setting", "details"), victorian)
    assert fixed.data["moments"][0]["setting"] == "Baker Street"
    assert fixed.data["moments"][1]["setting"] == "a parlour"
    assert fixed.data["oil"]["details"] == "pipe"
    assert "'a parked car', 'laptop on the desk'" in fixed.repairs[0]


def test_an_episode_prompt_of_the_sample_loses_the_neon_its_answer_had():
    from transformers import CLIPTokenizer

    from studio.core.hub import CLIP_TOKENIZER_DIR

    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)
    series = load_series(SAMPLE_SERIES)[0]

    class NeonBackend(FakeBackend):  # copies the template example's neon, as Qwen did
        def answer(self, request):
            data = super().answer(request)
            if "rationale" in data:
                data["lighting"] = "warm lantern glow, neon reflections"
            return data

    result = write_episode_prompt(
        LLM(NeonBackend()), series, series.episodes[0], lambda t: count_tokens(tokenizer, t)
    )
    assert "warm lantern glow" in result.spec.prompt and "neon" not in result.spec.prompt
    assert "modern cars" in result.spec.negative_prompt  # the negative prompt keeps its own
