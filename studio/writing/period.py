"""What does not belong in a period series: the year a series is set in, and the modern things
that came after it.

A series is a period series when its data names years, all before PERIOD_YEAR, or an era such as
Victorian (`series_year`: the latest such year, or the end of the era). The LLM sometimes writes
modern things into its pictures anyway: "neon reflections" in Victorian London, copied from an
example of its template. `period_answer` drops such phrases from an answer's prompt fields before
the prompt is built (never a field's last phrase, never the negative prompt, which lists what
must not appear), and says so in the run's report; the quality check counts what is left.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from studio.llm.client import JSONAnswer
from studio.writing.english import answer_groups
from studio.writing.language import words_of

if TYPE_CHECKING:
    from studio.core.dataset import Series

PERIOD_YEAR = 1950  # a series whose data names only years before this is a period series
YEAR = re.compile(r"\b(1[0-9]{3}|20[0-9]{2})\b")
# An era the data may name instead of a year -> the year it ended.
ERAS = {
    "ancient": 500,
    "roman empire": 500,
    "medieval": 1500,
    "renaissance": 1600,
    "18th century": 1800,
    "georgian": 1837,
    "regency": 1837,
    "19th century": 1900,
    "1800s": 1900,
    "victorian": 1901,
    "edwardian": 1910,
}
# Modern things -> the year from which a picture may show them.
_SINCE = {
    1890: "skyscraper skyscrapers",
    1905: "car cars motorcycle",
    1910: "airplane",
    1920: "neon phone phones",
    1930: "highway",
    1940: "television",
    1950: "tv plastic jeans t-shirt computer computers",
    1960: "sneakers headphones",
    1970: "led",
    1980: "hoodie laptop laptops",
    1990: "cellphone",
    2000: "drone",
    2005: "selfie",
    2007: "smartphone smartphones",
}
MODERN = {word: year for year, words in _SINCE.items() for word in words.split()}


def series_year(series: Series) -> int | None:
    """The latest year a period series is set in; None when it is not one (its data names a
    year from PERIOD_YEAR on, or neither a year nor an era)."""
    texts = [series.title, *(s.summary for s in series.seasons.values())]
    texts += [e.summary for e in series.episodes]
    years = [int(y) for text in texts for y in YEAR.findall(text)]
    if years:
        return max(years) if max(years) < PERIOD_YEAR else None
    joined = " ".join(texts).lower()
    named = [end for era, end in ERAS.items() if era in joined]
    return max(named) if named else None


def modern_words(text: str, year: int) -> list[str]:
    """The words of `text` for things that came after `year`, lower case, each once, sorted."""
    return sorted({w.lower() for w in words_of(text) if MODERN.get(w.lower(), 0) > year})


def period_answer(answer: JSONAnswer, fields: Sequence[str], series: Series) -> JSONAnswer:
    """`answer` without the phrases of its prompt `fields` that show things from after the
    series' year (in its groups too: a season's styles, a storyboard's moments); the same
    answer for a series of today or when there are none. It keeps the answer's key."""
    year = series_year(series)
    if year is None:
        return answer
    data = json.loads(json.dumps(answer.data))
    dropped: list[str] = []
    for group in [data, *(value for _, value in answer_groups(data))]:
        for name in fields:
            if isinstance(text := group.get(name), str):
                group[name] = _without_modern(text, year, dropped)
    if not dropped:
        return answer
    quoted = ", ".join(repr(phrase) for phrase in dropped)
    repair = f"dropped {quoted}: modern in a series set before {year + 1}"
    return JSONAnswer(data, answer.key, answer.cached, (*answer.repairs, repair))


def _without_modern(text: str, year: int, dropped: list[str]) -> str:
    phrases = [p.strip() for p in text.split(",") if p.strip()]
    kept = [p for p in phrases if not modern_words(p, year)]
    if not kept or len(kept) == len(phrases):  # nothing modern, or nothing else to keep
        return text
    dropped += [p for p in phrases if p not in kept]
    return ", ".join(kept)
