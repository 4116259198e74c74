"""Importing prompt collections from CSV, in the common shape `id,prompt,url,width,height,
source_site` (the 900k Diffusion Prompts dataset's): id and prompt are required, the rest optional.

Rows are checked one by one and the bad ones skipped with their reason (empty prompt, longer than
the studio's one prompt limit `studio.core.params.MAX_PROMPT`, an id seen before); the file as a
whole is refused, before anything is added, when it is not UTF-8 text or lacks a required column.
Each row is named `source_site:id`, so a reimport adds nothing twice and an import that was
stopped goes on where it stopped.
"""

from __future__ import annotations

import codecs
import csv
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from studio.core.errors import LibraryImportError
from studio.core.params import MAX_PROMPT
from studio.library.items import NewItem

if TYPE_CHECKING:
    from studio.library.backends.base import LibraryDB

REQUIRED = ("id", "prompt")
OPTIONAL = ("url", "width", "height", "source_site")
BATCH = 1000
EXAMPLES = 5  # problems quoted in the report, per reason


@dataclass
class ImportReport:
    path: Path
    rows: int = 0  # data rows read
    added: int = 0
    duplicates: int = 0  # ids imported before, or repeated in the file
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> rows
    examples: list[str] = field(default_factory=list)  # "line 12: empty prompt"
    stopped: bool = False
    embedded: int = 0
    seconds: float = 0.0

    def skip(self, line: int, reason: str) -> None:
        self.skipped[reason] += 1
        if self.skipped[reason] <= EXAMPLES:
            self.examples.append(f"line {line}: {reason}")

    def summary(self) -> str:
        parts = [f"{self.added:,} prompts added from {self.rows:,} rows of {self.path.name}"]
        if self.duplicates:
            parts.append(f"{self.duplicates:,} already in the library")
        parts += [f"{count:,} skipped: {reason}" for reason, count in self.skipped.items()]
        if self.stopped:
            parts.append("stopped: run the import again to go on where it stopped")
        return "; ".join(parts) + f" ({self.seconds:.1f} s)."


def check_encoding(path: Path) -> None:
    """Refuse a file that is not UTF-8 text, naming the line of the first bad byte."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk[: exc.start].count(b"\n")
                raise LibraryImportError(
                    f"{path} is not UTF-8 text (a byte that UTF-8 does not allow on line {line}). "
                    "Save it as UTF-8 (e.g. in a spreadsheet: CSV UTF-8) and import it again; "
                    "nothing was added."
                ) from None
            line += chunk.count(b"\n")


def _size(value: str | None) -> int | None:
    try:
        number = int(float(value)) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and 0 < number <= 100_000 else None


def _count_lines(path: Path) -> int:
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))


def import_rows(
    db: LibraryDB,
    path: Path,
    source_site: str | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ImportReport:
    """Add `path`'s rows to the library (not their vectors); the report says what happened."""
    started = time.perf_counter()
    path = Path(path).expanduser()
    if not path.is_file():
        raise LibraryImportError(f"{path} does not exist; give the path of a CSV file.")
    check_encoding(path)
    total = max(_count_lines(path) - 1, 1)
    report = ImportReport(path)
    default_site = (source_site or path.stem).strip() or "import"
    now = datetime.now(UTC).isoformat(timespec="seconds")
    seen: set[str] = set()
    batch: list[tuple[int, NewItem]] = []

    def flush() -> None:
        known = db.existing_refs("import", [item.ref for _, item in batch])
        fresh = [item for _, item in batch if item.ref not in known]
        report.duplicates += len(batch) - len(fresh)
        report.added += db.add_items(fresh)
        batch.clear()
        if on_progress is not None:
            on_progress("Reading rows", min(report.rows, total), total)

    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [name.strip().lower() for name in reader.fieldnames or []]
        missing = [name for name in REQUIRED if name not in header]
        if missing:
            raise LibraryImportError(
                f"{path} has no {' or '.join(missing)} column (its header: "
                f"{', '.join(reader.fieldnames or ['(empty)'])}). The columns are "
                f"{','.join(REQUIRED + OPTIONAL)}; id and prompt are required. Nothing was added."
            )
        reader.fieldnames = header
        try:
            for row in reader:
                report.rows += 1
                line = reader.line_num
                prompt = (row.get("prompt") or "").strip()
                ident = (row.get("id") or "").strip()
                site = (row.get("source_site") or "").strip() or default_site
                if not ident:
                    report.skip(line, "no id")
                    continue
                if not prompt:
                    report.skip(line, "empty prompt")
                    continue
                if len(prompt) > MAX_PROMPT:
                    report.skip(line, f"prompt longer than {MAX_PROMPT:,} characters")
                    continue
                ref = f"{site}:{ident}"
                if ref in seen:
                    report.skip(line, "id repeated in the file")
                    continue
                seen.add(ref)
                item = NewItem(
                    text=prompt,
                    kind="import",
                    ref=ref,
                    target="import",
                    url=(row.get("url") or "").strip() or None,
                    width=_size(row.get("width")),
                    height=_size(row.get("height")),
                    source_site=site,
                    created_at=now,
                )
                batch.append((line, item))
                if len(batch) >= BATCH:
                    flush()
                    if should_stop is not None and should_stop():
                        report.stopped = True
                        break
        except csv.Error as exc:
            flush()
            raise LibraryImportError(
                f"{path} line {reader.line_num} is not valid CSV ({exc}); the {report.added:,} "
                "rows before it were added. Fix the line and import again (nothing is added "
                "twice)."
            ) from None
        if batch:
            flush()
    report.seconds = time.perf_counter() - started
    return report
