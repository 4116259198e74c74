"""Image prompts from the series: meta-prompting for episodes, self-ask in 5 styles for seasons.

Templates are files in `prompts/` (sections `## system` and `## user`, `$name` placeholders),
versioned by the sha256 of their content. Summaries go to the LLM as JSON data inside the user
message, never spliced into instructions, so a summary that says "ignore previous instructions"
is only ever material to depict. Every prompt is fitted to CLIP's 77-token window, counted with
the image model's own tokenizer, by dropping its least important phrases first.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from studio.core.dataset import Episode, Series
from studio.core.params import CLIP_WINDOW
from studio.core.prompt_syntax import as_plain_text
from studio.core.targets import PromptSpec
from studio.llm.client import LLM, JSONAnswer
from studio.writing.english import english_answer, english_nested
from studio.writing.language import overlap
from studio.writing.period import period_answer
from studio.writing.templates import (  # noqa: F401 - importable from here too
    PROMPTS_DIR,
    Template,
    base_negative,
    data_block,
    load_styles,
    load_template,
    templates_hash,
)

TokenCounter = Callable[[str], int]

# The parts of an image prompt, in the order they are written...
PART_ORDER = ("subject", "setting", "details", "lighting", "composition", "style")
# ...and the order in which phrases are dropped when the prompt is too long for CLIP ("cast":
# the descriptors of the people in the picture, the least important first).
DROP_ORDER = ("details", "composition", "cast", "lighting", "setting", "style", "subject")
# A season's styles keep their own light and camera longest: they are what sets them apart.
SEASON_DROP_ORDER = ("details", "cast", "setting", "composition", "lighting", "style", "subject")
SHORT_TEXT = {"type": "string", "minLength": 2, "maxLength": 160}  # schema of a short LLM phrase

EPISODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "minLength": 2, "maxLength": 240},
        **{part: SHORT_TEXT for part in PART_ORDER},
        "cast": {"type": "array", "maxItems": 0},  # see episode_schema: the episode's names
        "negative_prompt": {"type": "string", "maxLength": 200},
    },
    "required": ["rationale", *PART_ORDER, "cast", "negative_prompt"],
    "additionalProperties": False,
}
MAX_CAST = 4  # people named in one picture at most


def cast_schema(names: Sequence[str]) -> dict[str, Any]:
    """An array of at most MAX_CAST of `names` (none when there are no names)."""
    if not names:
        return {"type": "array", "maxItems": 0}
    return {
        "type": "array",
        "items": {"type": "string", "enum": list(names)},
        "maxItems": min(MAX_CAST, len(names)),
    }


def episode_schema(names: Sequence[str]) -> dict[str, Any]:
    """EPISODE_SCHEMA whose `cast` may name only the episode's characters."""
    schema = json.loads(json.dumps(EPISODE_SCHEMA))
    schema["properties"]["cast"] = cast_schema(names)
    return schema


def picture_cast(
    series: Series,
    names: Sequence[str],
    looks: Mapping[str, str],
    season: int | None = None,
    texts: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """(name, descriptor) of the `names` that have a descriptor in `looks`, each once, the most
    important first (`Series.ranked_characters`). A character the LLM named in `texts` (its
    subject, setting...) although it did not list them is in the picture too: their descriptor
    is written in, since the image model does not know the name."""
    rank = {name: i for i, name in enumerate(series.ranked_characters(season))}
    named = [n for n in looks if any(re.search(rf"\b{re.escape(n)}\b", t) for t in texts)]
    chosen = [n for n in dict.fromkeys([*names, *named]) if looks.get(n, "").strip()]
    return [(n, looks[n]) for n in sorted(chosen, key=lambda n: rank.get(n, len(rank)))]


def kept_cast(prompt: str, cast: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The names whose descriptors made it into `prompt` (fitting drops the least important)."""
    return tuple(name for name, look in cast if " ".join(look.split()) in prompt)


SELF_ASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "follow_ups": {
            "type": "array",
            "minItems": 4,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {
                    "question": {"type": "string", "minLength": 5, "maxLength": 160},
                    "answer": {"type": "string", "minLength": 2, "maxLength": 320},
                },
                "required": ["question", "answer"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["follow_ups"],
    "additionalProperties": False,
}

# What the LLM writes for each style; the style's own medium, palette, light and camera come from
# styles.json, so five styles never share more than their subject and setting.
_STYLE_PARTS = ("subject", "setting", "details")


def split_phrases(text: str) -> list[str]:
    """The comma-separated phrases of `text`, trimmed. Written text, not AUTOMATIC1111 syntax:
    brackets in an LLM's phrase are no weights."""
    text = as_plain_text(text.replace("\n", " "))
    return [p.strip(" .;") for p in text.split(",") if p.strip(" .;")]


def merge_phrases(*texts: str) -> str:
    """Comma-separated phrases of all `texts`, each once, in order of first appearance."""
    seen: dict[str, str] = {}
    for text in texts:
        for phrase in split_phrases(text):
            seen.setdefault(phrase.lower(), phrase)
    return ", ".join(seen.values())


def fit_parts(
    parts: dict[str, str],
    count: TokenCounter,
    limit: int = CLIP_WINDOW,
    cast: Sequence[str] = (),
    drop_order: Sequence[str] = DROP_ORDER,
    people: Sequence[tuple[str, str]] = (),
) -> str:
    """Join the parts in PART_ORDER; drop phrases in `drop_order` until the prompt fits `limit`.

    `cast`: the descriptors of the people in the picture, most important first, written verbatim
    after the subject. A descriptor is dropped whole, never cut, the least important first (after
    details and composition); the first one stays. `people`: the same as (name, descriptor)
    pairs (`picture_cast`), used after `cast`: where one's descriptor is dropped, their name in
    the other parts (the LLM writes names although it is told not to) becomes the descriptor's
    first phrase ("portly man in his forties"), since the image model does not know the name.
    """
    phrases = {name: split_phrases(parts.get(name, "")) for name in PART_ORDER}
    chosen = [("", d) for d in cast] + list(people)
    persons = [(name, " ".join(d.split())) for name, d in chosen if d.strip()]
    kept = len(persons)

    def joined() -> str:
        dropped = [(name, d) for name, d in persons[kept:] if name]
        texts = {part: [_unnamed(p, dropped) for p in phrases[part]] for part in PART_ORDER}
        subject = ", ".join(texts["subject"] + [d for _, d in persons[:kept]])
        rest = [p for name in PART_ORDER[1:] for p in texts[name]]
        return ", ".join(filter(None, [subject, *rest]))

    def droppable(name: str) -> bool:
        if name == "cast":
            return kept > 1
        return len(phrases[name]) > (1 if name == "subject" else 0)

    text = joined()
    while count(text) > limit:
        victim = next((n for n in drop_order if droppable(n)), None)
        if victim is None:
            return _truncate_words(text, count, limit)
        if victim == "cast":
            kept -= 1
        else:
            phrases[victim].pop()
        text = joined()
    return text


def _unnamed(phrase: str, dropped: Sequence[tuple[str, str]]) -> str:
    """`phrase` with each dropped person's name replaced by their descriptor's first phrase."""
    for name, descriptor in dropped:
        who = split_phrases(descriptor)[0]  # the look's person: build, sex and age
        phrase = re.sub(rf"\b{re.escape(name)}\b", lambda _, who=who: who, phrase)
    return phrase


def fit_text(text: str, count: TokenCounter, limit: int = CLIP_WINDOW) -> str:
    """A comma-separated list shortened from its end until it fits `limit` tokens."""
    phrases = split_phrases(text)
    while len(phrases) > 1 and count(", ".join(phrases)) > limit:
        phrases.pop()
    return _truncate_words(", ".join(phrases), count, limit)


def _truncate_words(text: str, count: TokenCounter, limit: int) -> str:
    words = text.split()
    while len(words) > 1 and count(" ".join(words)) > limit:
        words.pop()
    return " ".join(words).rstrip(",")


# Words of a character's description the episode calls get: enough for who they are (a man, an
# old woman...); their looks are written into the prompt afterwards, word for word, so the rest
# would only cost prompt evaluation (about 2.5 s an episode on 2 cores for the sample's cast).
BRIEF_WORDS = 14


def brief(description: str, words: int = BRIEF_WORDS) -> str:
    """The start of `description`: its first sentence, cut after a comma or at `words` words."""
    sentence = re.split(r"(?<=[.!?])\s", " ".join(description.split()), maxsplit=1)[0]
    kept = sentence.split()
    if len(kept) <= words:
        return sentence
    cut = " ".join(kept[:words])
    return cut[: cut.rfind(",")] if "," in cut else cut


def episode_data(series: Series, episode: Episode) -> dict[str, Any]:
    return {
        "title": episode.title,
        "summary": episode.summary,
        "characters": [
            {"name": c.name, "description": brief(c.description)}
            for c in series.characters_of(episode)
        ],
    }


@dataclass(frozen=True)
class EpisodePrompt:
    spec: PromptSpec
    key: str
    template_hash: str
    cached: bool
    answers: dict[str, str]  # LLM cache key -> the answer as cached, kept in PNGs for recovery
    cast: tuple[str, ...] = ()  # the characters described in the prompt, by their descriptors


def ask_episode(
    llm: LLM, series: Series, episode: Episode, refresh: bool = False, seed: int | None = None
) -> JSONAnswer:
    """The LLM's answer for an episode (meta-prompting): the part that costs an LLM call, and
    the same whatever the characters' looks are, so it can run while they are being written."""
    template = load_template("episode_meta.md")
    messages = template.messages(
        series_title=series.title, episode_json=data_block(episode_data(series, episode))
    )
    schema = episode_schema(list(dict.fromkeys(episode.characters)))
    answer = llm.generate_json(messages, schema, max_tokens=400, refresh=refresh, seed=seed)
    fields = (*PART_ORDER, "negative_prompt")
    answer = english_answer(llm, answer, fields, cast_names(series), refresh)[0]
    return period_answer(answer, PART_ORDER, series)  # never the negative prompt's "modern cars"


def cast_names(series: Series) -> list[str]:
    """Every character's name, as written: kept letter for letter in prompts."""
    return list(
        dict.fromkeys([*series.characters, *(n for e in series.episodes for n in e.characters)])
    )


def episode_prompt(
    series: Series,
    answer: JSONAnswer,
    count: TokenCounter,
    looks: Mapping[str, str] | None = None,
) -> EpisodePrompt:
    """The image prompt from an episode's answer, with each named character's descriptor from
    `looks` (name -> descriptor) written in verbatim, fitted to CLIP's window."""
    texts = [str(answer.data.get(part, "")) for part in PART_ORDER]
    cast = picture_cast(series, answer.data["cast"], looks or {}, texts=texts)
    prompt = fit_parts(answer.data, count, people=cast)
    spec = PromptSpec(
        prompt=prompt,
        negative_prompt=fit_text(
            merge_phrases(answer.data["negative_prompt"], base_negative()), count
        ),
        style=" ".join(answer.data["style"].split()),
        rationale=" ".join(answer.data["rationale"].split()),
    )
    return EpisodePrompt(
        spec,
        answer.key,
        load_template("episode_meta.md").sha256,
        answer.cached,
        {answer.key: answer.text},
        kept_cast(prompt, cast),
    )


def write_episode_prompt(
    llm: LLM,
    series: Series,
    episode: Episode,
    count: TokenCounter,
    refresh: bool = False,
    seed: int | None = None,
    looks: Mapping[str, str] | None = None,
) -> EpisodePrompt:
    """Meta-prompting: the template teaches the LLM to write an SD prompt for this episode.

    The LLM names the people in the picture (`cast`) and describes what they do with plain
    nouns; each one's descriptor from `looks` (name -> descriptor) is then written in verbatim,
    so a character is described with the same words in every prompt. `looks` are not sent to
    the LLM: editing a descriptor changes the prompts without asking the LLM again.
    `seed` (default: the LLM's) picks another of the LLM's possible answers, for a rewrite.
    """
    answer = ask_episode(llm, series, episode, refresh=refresh, seed=seed)
    return episode_prompt(series, answer, count, looks)


@dataclass(frozen=True)
class SeasonPrompts:
    specs: dict[str, PromptSpec]  # style key -> spec, in styles.json order
    trace: list[dict[str, str]]  # the self-ask questions and answers
    key: str
    template_hash: str
    cached: bool
    answers: dict[str, str]  # LLM cache key -> the answer as cached, kept in PNGs for recovery
    cast: dict[str, tuple[str, ...]] = field(default_factory=dict)  # style key -> names described


SEASON_CAST = 2  # the season's most important characters appear on its posters


def season_data(series: Series, season: int) -> dict[str, Any]:
    episodes = series.episodes_of(season)
    names = dict.fromkeys(name for e in episodes for name in e.characters)
    return {
        "title": series.seasons[season].title,
        "summary": series.season_summary(season),
        "episodes": [e.title for e in episodes],
        "characters": [
            {
                "name": n,
                "description": series.characters[n].description if n in series.characters else "",
            }
            for n in list(names)[:8]
        ],
    }


STYLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {part: SHORT_TEXT for part in _STYLE_PARTS},
    "required": list(_STYLE_PARTS),
    "additionalProperties": False,
}


@dataclass(frozen=True)
class SeasonAnswers:
    """The LLM's answers for a season: the self-ask trace, then the 5 styles (`styles`: one
    answer {style key: {subject, setting, details}} made of `parts`, one call per style)."""

    trace: JSONAnswer
    styles: JSONAnswer
    parts: tuple[JSONAnswer, ...]


def ask_season(llm: LLM, series: Series, season: int, refresh: bool = False) -> SeasonAnswers:
    """Self-ask: the LLM asks and answers its follow-up questions, then writes each of the 5
    styles' posters from them, one call per style that sees the posters written before it (so
    that no two show the same moment). The style calls share their season data and trace, which
    the embedded model evaluates once for all five. The same whatever the characters' looks are.
    """
    data_json = data_block(season_data(series, season))
    ask = load_template("season_self_ask.md")
    trace_answer = llm.generate_json(
        ask.messages(series_title=series.title, season_json=data_json),
        SELF_ASK_SCHEMA,
        max_tokens=500,
        refresh=refresh,
    )
    styles = load_styles()
    write = load_template("season_styles.md")
    trace_text = "\n".join(f"Q: {f['question']}\nA: {f['answer']}" for f in _trace(trace_answer))
    parts: list[JSONAnswer] = []
    for style in styles.values():
        earlier = "; ".join(
            f"{styles[k]['name']}: {p.data['subject']}, {p.data['setting']}"
            for k, p in zip(styles, parts, strict=False)
        )
        parts.append(
            llm.generate_json(
                write.messages(
                    series_title=series.title,
                    season_json=data_json,
                    trace_text=trace_text,
                    style_name=style["name"],
                    style_moment=style["moment"],
                    earlier=earlier or "none yet",
                ),
                STYLE_SCHEMA,
                max_tokens=200,
                refresh=refresh,
            )
        )
    key = hashlib.sha256("".join(p.key for p in parts).encode()).hexdigest()
    styles_answer = JSONAnswer(
        {k: p.data for k, p in zip(styles, parts, strict=True)},
        key,
        all(p.cached for p in parts),
    )
    styles_answer = english_nested(llm, styles_answer, _STYLE_PARTS, cast_names(series), refresh)[0]
    styles_answer = apart(llm, series, data_json, styles_answer, refresh)
    styles_answer = period_answer(styles_answer, _STYLE_PARTS, series)
    return SeasonAnswers(trace_answer, styles_answer, tuple(parts))


# Two styles whose own words (subject, setting, details) share more than this are asked again.
MAX_STYLE_OVERLAP = 0.4


def apart(
    llm: LLM, series: Series, data_json: str, answer: JSONAnswer, refresh: bool = False
) -> JSONAnswer:
    """`answer` with each style whose subject, setting and details repeat an earlier style's
    (over MAX_STYLE_OVERLAP of their words) asked again on its own (`season_style_again.md`):
    one call could not keep them apart. The repairs say how many were asked again."""
    styles = load_styles()
    data = json.loads(json.dumps(answer.data))
    asked, repairs, cached = [], list(answer.repairs), answer.cached

    def words(key: str) -> str:
        return ", ".join(str(data[key][part]) for part in _STYLE_PARTS)

    keys = list(styles)
    for number, key in enumerate(keys):
        other = next(
            (k for k in keys[:number] if overlap(words(k), words(key)) > MAX_STYLE_OVERLAP), None
        )
        if other is None:
            continue
        messages = load_template("season_style_again.md").messages(
            series_title=series.title,
            season_json=data_json,
            style_name=styles[key]["name"],
            other_json=data_block(data[other]),
        )
        again = llm.generate_json(messages, STYLE_SCHEMA, max_tokens=200, refresh=refresh)
        again = english_answer(llm, again, _STYLE_PARTS, cast_names(series), refresh)[0]
        data[key] = {part: str(again.data[part]) for part in _STYLE_PARTS}
        asked.append(key)
        cached = cached and again.cached
        repairs += again.repairs
    if not asked:
        return answer
    repairs.append(f"styles {', '.join(asked)} asked again apart (they repeated another style)")
    return JSONAnswer(data, answer.key, cached, tuple(repairs))


def _trace(answer: JSONAnswer) -> list[dict[str, str]]:
    return [
        {"question": " ".join(f["question"].split()), "answer": " ".join(f["answer"].split())}
        for f in answer.data["follow_ups"]
    ]


def season_prompts(
    series: Series,
    season: int,
    answers: SeasonAnswers,
    count: TokenCounter,
    looks: Mapping[str, str] | None = None,
) -> SeasonPrompts:
    """The 5 style prompts from a season's answers; the season's SEASON_CAST most important
    characters that have a descriptor in `looks` are written into each, verbatim."""
    trace = _trace(answers.trace)
    styles = load_styles()
    specs, described = {}, {}
    looks = looks or {}
    ranked = [n for n in series.ranked_characters(season) if looks.get(n, "").strip()]
    in_season = {n for e in series.episodes_of(season) for n in e.characters}
    main = [n for n in ranked if n in in_season][:SEASON_CAST]
    for key, style in styles.items():
        texts = [str(answers.styles.data[key].get(part, "")) for part in _STYLE_PARTS]
        cast = picture_cast(series, main, looks, season, texts=texts)
        parts = {
            **{part: answers.styles.data[key][part] for part in _STYLE_PARTS},
            "lighting": style["lighting"],
            "composition": style["composition"],
            "style": f"{style['style']}, {style['palette']}",
        }
        prompt = fit_parts(parts, count, drop_order=SEASON_DROP_ORDER, people=cast)
        described[key] = kept_cast(prompt, cast)
        specs[key] = PromptSpec(
            prompt=prompt,
            negative_prompt=fit_text(merge_phrases(style["negative"], base_negative()), count),
            style=style["name"],
            rationale=trace[0]["answer"],
        )
    trace_answer, styles_answer = answers.trace, answers.styles
    return SeasonPrompts(
        specs=specs,
        trace=trace,
        key=styles_answer.key,
        template_hash=templates_hash("season_self_ask.md", "season_styles.md"),
        cached=trace_answer.cached and styles_answer.cached,
        answers={
            trace_answer.key: trace_answer.text,
            **{part.key: part.text for part in answers.parts},
        },
        cast=described,
    )


def write_season_prompts(
    llm: LLM,
    series: Series,
    season: int,
    count: TokenCounter,
    refresh: bool = False,
    looks: Mapping[str, str] | None = None,
) -> SeasonPrompts:
    """Self-ask: the LLM asks and answers its follow-up questions, then writes 5 style prompts.

    The season's SEASON_CAST most important characters that have a descriptor in `looks` are
    written into every style's prompt, verbatim (as for episodes).
    """
    return season_prompts(series, season, ask_season(llm, series, season, refresh), count, looks)
