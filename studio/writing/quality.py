"""A scored check of the prompts in a catalog, without any model: what an image model would
waste or get wrong. Printed by the batch job and the benchmark, shown on the Batch jobs page.

    report = check_catalog(store, series, count_tokens)
    report.counts       # check -> how many findings; report.lines() for people

The checks (`CHECKS`), each a list of `Finding`s:

- `clip_window`: prompts longer than CLIP's 77 tokens (the rest is never read);
- `cut_words`: a prompt or look that ends mid-phrase ("in a bun on the", a dangling "blue");
- `non_english`: words of another language in an image prompt or a look (names excepted):
  Stable Diffusion's text encoders were trained on English captions;
- `missing_descriptors`: a character named in a prompt whose look is not written in it;
- `lost_items`: a visible item the character's description names (a raincoat, a ring, a braid)
  that their look lost, in any of the languages below;
- `storyboard_duplicates`: two moments of one storyboard with the same prompt;
- `modern_words`: modern things (a phone, a car, neon) in a series set before them;
- `duplicate_prompts`: two episodes with the same prompt;
- `style_overlap`: two styles of a season sharing more than half their words (`MAX_OVERLAP`).

The language test (`studio.writing.language`) is deliberately cheap: letters with diacritics, and
function words and common visual nouns of Spanish, Portuguese, French, Italian and German that are
not English words.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import TYPE_CHECKING, Any

from studio.core.params import CLIP_WINDOW
from studio.writing.language import (
    ITEMS,
    described_items,
    foreign_words,
    overlap,
    word_set,
)
from studio.writing.period import modern_words, series_year

if TYPE_CHECKING:
    from studio.catalog.store import Store
    from studio.core.dataset import Series

TokenCounter = Callable[[str], int]
CHECKS = (
    "clip_window",
    "cut_words",
    "non_english",
    "missing_descriptors",
    "lost_items",
    "storyboard_duplicates",
    "modern_words",
    "duplicate_prompts",
    "style_overlap",
)
MAX_OVERLAP = 0.5  # the share of words two styles of a season may have in common

# Words a phrase never ends with (a phrase cut short), and a lone colour at the end of a prompt.
DANGLING = word_set(
    "a an the of on in at with and or to for from by into onto over under his her their its very"
)
COLOURS = word_set(
    "red blue green yellow black white grey gray brown pink purple orange gold silver"
)


@dataclass(frozen=True)
class Finding:
    check: str
    label: str  # what it is about: "S01E03", "S01 film_noir / S01 anime", "character Marta"
    detail: str


@dataclass
class QualityReport:
    """Findings by check, and how many prompts and looks were checked."""

    prompts: int = 0
    looks: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(CHECKS, 0)
        for finding in self.findings:
            counts[finding.check] += 1
        return counts

    @property
    def clean(self) -> bool:
        return not self.findings

    def of(self, check: str) -> list[Finding]:
        return [finding for finding in self.findings if finding.check == check]

    def summary(self) -> str:
        """One line: `Prompt quality: 24 prompts, 6 looks; 0 over CLIP's window, ...`."""
        counts = self.counts
        labels = {
            "clip_window": "over CLIP's window",
            "cut_words": "cut words",
            "non_english": "non-English",
            "missing_descriptors": "missing descriptors",
            "lost_items": "lost items",
            "storyboard_duplicates": "repeated storyboard moments",
            "modern_words": "modern words",
            "duplicate_prompts": "duplicate prompts",
            "style_overlap": "overlapping styles",
        }
        parts = ", ".join(f"{counts[check]} {labels[check]}" for check in CHECKS)
        return f"Prompt quality: {self.prompts} prompts, {self.looks} looks; {parts}."

    def lines(self, limit: int = 20) -> list[str]:
        """The summary, then the findings (the first `limit`)."""
        shown = [f"  {f.check}: {f.label}: {f.detail}" for f in self.findings[:limit]]
        more = len(self.findings) - limit
        return [self.summary(), *shown, *([f"  ... and {more} more"] if more > 0 else [])]

    def as_dict(self) -> dict[str, Any]:
        return {
            "prompts": self.prompts,
            "looks": self.looks,
            "counts": self.counts,
            "findings": [vars(f) for f in self.findings],
        }


# The single checks -------------------------------------------------------------------------------


def ends_cut(text: str) -> str | None:
    """The dangling end of `text` when it stops mid-phrase ("on the", a lone colour), else None."""
    phrases = [p.strip() for p in text.split(",") if p.strip()]
    if not phrases:
        return None
    last = phrases[-1]
    words = last.lower().split()
    if words and words[-1] in DANGLING:
        return last
    if len(phrases) > 1 and len(words) == 1 and words[0] in COLOURS:
        return last
    return None


def lost_items(description: str, look: str) -> list[str]:
    """The items `description` names (in any of ITEMS' languages) that `look` does not."""
    kept = look.lower()
    return [
        item
        for item in described_items(description)
        if not any(re.search(rf"\b{re.escape(word)}s?\b", kept) for word in ITEMS[item][0])
    ]


# The whole check ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompted:
    """One image prompt to check: what it is for and its text."""

    label: str
    kind: str  # character, episode, season, storyboard
    text: str
    group: str = ""  # season styles: the season; storyboard moments: the storyboard


def check_prompts(
    prompts: Sequence[Prompted],
    looks: Mapping[str, str],
    descriptions: Mapping[str, str],
    count: TokenCounter,
    year: int | None = None,
) -> QualityReport:
    """Every check over `prompts` and the characters' `looks` (name -> descriptor, English) with
    their `descriptions` (name -> the data's description, any language); `year`: a period
    series' year (`series_year`), None for a series of today."""
    report = QualityReport(prompts=len(prompts), looks=len(looks))
    add = report.findings.append
    names = [*looks, *descriptions]
    for name, look in looks.items():
        label = f"character {name}"
        if foreign := foreign_words(look, names):
            add(Finding("non_english", label, ", ".join(foreign)))
        if cut := ends_cut(look):
            add(Finding("cut_words", label, f"ends with {cut!r}"))
        if lost := lost_items(descriptions.get(name, ""), look):
            add(Finding("lost_items", label, ", ".join(lost)))
    for item in prompts:
        if (tokens := count(item.text)) > CLIP_WINDOW:
            add(Finding("clip_window", item.label, f"{tokens} tokens"))
        if cut := ends_cut(item.text):
            add(Finding("cut_words", item.label, f"ends with {cut!r}"))
        if foreign := foreign_words(item.text, names):
            add(Finding("non_english", item.label, ", ".join(foreign)))
        for name, look in looks.items():
            named = re.search(rf"\b{re.escape(name)}\b", item.text) is not None
            if named and " ".join(look.split()) not in item.text:
                add(Finding("missing_descriptors", item.label, name))
        if year is not None and (modern := modern_words(item.text, year)):
            add(Finding("modern_words", item.label, ", ".join(modern)))
    _pairs(report, prompts)
    return report


def _pairs(report: QualityReport, prompts: Sequence[Prompted]) -> None:
    add = report.findings.append
    groups: dict[tuple[str, str], list[Prompted]] = defaultdict(list)
    for item in prompts:
        groups[(item.kind, item.group)].append(item)
    for (kind, _), members in groups.items():
        for first, second in combinations(members, 2):
            if kind == "storyboard" and _same(first.text, second.text):
                add(Finding("storyboard_duplicates", f"{first.label} / {second.label}", "same"))
            if kind == "season" and (share := overlap(first.text, second.text)) > MAX_OVERLAP:
                add(Finding("style_overlap", f"{first.label} / {second.label}", f"{share:.0%}"))
    episodes = [item for item in prompts if item.kind == "episode"]
    seen: dict[str, str] = {}
    for item in episodes:
        key = " ".join(item.text.lower().split())
        if key in seen:
            add(Finding("duplicate_prompts", f"{seen[key]} / {item.label}", "same prompt"))
        else:
            seen[key] = item.label


def _same(first: str, second: str) -> bool:
    return " ".join(first.lower().split()) == " ".join(second.lower().split())


def check_catalog(store: Store, series: Series, count: TokenCounter) -> QualityReport:
    """The checks over the catalog's newest prompt for every target, the cast's current looks,
    and every episode's newest storyboard."""
    from studio.writing.storyboards import stored_storyboard

    newest: dict[tuple, Prompted] = {}
    for record in store.prompts():
        target = record.target
        if target.kind not in ("episode", "season", "character"):
            continue
        label = target.label()
        group = f"S{target.season}" if target.kind == "season" else ""
        newest[(target.kind, target.season, target.episode, target.style)] = Prompted(
            label, target.kind, record.spec.prompt, group
        )
    prompts = [p for p in newest.values() if p.kind != "character"]
    for episode in series.episodes:
        board = stored_storyboard(store, episode.season, episode.episode)
        if board is None:
            continue
        for number, moment in enumerate(board.moments, 1):
            label = f"S{episode.season:02d}E{episode.episode:02d} moment {number}"
            prompts.append(Prompted(label, "storyboard", moment.spec.prompt, board.key))
    looks = {name: record.descriptor for name, record in store.characters().items()}
    descriptions = {name: c.description for name, c in series.characters.items()}
    return check_prompts(prompts, looks, descriptions, count, year=series_year(series))
