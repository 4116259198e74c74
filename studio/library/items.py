"""Catalog rows as library items: what each image or prompt record is for, and what it came from."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Provenance entries that name the image or prompts a new one was made from.
LINEAGE_KEYS = ("revision", "reality", "improved")


def parents_of(provenance: dict[str, Any]) -> tuple[str, ...]:
    """The refs (image cache keys, prompt record keys) an image was revised or improved from."""
    found: list[str] = []
    for key in LINEAGE_KEYS:
        entry = provenance.get(key)
        if not isinstance(entry, dict):
            continue
        source = entry.get("from")
        if isinstance(source, str):
            found.append(source)
        elif isinstance(source, list):
            found += [str(ref) for ref in source]
        if isinstance(entry.get("prompt_key"), str):
            found.append(entry["prompt_key"])
    return tuple(dict.fromkeys(found))


def image_item(row: sqlite3.Row) -> NewItem | None:
    if not str(row["prompt"]).strip():
        return None
    provenance = json.loads(row["provenance"] or "{}")
    return NewItem(
        text=row["prompt"],
        kind="image",
        ref=row["cache_key"],
        target=row["target"],
        season=row["season"],
        episode=row["episode"],
        style=row["style"],
        model=row["model"],
        placeholder=bool(row["placeholder"]),
        image_key=row["cache_key"],
        width=row["width"],
        height=row["height"],
        parents=parents_of(provenance),
        created_at=row["created_at"],
    )


def prompt_item(row: sqlite3.Row) -> NewItem | None:
    spec = json.loads(row["spec"])
    text = str(spec.get("prompt") or "").strip()
    if not text:
        return None
    trace = json.loads(row["trace"]) if row["trace"] else []
    parents = [
        step["ref"] for step in trace if isinstance(step, dict) and isinstance(step.get("ref"), str)
    ]
    return NewItem(
        text=text,
        kind="prompt",
        ref=row["key"],
        target=row["target"],
        season=row["season"],
        episode=row["episode"],
        style=row["style"],
        parents=tuple(parents),
        created_at=row["created_at"],
    )


@dataclass(frozen=True)
class NewItem:
    """Something that uses a prompt text: a catalog image, a prompt record, an imported row."""

    text: str
    kind: str  # image, prompt or import
    ref: str
    target: str | None = None
    season: int | None = None
    episode: int | None = None
    style: str | None = None
    model: str | None = None
    placeholder: bool | None = None
    image_key: str | None = None
    url: str | None = None
    width: int | None = None
    height: int | None = None
    source_site: str | None = None
    parents: tuple[str, ...] = ()
    created_at: str = ""


@dataclass(frozen=True)
class LibraryItem:
    id: int
    text_id: int
    kind: str
    ref: str
    target: str | None
    season: int | None
    episode: int | None
    style: str | None
    model: str | None
    placeholder: bool | None
    image_key: str | None
    url: str | None
    width: int | None
    height: int | None
    source_site: str | None
    parents: tuple[str, ...] = field(default=())
    created_at: str = ""

    @classmethod
    def from_row(cls, row: sqlite3.Row | Mapping[str, Any]) -> LibraryItem:
        values = {name: row[name] for name in row.keys()}  # noqa: SIM118 - a Row or a dict
        placeholder = values["placeholder"]
        return cls(
            **{
                **values,
                "placeholder": None if placeholder is None else bool(placeholder),
                "parents": tuple(json.loads(values["parents"] or "[]")),
            }
        )

    @property
    def label(self) -> str:
        if self.kind == "import":
            return f"{self.source_site or 'imported'} #{self.ref.split(':', 1)[-1]}"
        if self.target == "episode" and self.season is not None:
            return f"S{self.season:02d}E{self.episode:02d}"
        if self.target == "season" and self.season is not None:
            return f"S{self.season:02d} {self.style or ''}".strip()
        return " ".join(str(part) for part in (self.target, self.style) if part)
