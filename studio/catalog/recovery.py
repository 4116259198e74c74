"""Rebuild a damaged or lost catalog from the PNGs' own metadata: `python dataprep.py --recover`.

Every PNG the studio writes carries its full provenance (the request, the target, the prompt's
LLM answers and template hash), so the images, the prompts (episode, season and storyboard
moments), the character looks and the LLM cache can be rebuilt from the image files alone; a
denoising strip's PNG under strips/ carries its catalog row (STRIP_KEY), so the strips come back
too. The old catalog file is moved aside, never deleted, and whatever can still be read from it
(covers, campaigns, prompts, LLM answers and strips that no file carries) is salvaged.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from studio.catalog.files import TMP_PREFIX
from studio.catalog.records import ImageRecord, PromptRecord
from studio.catalog.store import CATALOG_NAME, Store
from studio.core.targets import PromptSpec, Target

# The text chunk of a denoising strip's PNG (studio.images.strips) that holds its catalog row as
# JSON: the `strips` table's columns but path, sha256 and created_at.
STRIP_KEY = "studio_strip"

# Tables salvaged from the old file, row by row, as far as they can be read.
# The prompt library's tables too (imported rows exist nowhere else), texts before what refers to
# them; not its sync watermarks, which count the old file's image ids.
SALVAGED_TABLES = (
    "prompts", "llm_cache", "covers", "campaigns", "characters", "library_texts", "library_items",
    "library_vectors", "image_hashes", "image_scores", "strips",
)  # fmt: skip


@dataclass
class RecoveryReport:
    images: int = 0  # PNGs recorded again
    unreadable: list[str] = field(default_factory=list)  # PNGs without usable studio metadata
    prompts: int = 0  # prompt records rebuilt from the PNGs
    llm_answers: int = 0  # LLM cache entries rebuilt from the PNGs
    characters: int = 0  # character looks rebuilt from their portraits
    strips: int = 0  # denoising strips recorded again from their PNGs
    salvaged: dict[str, int] = field(default_factory=dict)  # table -> rows read from the old file
    kept_aside: Path | None = None  # where the old catalog now is

    def lines(self) -> list[str]:
        lines = [
            f"Images recovered: {self.images}"
            + (f" ({len(self.unreadable)} PNGs had no studio metadata)" if self.unreadable else ""),
            f"Prompts rebuilt from the images: {self.prompts}; LLM answers: {self.llm_answers}; "
            f"character looks: {self.characters}; denoising strips: {self.strips}",
        ]
        if self.salvaged:
            lines.append(
                "Read from the old catalog: "
                + ", ".join(f"{count} {table}" for table, count in self.salvaged.items())
            )
        if self.kept_aside:
            lines.append(f"The old catalog is kept at {self.kept_aside}")
        return lines


def _move_aside(data_dir: Path) -> Path | None:
    catalog = data_dir / CATALOG_NAME
    if not catalog.exists():
        return None
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    aside = data_dir / f"catalog.broken-{stamp}.sqlite"
    for suffix in ("", "-wal", "-shm"):  # the WAL holds committed rows not yet in the main file
        source = Path(f"{catalog}{suffix}")
        if source.exists():
            source.rename(f"{aside}{suffix}")
    return aside


def _salvage(old: Path, store: Store, report: RecoveryReport) -> None:
    """Copy what rows of the old file can still be read; stop a table at its first bad page."""
    try:
        db = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
    except sqlite3.DatabaseError:
        return
    try:
        for table in SALVAGED_TABLES:
            rows: list[tuple[Any, ...]] = []
            try:
                cursor = db.execute(f"SELECT * FROM {table}")
                while (row := cursor.fetchone()) is not None:
                    rows.append(tuple(row))
            except sqlite3.DatabaseError:
                pass  # damaged past here, or no such table: keep what was read
            added = store.insert_rows(table, rows)
            if added:
                report.salvaged[table] = added
    finally:
        db.close()


def _moment_records(record: ImageRecord) -> list[PromptRecord]:
    """The storyboard moment a panel's provenance describes (as studio.writing.storyboards
    `moment_records` keeps it: `<storyboard key>:<moment>`, the moment's title its rationale)."""
    provenance = record.provenance
    index, board = provenance.get("moment"), provenance.get("storyboard")
    if not isinstance(index, int) or not isinstance(board, str) or not board:
        return []
    title = provenance.get("moment_title", "")
    return [
        PromptRecord(
            f"{board}:{index}",
            Target("storyboard", record.season, record.episode, str(index)),
            PromptSpec(record.prompt, record.negative_prompt, "", title),
            provenance.get("llm_model", ""),
            provenance.get("template_hash", ""),
            [{"question": f"Moment {index + 1}", "answer": title}],
        )
    ]


def _prompt_records(record: ImageRecord) -> list[PromptRecord]:
    """The prompt an image's provenance describes, if it was made from one."""
    provenance = record.provenance
    key = provenance.get("prompt_key")
    if record.target == "storyboard":
        return _moment_records(record)
    if not key or record.target not in {"episode", "season"}:
        return []
    spec = PromptSpec(
        record.prompt,
        record.negative_prompt,
        provenance.get("prompt_style", ""),
        provenance.get("rationale", ""),
    )
    # The PNG's JSON has its keys sorted: put each step back in the order it was recorded.
    trace = provenance.get("trace")
    if trace is not None:
        trace = [{"question": step["question"], "answer": step["answer"]} for step in trace]
    return [
        PromptRecord(
            key if record.target == "episode" else f"{key}:{record.style}",
            record.target_of,
            spec,
            provenance.get("llm_model", ""),
            provenance.get("template_hash", ""),
            trace,
        )
    ]


def _character_rows(record: ImageRecord, now: str) -> list[tuple[Any, ...]]:
    """The character look a portrait's provenance describes (portraits carry theirs whole)."""
    look = record.provenance.get("character")
    if record.target != "character" or not isinstance(look, dict):
        return []
    try:
        return [
            (
                look["name"],
                int(look["version"]),
                look["descriptor"],
                look["portrait"],
                look.get("source", "llm"),
                look.get("llm_key"),
                look.get("note", ""),
                look.get("created_at") or now,
            )
        ]
    except (KeyError, TypeError, ValueError):
        return []


def _strip_rows(data_dir: Path) -> list[tuple[Any, ...]]:
    """The `strips` rows the strip PNGs under `data_dir/strips` carry (older ones carry none)."""
    rows = []
    for path in sorted((data_dir / "strips").rglob("*.png")):
        if path.name.startswith(TMP_PREFIX):
            continue
        try:
            with Image.open(path) as image:
                values = json.loads(image.info[STRIP_KEY])
            created = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            difference = values["max_difference"]
            rows.append(
                (  # the `strips` table's columns, in order
                    str(values["cache_key"]),
                    int(values["every"]),
                    str(values["decoder"]),
                    path.relative_to(data_dir).as_posix(),
                    path.stem,  # named by its sha256
                    json.dumps([int(step) for step in values["steps"]]),
                    int(values["total"]),
                    int(values["frame_width"]),
                    int(values["frame_height"]),
                    int(values["columns"]),
                    None if difference is None else int(difference),
                    created.isoformat(timespec="seconds"),
                )
            )
        except (OSError, KeyError, TypeError, ValueError):
            continue  # not a strip PNG of ours, or one written before strips carried their row
    return rows


def recover_catalog(data_dir: Path | str) -> RecoveryReport:
    """Move the catalog aside and rebuild it from the PNGs under `data_dir/images`."""
    data_dir = Path(data_dir)
    report = RecoveryReport(kept_aside=_move_aside(data_dir))
    store = Store(data_dir, rebuilding=True)  # its opening sweep adopts every PNG
    try:
        report.images = store.opened.adopted
        prompts: list[PromptRecord] = []
        answers: list[tuple[Any, ...]] = []
        recorded = {row["path"] for row in store.images()}
        for path in sorted(store.images_dir.rglob("*.png")):
            if path.relative_to(data_dir).as_posix() not in recorded:
                report.unreadable.append(str(path))
        now = datetime.now(UTC).isoformat(timespec="seconds")
        looks: list[tuple[Any, ...]] = []
        for record in store.images():
            provenance = record.provenance
            prompts += _prompt_records(record)
            looks += _character_rows(record, now)
            for key, text in (provenance.get("llm_answers") or {}).items():
                answers.append((key, provenance.get("llm_model", ""), text, now))
        report.prompts = store.add_prompts(prompts, replace=False)
        report.llm_answers = store.insert_rows("llm_cache", answers)
        report.characters = store.insert_rows("characters", looks)
        report.strips = store.insert_rows("strips", _strip_rows(data_dir))
        if report.kept_aside is not None:
            _salvage(report.kept_aside, store, report)
    finally:
        store.close()
    return report
