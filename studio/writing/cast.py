"""The series' cast: each character's look as a descriptor that every prompt reuses verbatim.

A descriptor is a few comma-separated visual phrases (who, face, hair, clothing, palette) short
enough that two fit beside a scene in CLIP's 77 tokens. The LLM writes it, with a portrait prompt,
from the character's description and the summaries of the episodes they are in (the
`character_look.md` template; the data goes in as JSON, never as instructions). Looks are kept in
the catalog, versioned: a person's edit is a new version and the newest is the one used.
Characters that were never written get their data's description, shortened, without an LLM call.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from studio.catalog.records import CharacterRecord, StoredImage
from studio.catalog.store import Store
from studio.core.dataset import Series
from studio.core.errors import DatasetError, StudioError
from studio.core.params import CLIP_WINDOW
from studio.llm.client import LLM, JSONAnswer
from studio.writing.english import english_answer
from studio.writing.language import ITEMS, described_items, foreign_words
from studio.writing.prompting import (
    TokenCounter,
    cast_names,
    data_block,
    fit_parts,
    fit_text,
    load_template,
    split_phrases,
)
from studio.writing.quality import DANGLING, lost_items

LOOK_ORDER = ("person", "face", "hair", "clothing", "palette")
LOOK_DROP = ("palette", "hair", "face", "clothing")  # the person phrase always stays
DESCRIPTOR_TOKENS = 24  # BOS and EOS included: two descriptors and a scene fit in 77
PORTRAIT_FRAMING = "head and shoulders portrait"
PORTRAIT_STYLE = "detailed character portrait painting, sharp focus"
PORTRAIT_NEGATIVE = "several people, cropped head, text, watermark"
_WORDS = {"type": "string", "minLength": 2, "maxLength": 120}
LOOK_FIELDS = (*LOOK_ORDER, "expression", "background", "lighting")
CHARACTER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {name: _WORDS for name in LOOK_FIELDS},
    "required": list(LOOK_FIELDS),
    "additionalProperties": False,
}
# Words of a name that say nothing of who it is, when looking for the character in summaries.
_TITLES = {"mr", "mrs", "miss", "ms", "dr", "sir", "lord", "lady", "the", "of", "inspector",
           "colonel", "captain", "major", "professor", "old", "king", "queen"}  # fmt: skip
MAX_APPEARANCES = 4  # episodes quoted to the LLM for one character
MAX_NAME = 120


@dataclass(frozen=True)
class CharacterLook:
    """A look the LLM wrote (or the data's description, shortened), before it is stored."""

    name: str
    descriptor: str
    portrait: str  # the portrait prompt, with the descriptor in it verbatim
    source: str  # "llm" or "description"
    key: str | None = None  # the LLM answer's cache key
    cached: bool = False
    answers: dict[str, str] | None = None  # LLM cache key -> answer, kept in PNGs for recovery
    note: str = ""
    repairs: tuple[str, ...] = ()  # what was fixed in the LLM's answer (English), for the report


def check_name(series: Series, name: str) -> str:
    """`name` as the series spells it; a clear error when no table or episode has it."""
    name = " ".join(str(name).split())
    known = cast_names(series)
    if name in known:
        return name
    folded = {n.casefold(): n for n in known}
    if name.casefold() in folded:
        return folded[name.casefold()]
    close = [n for n in known if name.casefold() in n.casefold()][:5]
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise DatasetError(f"No character {name!r} in {series.title}.{hint}")


def _name_words(name: str) -> list[str]:
    words = re.findall(r"[\w'-]+", name)
    return [w for w in words if w[:1].isupper() and w.lower().strip(".") not in _TITLES]


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def character_data(series: Series, name: str) -> dict[str, Any]:
    """What the LLM gets for one character: the description and the sentences of the summaries
    that mention them (the first sentence where none does), from up to MAX_APPEARANCES
    episodes."""
    words = _name_words(name)
    appears = []
    for episode in series.episodes_with(name)[:MAX_APPEARANCES]:
        sentences = _sentences(episode.summary)
        about = [s for s in sentences if any(re.search(rf"\b{re.escape(w)}\b", s) for w in words)]
        appears.append({"episode": episode.title, "moments": " ".join((about or sentences)[:2])})
    character = series.characters.get(name)
    return {
        "name": name,
        "description": character.description if character else "",
        "appears_in": appears,
    }


def note_for(series: Series, name: str) -> str:
    """What to report about where a character's look came from ("" when the data has it)."""
    episodes = len(series.episodes_with(name))
    source = f"written from {episodes} episode summar{'y' if episodes == 1 else 'ies'}"
    if name not in series.characters:
        return f"not in the characters table; {source}"
    if not series.characters[name].description:
        return f"no description in the characters table; {source}"
    return ""


def _short_phrase(phrase: str, words: int = 8, keep: Sequence[str] = ()) -> str:
    """A phrase's first clause, at most `words` words, never ending on a dangling word: "dark
    frock coat or a dressing gown with a pipe" -> "dark frock coat"; with `keep` ("pipe"), the
    clauses that name a kept item stay too: "dark frock coat, a pipe"."""
    clauses = re.split(r"\s+(?:or|with|and|while|holding|carrying)\s+", phrase)
    chosen = [clauses[0], *(c for c in clauses[1:] if _names_any(c, keep))]
    return ", ".join(_whole(" ".join(c.split()[:words])) for c in chosen if c.strip())


def _whole(text: str) -> str:
    """`text` without the words a cut leaves dangling at its end ("in a bun on the")."""
    words = text.split()
    while len(words) > 1 and words[-1].lower() in DANGLING:
        words.pop()
    return " ".join(words)


def _names_any(text: str, words: Sequence[str]) -> bool:
    return any(re.search(rf"(?i)\b{re.escape(word)}s?\b", text) for word in words)


_LABEL = re.compile(r"^\s*[a-z][a-z ]{0,20}:\s*", re.IGNORECASE)


def clean_field(text: str, name: str) -> str:
    """A look field as phrases an image model can use: no name (the model does not know the
    characters; small LLMs write them anyway), no "build:"-style labels, each phrase once."""
    words = [re.escape(w) for w in [name, *_name_words(name)] if w]
    named = re.compile(rf"(?i)\b(?:{'|'.join(words)})\b(?:'s)?") if words else None
    kept: dict[str, str] = {}
    for phrase in split_phrases(text.replace(";", ",")):
        phrase = _LABEL.sub("", phrase)
        if named is not None:
            phrase = named.sub("", phrase)
        phrase = " ".join(phrase.split()).strip(" .:-")
        if phrase and not re.fullmatch(r"(?i)(a|an|the|his|her|their)", phrase):
            kept.setdefault(phrase.lower(), phrase)
    return ", ".join(kept.values())


def item_words(description: str) -> list[str]:
    """Every English word for the visible items `description` names ("coat", "overcoat", "frock
    coat"... for an overcoat): a look's phrase that says any of them keeps the item."""
    return [word for item in described_items(description) for word in ITEMS[item][0]]


def fit_descriptor(parts: dict[str, str], count: TokenCounter, keep: Sequence[str] = ()) -> str:
    """The look's phrases in LOOK_ORDER, each cut to its first clause, within DESCRIPTOR_TOKENS:
    first every field's extra phrases go, then whole fields (in LOOK_DROP order). Phrases that
    name a `keep` item (the description's raincoat, ring) go last. A lone colour of the palette
    becomes "<colour> tones", so that it never reads as a cut word."""
    phrases = {
        name: [
            p
            for x in split_phrases(parts.get(name, ""))
            for p in split_phrases(_short_phrase(x, keep=keep))
        ]
        for name in LOOK_ORDER
    }
    phrases["palette"] = [f"{p} tones" if len(p.split()) == 1 else p for p in phrases["palette"]]
    seen: set[str] = set()
    for name in LOOK_ORDER:  # a phrase once, in its first field
        phrases[name] = [p for p in phrases[name] if not (p.lower() in seen or seen.add(p.lower()))]

    def joined() -> str:
        return ", ".join(p for name in LOOK_ORDER for p in phrases[name])

    def droppable(name: str, least: int) -> int | None:
        """The index of `name`'s last phrase that names no kept item, if it has over `least`."""
        if len(phrases[name]) <= least:
            return None
        free = [i for i, p in enumerate(phrases[name]) if not _names_any(p, keep)]
        return free[-1] if free else None

    text = joined()
    while count(text) > DESCRIPTOR_TOKENS:
        victim = next(
            (
                (n, i)
                for least in (1, 0)
                for n in LOOK_DROP
                if (i := droppable(n, least)) is not None
            ),
            None,
        )
        if victim is None:
            return fit_text(text, count, DESCRIPTOR_TOKENS)
        phrases[victim[0]].pop(victim[1])
        text = joined()
    return text


def portrait_prompt(descriptor: str, parts: dict[str, str], count: TokenCounter) -> str:
    """A reference portrait of the character: the descriptor verbatim, a plain backdrop."""
    framing = ", ".join(filter(None, [PORTRAIT_FRAMING, parts.get("expression", "")]))
    scene = {
        "subject": framing,
        "setting": parts.get("background", "plain backdrop"),
        "lighting": parts.get("lighting", "soft light"),
        "style": PORTRAIT_STYLE,
    }
    return fit_parts(scene, count, CLIP_WINDOW, cast=[descriptor])


def write_look(
    llm: LLM, series: Series, name: str, count: TokenCounter, refresh: bool = False
) -> CharacterLook:
    """The LLM's look for `name` (cached like every LLM answer)."""
    name = check_name(series, name)
    template = load_template("character_look.md")
    messages = template.messages(
        series_title=series.title, character_json=data_block(character_data(series, name))
    )
    answer = llm.generate_json(messages, CHARACTER_SCHEMA, max_tokens=300, refresh=refresh)
    answer = english_answer(llm, answer, LOOK_FIELDS, cast_names(series), refresh)[0]
    parts = {key: clean_field(str(value), name) for key, value in answer.data.items()}
    description = series.characters[name].description if name in series.characters else ""
    answers = {answer.key: answer.text}
    repairs = list(answer.repairs)
    if lost := lost_items(description, ", ".join(parts.values())):  # the LLM left them out
        kept = keep_items(llm, series, name, description, parts, lost, refresh)
        parts["clothing"] = clean_field(str(kept.data["clothing"]), name)
        answers[kept.key] = kept.text
        repairs += [*kept.repairs, f"kept {', '.join(lost)} from the description"]
        if still := lost_items(description, ", ".join(parts.values())):  # named, at the least
            parts["clothing"] = ", ".join([*split_phrases(parts["clothing"]),
                                           *(ITEMS[item][0][0] for item in still)])  # fmt: skip
            repairs.append(f"added {', '.join(still)}, which the rewrite left out too")
    keep = item_words(description)
    descriptor = fit_descriptor(parts, count, keep)
    return CharacterLook(
        name=name,
        descriptor=descriptor,
        portrait=portrait_prompt(descriptor, parts, count),
        source="llm",
        key=answer.key,
        cached=answer.cached,
        answers=answers,
        note=note_for(series, name),
        repairs=tuple(repairs),
    )


def keep_items(
    llm: LLM,
    series: Series,
    name: str,
    description: str,
    parts: dict[str, str],
    items: Sequence[str],
    refresh: bool = False,
) -> JSONAnswer:
    """The clothing field written again with the `items` the description names and the look
    left out (`look_items.md`), in English."""
    data = {"description": description, "look": {k: parts.get(k, "") for k in LOOK_ORDER}}
    messages = load_template("look_items.md").messages(
        items=", ".join(items), look_json=data_block(data)
    )
    schema = {
        "type": "object",
        "properties": {"clothing": _WORDS},
        "required": ["clothing"],
        "additionalProperties": False,
    }
    answer = llm.generate_json(messages, schema, max_tokens=80, refresh=refresh)
    return english_answer(llm, answer, ["clothing"], cast_names(series), refresh)[0]


def described_look(series: Series, name: str, count: TokenCounter) -> str:
    """The data's description cut to a descriptor ("" without one): no LLM call."""
    character = series.characters.get(name)
    if character is None or not character.description:
        return ""
    if foreign_words(character.description, cast_names(series)):
        return ""  # another language: no use to the image model until the LLM writes the look
    first = _sentences(character.description)[0].rstrip(".")
    return fit_text(re.sub(r"\s+(with|and|who|wearing)\s+", ", ", first), count, DESCRIPTOR_TOKENS)


def portrait_of(store: Store, name: str) -> StoredImage | None:
    """The newest portrait of `name`'s current look, else of any earlier look, else None."""
    portraits = store.images(target="character", style=name)
    current = store.character(name)
    version = current.version if current else None
    of_current = [
        p for p in portraits if (p.provenance.get("character") or {}).get("version") == version
    ]
    chosen = of_current or portraits
    return chosen[-1] if chosen else None


def keeps_look(current: CharacterRecord | None, refresh: bool) -> bool:
    """Whether a stored look stands: yes unless asked to `refresh`, and always for a person's
    edit (nothing the LLM writes replaces it)."""
    return current is not None and (not refresh or current.source == "edit")


def save_look(store: Store, look: CharacterLook) -> CharacterRecord:
    """Record a written look as the character's newest version (none when nothing changed)."""
    return store.add_character(
        look.name, look.descriptor, look.portrait, look.source, look.key, look.note
    )


def current_looks(store: Store, series: Series, count: TokenCounter) -> dict[str, str]:
    """name -> the descriptor prompts use: the catalog's newest version, else the data's
    description shortened (characters without either are described by the scene alone)."""
    stored = {name: record.descriptor for name, record in store.characters().items()}
    looks = {}
    for name in series.ranked_characters():
        look = stored.get(name) or described_look(series, name, count)
        if look:
            looks[name] = look
    return looks


def cast_for_job(series: Series, mode: str, names: list[str] | None = None) -> list[str]:
    """The characters the batch job writes looks and portraits for, the most important first.

    `mode` "cast": those in the characters table or in 2 or more episodes; "all": everyone;
    "none": no one. `names` limits it to the characters of the chosen episodes.
    """
    if mode == "none":
        return []
    ranked = series.ranked_characters()
    if mode == "cast":
        ranked = [n for n in ranked if n in series.characters or len(series.episodes_with(n)) >= 2]
    if names is not None:
        wanted = set(names)
        ranked = [n for n in ranked if n in wanted]
    return ranked


def edit_look(
    store: Store,
    series: Series,
    name: str,
    descriptor: str,
    count: TokenCounter,
    portrait: str | None = None,
) -> CharacterRecord:
    """A person's new version of `name`'s look. Without `portrait`, the current portrait prompt
    gets the new descriptor in place of the old one."""
    name = check_name(series, name)
    descriptor = ", ".join(split_phrases(descriptor))
    if not descriptor:
        raise StudioError(f"The descriptor of {name} is empty; describe how they look.")
    tokens = count(descriptor)
    if tokens > DESCRIPTOR_TOKENS:
        raise StudioError(
            f"The descriptor of {name} is {tokens} CLIP tokens long; keep it at "
            f"{DESCRIPTOR_TOKENS} or fewer, so that two people and a scene fit in one prompt. "
            "Nothing was saved."
        )
    current = store.character(name)
    if portrait is None or not portrait.strip():
        old = current.descriptor if current else ""
        if current is not None and old and old in current.portrait:
            portrait = current.portrait.replace(old, descriptor)
        else:
            portrait = portrait_prompt(descriptor, {}, count)
    portrait = " ".join(portrait.split())
    if descriptor not in portrait:
        raise StudioError(
            f"The portrait prompt of {name} has to contain the descriptor word for word, so the "
            "portrait shows the same person as every other image. Nothing was saved."
        )
    if count(portrait) > CLIP_WINDOW:
        raise StudioError(
            f"The portrait prompt of {name} is {count(portrait)} CLIP tokens long; CLIP reads "
            f"{CLIP_WINDOW}. Shorten it. Nothing was saved."
        )
    return store.add_character(name, descriptor, portrait, "edit", note="edited")
