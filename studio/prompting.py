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
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template as StringTemplate
from typing import Any

from studio.dataset import Episode, Series
from studio.llm import LLM
from studio.params import CLIP_WINDOW, PromptSpec

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"
TokenCounter = Callable[[str], int]

# The parts of an image prompt, in the order they are written...
PART_ORDER = ("subject", "setting", "details", "lighting", "composition", "style")
# ...and the order in which phrases are dropped when the prompt is too long for CLIP.
DROP_ORDER = ("details", "composition", "lighting", "setting", "style", "subject")
_SHORT = {"type": "string", "minLength": 2, "maxLength": 160}

EPISODE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "rationale": {"type": "string", "minLength": 2, "maxLength": 240},
        **{part: _SHORT for part in PART_ORDER},
        "negative_prompt": {"type": "string", "maxLength": 200},
    },
    "required": ["rationale", *PART_ORDER, "negative_prompt"],
    "additionalProperties": False,
}

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

_STYLE_PARTS = ("subject", "setting", "details", "lighting", "composition")


@dataclass(frozen=True)
class Template:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def messages(self, **values: str) -> list[dict[str, str]]:
        """The chat messages, with `values` substituted; a missing value is an error."""
        sections = re.split(r"^## (system|user)\s*$", self.text, flags=re.MULTILINE)
        messages = []
        for role, body in zip(sections[1::2], sections[2::2], strict=True):
            messages.append(
                {"role": role, "content": StringTemplate(body.strip()).substitute(values)}
            )
        return messages


@cache
def load_template(name: str) -> Template:
    return Template(name, (PROMPTS_DIR / name).read_text(encoding="utf-8"))


@cache
def load_styles() -> dict[str, dict[str, str]]:
    """The 5 season styles: key -> {name, style, negative}."""
    return json.loads((PROMPTS_DIR / "styles.json").read_text(encoding="utf-8"))


@cache
def base_negative() -> str:
    return (PROMPTS_DIR / "negative_base.txt").read_text(encoding="utf-8").strip()


def templates_hash(*names: str) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(load_template(name).sha256.encode())
    return digest.hexdigest()


def _phrases(text: str) -> list[str]:
    return [p.strip(" .;") for p in text.replace("\n", " ").split(",") if p.strip(" .;")]


def merge_phrases(*texts: str) -> str:
    """Comma-separated phrases of all `texts`, each once, in order of first appearance."""
    seen: dict[str, str] = {}
    for text in texts:
        for phrase in _phrases(text):
            seen.setdefault(phrase.lower(), phrase)
    return ", ".join(seen.values())


def fit_parts(parts: dict[str, str], count: TokenCounter, limit: int = CLIP_WINDOW) -> str:
    """Join the parts in PART_ORDER; drop phrases in DROP_ORDER until the prompt fits `limit`."""
    phrases = {name: _phrases(parts.get(name, "")) for name in PART_ORDER}

    def joined() -> str:
        return ", ".join(p for name in PART_ORDER for p in phrases[name])

    text = joined()
    while count(text) > limit:
        victim = next(
            (n for n in DROP_ORDER if len(phrases[n]) > (1 if n == "subject" else 0)), None
        )
        if victim is None:
            return _truncate_words(text, count, limit)
        phrases[victim].pop()
        text = joined()
    return text


def fit_text(text: str, count: TokenCounter, limit: int = CLIP_WINDOW) -> str:
    """A comma-separated list shortened from its end until it fits `limit` tokens."""
    phrases = _phrases(text)
    while len(phrases) > 1 and count(", ".join(phrases)) > limit:
        phrases.pop()
    return _truncate_words(", ".join(phrases), count, limit)


def _truncate_words(text: str, count: TokenCounter, limit: int) -> str:
    words = text.split()
    while len(words) > 1 and count(" ".join(words)) > limit:
        words.pop()
    return " ".join(words).rstrip(",")


def _data_block(data: dict[str, Any]) -> str:
    # JSON keeps the data a quoted value: no text in it can close the block or open a new one.
    return json.dumps(data, ensure_ascii=False, indent=1)


def episode_data(series: Series, episode: Episode) -> dict[str, Any]:
    return {
        "title": episode.title,
        "summary": episode.summary,
        "characters": [
            {"name": c.name, "description": c.description} for c in series.characters_of(episode)
        ],
    }


@dataclass(frozen=True)
class EpisodePrompt:
    spec: PromptSpec
    key: str
    template_hash: str
    cached: bool
    answers: dict[str, str]  # LLM cache key -> the answer as cached, kept in PNGs for recovery


def write_episode_prompt(
    llm: LLM,
    series: Series,
    episode: Episode,
    count: TokenCounter,
    refresh: bool = False,
    seed: int | None = None,
) -> EpisodePrompt:
    """Meta-prompting: the template teaches the LLM to write an SD prompt for this episode.

    `seed` (default: the LLM's) picks another of the LLM's possible answers, for a rewrite.
    """
    template = load_template("episode_meta.md")
    messages = template.messages(
        series_title=series.title, episode_json=_data_block(episode_data(series, episode))
    )
    answer = llm.generate_json(messages, EPISODE_SCHEMA, max_tokens=400, refresh=refresh, seed=seed)
    spec = PromptSpec(
        prompt=fit_parts(answer.data, count),
        negative_prompt=fit_text(
            merge_phrases(answer.data["negative_prompt"], base_negative()), count
        ),
        style=" ".join(answer.data["style"].split()),
        rationale=" ".join(answer.data["rationale"].split()),
    )
    return EpisodePrompt(
        spec, answer.key, template.sha256, answer.cached, {answer.key: answer.text}
    )


@dataclass(frozen=True)
class SeasonPrompts:
    specs: dict[str, PromptSpec]  # style key -> spec, in styles.json order
    trace: list[dict[str, str]]  # the self-ask questions and answers
    key: str
    template_hash: str
    cached: bool
    answers: dict[str, str]  # LLM cache key -> the answer as cached, kept in PNGs for recovery


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


def _styles_schema(keys: list[str]) -> dict[str, Any]:
    style = {
        "type": "object",
        "properties": {part: _SHORT for part in _STYLE_PARTS},
        "required": list(_STYLE_PARTS),
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {key: style for key in keys},
        "required": keys,
        "additionalProperties": False,
    }


def write_season_prompts(
    llm: LLM, series: Series, season: int, count: TokenCounter, refresh: bool = False
) -> SeasonPrompts:
    """Self-ask: the LLM asks and answers its follow-up questions, then writes 5 style prompts."""
    data_json = _data_block(season_data(series, season))
    ask = load_template("season_self_ask.md")
    trace_answer = llm.generate_json(
        ask.messages(series_title=series.title, season_json=data_json),
        SELF_ASK_SCHEMA,
        max_tokens=500,
        refresh=refresh,
    )
    trace = [
        {"question": " ".join(f["question"].split()), "answer": " ".join(f["answer"].split())}
        for f in trace_answer.data["follow_ups"]
    ]
    styles = load_styles()
    write = load_template("season_styles.md")
    trace_text = "\n".join(f"Q: {f['question']}\nA: {f['answer']}" for f in trace)
    styles_answer = llm.generate_json(
        write.messages(
            series_title=series.title,
            season_json=data_json,
            trace_text=trace_text,
            style_keys=", ".join(styles),
            style_list="; ".join(f"{key} = {s['name']}" for key, s in styles.items()),
        ),
        _styles_schema(list(styles)),
        max_tokens=900,
        refresh=refresh,
    )
    specs = {}
    for key, style in styles.items():
        parts = {**styles_answer.data[key], "style": style["style"]}
        specs[key] = PromptSpec(
            prompt=fit_parts(parts, count),
            negative_prompt=fit_text(merge_phrases(style["negative"], base_negative()), count),
            style=style["name"],
            rationale=trace[0]["answer"],
        )
    return SeasonPrompts(
        specs=specs,
        trace=trace,
        key=styles_answer.key,
        template_hash=templates_hash("season_self_ask.md", "season_styles.md"),
        cached=trace_answer.cached and styles_answer.cached,
        answers={trace_answer.key: trace_answer.text, styles_answer.key: styles_answer.text},
    )
