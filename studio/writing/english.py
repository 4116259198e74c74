"""English in every field that reaches the image model, whatever the language of the series data.

Stable Diffusion's text encoders were trained on English captions: a Spanish or Portuguese word in
a prompt is wasted, or worse. The templates ask for English; after each answer, `ensure_english`
tests the prompt fields cheaply (`studio.writing.language.foreign_words`: diacritics, and words of
Spanish, Portuguese, French, Italian and German that are not English, names excepted) and repairs
the fields that fail with one more LLM call (`english_fields.md`: translate, keep the names); a
word that survives the repair is dropped. Titles, rationales and marketing copy are not prompt
fields and stay in the user's language. Each repair is counted (`EnglishFix`) for the run's report.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from studio.llm.client import LLM, JSONAnswer
from studio.writing.language import WORD, foreign_words, glossary
from studio.writing.templates import data_block, load_template

TEMPLATE = "english_fields.md"


@dataclass(frozen=True)
class EnglishFix:
    """What one repair found and did."""

    fields: tuple[str, ...]  # the fields that had non-English words
    words: tuple[str, ...]  # those words
    dropped: tuple[str, ...] = ()  # words still there after the translation, dropped
    answer: JSONAnswer | None = None  # the translation call's answer (cached like any)

    def describe(self) -> str:
        dropped = f"; dropped {', '.join(self.dropped)}" if self.dropped else ""
        return (
            f"English: translated {', '.join(self.fields)} ({', '.join(self.words[:6])}"
            f"{', ...' if len(self.words) > 6 else ''}){dropped}"
        )


def foreign_fields(
    data: Mapping[str, Any], fields: Sequence[str], names: Iterable[str]
) -> dict[str, list[str]]:
    """field -> its non-English words, for the string `fields` of `data` that have any."""
    names = list(names)
    found = {}
    for field in fields:
        value = data.get(field)
        if isinstance(value, str) and (words := foreign_words(value, names)):
            found[field] = words
    return found


def drop_words(text: str, words: Iterable[str]) -> str:
    """`text` without `words` (whole words only), its phrases tidied."""
    unwanted = {word.lower() for word in words}
    phrases = []
    for phrase in text.split(","):
        kept = [w for w in phrase.split() if not _all_unwanted(w, unwanted)]
        if kept:
            phrases.append(" ".join(kept))
    return ", ".join(phrases)


def _all_unwanted(token: str, unwanted: set[str]) -> bool:
    parts = WORD.findall(token)
    return bool(parts) and all(part.lower() in unwanted for part in parts)


def ensure_english(
    llm: LLM,
    data: Mapping[str, Any],
    fields: Sequence[str],
    names: Iterable[str],
    refresh: bool = False,
) -> tuple[dict[str, Any], EnglishFix | None]:
    """`data` with its prompt `fields` in English: as it is when they are, else translated by
    one LLM call (names kept as written), with any word that survives dropped."""
    names = sorted(set(names))
    found = foreign_fields(data, fields, names)
    if not found:
        return dict(data), None
    keys = list(found)
    schema = {
        "type": "object",
        "properties": {key: {"type": "string", "minLength": 1, "maxLength": 240} for key in keys},
        "required": keys,
        "additionalProperties": False,
    }
    hints = glossary(" ".join(str(data[key]) for key in keys))
    messages = load_template(TEMPLATE).messages(
        names=", ".join(names) or "(none)",
        keys=", ".join(keys),
        glossary="; ".join(f"{word} = {english}" for word, english in hints.items()) or "(none)",
        fields_json=data_block({key: data[key] for key in keys}),
    )
    answer = llm.generate_json(messages, schema, max_tokens=60 * len(keys), refresh=refresh)
    fixed = {**data, **{key: " ".join(str(answer.data[key]).split()) for key in keys}}
    left = foreign_fields(fixed, keys, names)
    for key, words in left.items():
        fixed[key] = drop_words(fixed[key], words) or data[key]
    words = tuple(dict.fromkeys(w for ws in found.values() for w in ws))
    dropped = tuple(dict.fromkeys(w for ws in left.values() for w in ws))
    return fixed, EnglishFix(tuple(keys), words, dropped, answer)


def english_answer(
    llm: LLM,
    answer: JSONAnswer,
    fields: Sequence[str],
    names: Iterable[str],
    refresh: bool = False,
) -> tuple[JSONAnswer, EnglishFix | None]:
    """`answer` with its prompt `fields` made English (`ensure_english`); the same answer when
    they were. The repaired answer keeps the original's key, so the prompt record is the same."""
    data, fix = ensure_english(llm, answer.data, fields, names, refresh)
    if fix is None:
        return answer, None
    cached = answer.cached and fix.answer is not None and fix.answer.cached
    repaired = JSONAnswer(
        json.loads(json.dumps(data)), answer.key, cached, (*answer.repairs, fix.describe())
    )
    return repaired, fix


def english_nested(
    llm: LLM,
    answer: JSONAnswer,
    fields: Sequence[str],
    names: Iterable[str],
    refresh: bool = False,
) -> tuple[JSONAnswer, EnglishFix | None]:
    """`english_answer` for an answer of groups (a season's styles: {style: {part: text}}, a
    storyboard's {"moments": [{part: text}, ...]}): one translation call for all their fields."""
    flat: dict[str, Any] = {}
    for group, value in answer_groups(answer.data):
        for field in fields:
            if isinstance(value.get(field), str):
                flat[f"{group}.{field}"] = value[field]
    data, fix = ensure_english(llm, flat, list(flat), names, refresh)
    if fix is None:
        return answer, None
    nested = json.loads(json.dumps(answer.data))
    for group, value in answer_groups(nested):
        for field in fields:
            if f"{group}.{field}" in data:
                value[field] = data[f"{group}.{field}"]
    cached = answer.cached and fix.answer is not None and fix.answer.cached
    return JSONAnswer(nested, answer.key, cached, (*answer.repairs, fix.describe())), fix


def answer_groups(data: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, dict) of each group: a dict's dict values, and the items of its list values."""
    groups = []
    for key, value in data.items():
        if isinstance(value, dict):
            groups.append((key, value))
        elif isinstance(value, list):
            groups += [
                (f"{key}{i}", item) for i, item in enumerate(value) if isinstance(item, dict)
            ]
    return groups
