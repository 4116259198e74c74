"""Catalog rows as library items: what each image or prompt record is for, and what it came from."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from studio.library_db import NewItem

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
