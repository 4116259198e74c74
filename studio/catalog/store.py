"""The catalog: SQLite (WAL, named migrations) plus content-addressed PNG files, written atomically.

Layout under the data folder: `catalog.sqlite`, `images/ab/abcdef....png` (the name is the file's
sha256). A run killed at any moment leaves no broken file and no half-recorded image: files are
written to a temporary name and renamed into place inside the transaction that adds their row, and
when the store opens it removes stale temporaries, drops rows whose file is gone and adopts PNGs
that have no row (a kill between the rename and the commit) from their own metadata.

A catalog that is damaged, unreadable, not ours, or empty while images lie beside it is never
taken as new: opening it raises `CatalogError` naming the file and the fix
(`studio.catalog.recovery` rebuilds it from the PNGs)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from studio.catalog.files import TMP_PREFIX, atomic_write, unwritable_error
from studio.catalog.records import (
    JSON_TUPLES,
    REFUSED,
    STATUSES,
    CharacterRecord,
    ImageRecord,
    OpenReport,
    PromptRecord,
    SafetyVerdict,
    StoredImage,
    record_from_png,
)
from studio.catalog.schema import MIGRATIONS
from studio.core.config import setting
from studio.core.errors import CatalogError
from studio.core.metadata import json_safe

CATALOG_NAME = "catalog.sqlite"
RECOVER_HINT = (
    "Rebuild it from the images' own metadata with `python dataprep.py --recover` (the old file "
    "is kept aside)"
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Store:
    """The catalog of one data folder. Safe to share between threads.

    `rebuilding=True` skips the refusal of an empty catalog beside existing images: only the
    recovery, which fills it from those images, opens a store that way.
    """

    def __init__(self, data_dir: Path | str, *, rebuilding: bool = False):
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.catalog_path = self.data_dir / CATALOG_NAME
        self.opened = OpenReport()
        self._lock = threading.RLock()
        try:
            self.images_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unwritable_error(self.data_dir, exc) from None
        if not rebuilding:
            self._refuse_hollow_catalog()
        self._db: sqlite3.Connection | None = None
        try:
            self._db = sqlite3.connect(
                self.catalog_path, check_same_thread=False, isolation_level=None
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout=10000")
            self._check_catalog()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
            self._remove_stale_temporaries()
            self._sweep()
        except sqlite3.DatabaseError as exc:
            if self._db is not None:
                self._db.close()
            raise self._open_error(exc) from None
        except OSError as exc:
            if self._db is not None:
                self._db.close()
            raise unwritable_error(self.data_dir, exc) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _pngs(self) -> list[Path]:
        return [p for p in self.images_dir.rglob("*.png") if not p.name.startswith(TMP_PREFIX)]

    def _refuse_hollow_catalog(self) -> None:
        """An empty or missing catalog beside existing images would orphan them all: refuse."""
        path = self.catalog_path
        if path.is_file() and path.stat().st_size > 0:
            return
        images = len(self._pngs())
        if images:
            state = "empty (0 bytes)" if path.exists() else "missing"
            raise CatalogError(
                f"The catalog {path} is {state}, but {images} image"
                f"{' is' if images == 1 else 's are'} in {self.images_dir}. "
                f"{RECOVER_HINT}."
            )

    def _check_catalog(self) -> None:
        """Raise unless the file is a readable catalog of ours (or a new, empty database)."""
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(5)")]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(problems))
        tables = [
            row[0]
            for row in self._db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
        ]
        if tables and "migrations" not in tables:
            raise CatalogError(
                f"{self.catalog_path} is not a series studio catalog (its tables: "
                f"{', '.join(tables[:8])}). Move it away, or set {setting('data_dir')} to "
                "another folder; nothing was changed."
            )

    def _open_error(self, exc: sqlite3.DatabaseError) -> CatalogError:
        message = str(exc)
        if (
            "readonly" in message
            or "unable to open" in message
            or not os.access(self.data_dir, os.W_OK)
        ):
            return unwritable_error(self.data_dir, exc)
        return CatalogError(
            f"The catalog {self.catalog_path} is damaged or unreadable ({message}). {RECOVER_HINT}."
        )

    def _migrate(self) -> None:
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
            )
            done = {row[0] for row in self._db.execute("SELECT name FROM migrations")}
            for name, migrate in MIGRATIONS:
                if name in done:
                    continue
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    migrate(self._db)
                    self._db.execute("INSERT INTO migrations VALUES (?, ?)", (name, _now()))
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise

    def _sweep(self) -> None:
        """No row without its image, no image without its row."""
        with self._lock:
            rows = self._db.execute("SELECT cache_key, path FROM images").fetchall()
        known = {row["path"] for row in rows}
        gone = [row["cache_key"] for row in rows if not (self.data_dir / row["path"]).is_file()]
        if gone:
            with self._lock:
                self._db.executemany(
                    "DELETE FROM images WHERE cache_key = ?", [(key,) for key in gone]
                )
            self.opened.dropped = len(gone)
        for path in sorted(self._pngs(), key=lambda p: (p.stat().st_mtime_ns, p.name)):
            if path.relative_to(self.data_dir).as_posix() not in known and self.adopt_png(path):
                self.opened.adopted += 1

    def _remove_stale_temporaries(self) -> None:
        for tmp in self.images_dir.rglob(f"{TMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)

    # Images ---------------------------------------------------------------------------------

    def image_path(self, row: sqlite3.Row | dict[str, Any]) -> Path:
        return self.data_dir / row["path"]

    def find_image(self, cache_key: str) -> StoredImage | None:
        """The catalog row for `cache_key`, if its file is there too."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM images WHERE cache_key = ?", (cache_key,)
            ).fetchone()
        if row is None or not self.image_path(row).is_file():
            return None
        return StoredImage.from_row(row)

    def add_image(
        self, record: ImageRecord, png: bytes, safety: SafetyVerdict | None = None
    ) -> StoredImage:
        """Store the PNG under its content hash and record it; re-adding replaces the row.

        The row and the file are one unit: the file is renamed into place inside the row's
        transaction, so a failed write leaves neither. `safety`: the safety filter's verdict,
        recorded in the same transaction (None: made with no filter; an older verdict goes).
        """
        sha = hashlib.sha256(png).hexdigest()
        relative = Path("images") / sha[:2] / f"{sha}.png"
        path = self.data_dir / relative
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._insert_image(record, sha, relative, "INSERT OR REPLACE", _now())
                self._set_verdict(record.cache_key, safety)
                if not (path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha):
                    atomic_write(path, png)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return StoredImage.from_row(
                self._db.execute(
                    "SELECT * FROM images WHERE cache_key = ?", (record.cache_key,)
                ).fetchone()
            )

    def _insert_image(
        self, record: ImageRecord, sha: str, relative: Path, verb: str, created_at: str
    ) -> None:
        values = {
            **{f.name: getattr(record, f.name) for f in fields(ImageRecord)},
            "placeholder": int(record.placeholder),
            "long_prompt": int(record.long_prompt),
            **{
                name: None if getattr(record, name) is None else json.dumps(getattr(record, name))
                for name in JSON_TUPLES
            },
            "provenance": json.dumps(json_safe(record.provenance), sort_keys=True, allow_nan=False),
            "sha256": sha,
            "path": relative.as_posix(),
            "created_at": created_at,
        }
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        self._db.execute(f"{verb} INTO images ({columns}) VALUES ({marks})", tuple(values.values()))

    def adopt_png(self, path: Path) -> bool:
        """Record a PNG already in the images folder from its own metadata; False if it can't be.

        A row already there for its cache key wins (the file is then a superseded copy). The
        safety verdict in its provenance, if any, is recorded again too.
        """
        record = record_from_png(path)
        if record is None:
            return False
        created = datetime.fromtimestamp(path.stat().st_mtime, UTC).isoformat(timespec="seconds")
        with self._lock:
            before = self._db.total_changes
            self._insert_image(
                record, path.stem, path.relative_to(self.data_dir), "INSERT OR IGNORE", created
            )
            adopted = self._db.total_changes > before
            verdict = record.provenance.get("safety")
            if adopted and isinstance(verdict, dict) and verdict.get("status") in STATUSES:
                self._set_verdict(record.cache_key, SafetyVerdict(**verdict), created)
            return adopted

    # Safety verdicts (studio.images.safety) -------------------------------------------------------

    def _set_verdict(
        self,
        cache_key: str,
        verdict: SafetyVerdict | None,
        created_at: str | None = None,
        prompt: str | None = None,
    ) -> None:
        if verdict is None:
            self._db.execute("DELETE FROM image_flags WHERE cache_key = ?", (cache_key,))
            return
        self._db.execute(
            "INSERT OR REPLACE INTO image_flags VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                cache_key,
                verdict.status,
                verdict.reason,
                verdict.checker,
                verdict.score,
                prompt,
                created_at or _now(),
            ),
        )

    def add_refusal(self, cache_key: str, prompt: str, verdict: SafetyVerdict) -> None:
        """Record that an image server refused the request `cache_key` (no image is stored)."""
        with self._lock:
            self._set_verdict(cache_key, verdict, prompt=prompt)

    def safety(self, cache_key: str) -> SafetyVerdict | None:
        """The safety verdict on an image (or a refused request); None: never checked."""
        with self._lock:
            row = self._db.execute(
                "SELECT status, reason, checker, score FROM image_flags WHERE cache_key = ?",
                (cache_key,),
            ).fetchone()
        return None if row is None else SafetyVerdict(*row)

    def refusals(self, limit: int = 20) -> list[tuple[str, str, SafetyVerdict, str]]:
        """The latest requests an image server refused: (cache key, prompt, verdict, when)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT cache_key, prompt, status, reason, checker, score, created_at "
                "FROM image_flags WHERE status = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
                (REFUSED, limit),
            ).fetchall()
        return [(r[0], r[1] or "", SafetyVerdict(*r[2:6]), r[6]) for r in rows]

    def insert_rows(self, table: str, rows: list[tuple[Any, ...]]) -> int:
        """Add whole rows to `table` unless their key is there already; how many were added."""
        if not rows:
            return 0
        marks = ", ".join("?" for _ in rows[0])
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(f"INSERT OR IGNORE INTO {table} VALUES ({marks})", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return self._db.total_changes - before

    # Input images (init images, masks) --------------------------------------------------------

    def input_path(self, sha: str) -> Path:
        return self.data_dir / "inputs" / sha[:2] / f"{sha}.png"

    def add_input(self, png: bytes) -> str:
        """Keep an input image by content; its sha256 names it in requests."""
        sha = hashlib.sha256(png).hexdigest()
        path = self.input_path(sha)
        if not path.is_file():
            atomic_write(path, png)
        return sha

    def input_image(self, sha: str) -> Image.Image:
        """An input image by its sha256, decoded."""
        path = self.input_path(sha)
        if not path.is_file():
            raise CatalogError(
                f"The input image {sha[:12]}… is not in {path.parent.parent}; give the image again."
            )
        with Image.open(path) as image:
            image.load()
            return image.copy()

    def _select(self, table: str, where: dict[str, Any]) -> list[sqlite3.Row]:
        """Rows of `table` matching column=value filters (None matches NULL), oldest first."""
        clauses = " AND ".join(f"{column} IS ?" for column in where) or "1"
        with self._lock:
            return self._db.execute(
                f"SELECT * FROM {table} WHERE {clauses} ORDER BY rowid", tuple(where.values())
            ).fetchall()

    def images(self, **where: Any) -> list[StoredImage]:
        """Images matching column=value filters, oldest first."""
        return [StoredImage.from_row(row) for row in self._select("images", where)]

    def next_image_index(self, target: str, season: int | None, episode: int | None) -> int:
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(image_index) FROM images WHERE target IS ? AND season IS ? "
                "AND episode IS ?",
                (target, season, episode),
            ).fetchone()
        return 0 if row[0] is None else row[0] + 1

    def set_cover(self, season: int, episode: int, cache_key: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO covers VALUES (?, ?, ?)", (season, episode, cache_key)
            )

    def cover_keys(self, season: int) -> dict[int, str]:
        with self._lock:
            rows = self._db.execute(
                "SELECT episode, cache_key FROM covers WHERE season = ?", (season,)
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def episode_covers(self, season: int) -> dict[int, StoredImage]:
        """Each episode's cover image of `season`: the chosen one, else its first image."""
        with self._lock:
            rows = self._db.execute(
                """
                SELECT images.* FROM images
                LEFT JOIN covers ON covers.season = images.season
                    AND covers.episode = images.episode
                WHERE images.target = 'episode' AND images.season = ?
                    AND (covers.cache_key IS NULL OR covers.cache_key = images.cache_key)
                ORDER BY images.id DESC
                """,
                (season,),
            ).fetchall()
        # Oldest last, so the first image wins when no cover was chosen.
        return {row["episode"]: StoredImage.from_row(row) for row in rows}

    def image_counts(self, season: int) -> dict[int, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT episode, COUNT(*) FROM images WHERE target = 'episode' AND season = ? "
                "GROUP BY episode",
                (season,),
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    # CLIP scores ----------------------------------------------------------------------------

    def add_scores(self, clip_model: str, rows: list[tuple[str, str, str, float]]) -> None:
        """Record CLIP scores, rows of (cache_key, kind, label, cosine); a score already there
        for the same image, model, kind and label is kept (it is the same number)."""
        now = _now()
        with self._lock:
            self._db.executemany(
                "INSERT OR IGNORE INTO image_scores VALUES (?, ?, ?, ?, ?, ?)",
                [(key, clip_model, kind, label, float(score), now) for key, kind, label, score
                 in rows],
            )  # fmt: skip

    def scores(
        self, cache_keys: list[str], clip_model: str, kind: str | None = None
    ) -> dict[str, dict[tuple[str, str], float]]:
        """cache key -> {(kind, label): cosine} of the model's scores of those images (of one
        `kind`, or all); an image without scores is missing."""
        found: dict[str, dict[tuple[str, str], float]] = {}
        for start in range(0, len(cache_keys), 500):  # SQLite's limit on bound values
            chunk = cache_keys[start : start + 500]
            marks = ", ".join("?" for _ in chunk)
            query = (
                f"SELECT cache_key, kind, label, score FROM image_scores WHERE clip_model = ? "
                f"AND cache_key IN ({marks})" + (" AND kind = ?" if kind else "")
            )
            values = (clip_model, *chunk, *((kind,) if kind else ()))
            with self._lock:
                rows = self._db.execute(query, values).fetchall()
            for row in rows:
                found.setdefault(row[0], {})[(row[1], row[2])] = row[3]
        return found

    # Prompts --------------------------------------------------------------------------------

    def add_prompt(self, record: PromptRecord) -> None:
        """Record a prompt the LLM wrote (re-adding its key replaces it)."""
        self.add_prompts([record])

    def add_prompts(self, records: list[PromptRecord], replace: bool = True) -> int:
        """Record prompts; with `replace=False` a key already there is kept. How many were added."""
        rows = [
            (
                r.key,
                r.target.kind,
                r.target.season,
                r.target.episode,
                r.target.style,
                json.dumps(r.spec.to_dict()),
                None if r.trace is None else json.dumps(r.trace),
                r.llm_model,
                r.template_hash,
                r.created_at or _now(),
            )
            for r in records
        ]
        verb = "INSERT OR REPLACE" if replace else "INSERT OR IGNORE"
        with self._lock:
            before = self._db.total_changes
            self._db.executemany(f"{verb} INTO prompts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            return self._db.total_changes - before

    def prompts(self, **where: Any) -> list[PromptRecord]:
        """Prompts matching column=value filters (target, season, episode, style), oldest first."""
        return [PromptRecord.from_row(row) for row in self._select("prompts", where)]

    # LLM response cache -----------------------------------------------------------------------

    def get_llm_response(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT response FROM llm_cache WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else row[0]

    def put_llm_response(self, key: str, model: str, response: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO llm_cache VALUES (?, ?, ?, ?)",
                (key, model, response, _now()),
            )

    # Characters -------------------------------------------------------------------------------

    def add_character(
        self,
        name: str,
        descriptor: str,
        portrait: str,
        source: str,
        llm_key: str | None = None,
        note: str = "",
    ) -> CharacterRecord:
        """A new version of `name`'s look; the current one when nothing changed."""
        with self._lock:
            current = self.character(name)
            if current is not None and (current.descriptor, current.portrait) == (
                descriptor,
                portrait,
            ):
                return current
            version = 1 if current is None else current.version + 1
            self._db.execute(
                "INSERT INTO characters VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, descriptor, portrait, source, llm_key, note, _now()),
            )
            return self.character(name)  # type: ignore[return-value]

    def character(self, name: str, version: int | None = None) -> CharacterRecord | None:
        """`name`'s current look, or the given version of it."""
        query = "SELECT * FROM characters WHERE name = ?"
        if version is None:
            row_query, values = query + " ORDER BY version DESC LIMIT 1", (name,)
        else:
            row_query, values = query + " AND version = ?", (name, version)
        with self._lock:
            row = self._db.execute(row_query, values).fetchone()
        return None if row is None else CharacterRecord.from_row(row)

    def character_versions(self, name: str) -> list[CharacterRecord]:
        """Every version of `name`'s look, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM characters WHERE name = ? ORDER BY version", (name,)
            ).fetchall()
        return [CharacterRecord.from_row(row) for row in rows]

    def characters(self) -> dict[str, CharacterRecord]:
        """Every character's current look, by name."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM characters c WHERE version = "
                "(SELECT MAX(version) FROM characters WHERE name = c.name) ORDER BY rowid"
            ).fetchall()
        return {row["name"]: CharacterRecord.from_row(row) for row in rows}

    def images_with(self, name: str) -> list[StoredImage]:
        """Images whose prompt describes `name` (their provenance's `cast`), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM images WHERE EXISTS (SELECT 1 FROM json_each(images.provenance, "
                "'$.cast') WHERE json_each.value = ?) ORDER BY id",
                (name,),
            ).fetchall()
        return [StoredImage.from_row(row) for row in rows]

    # Batch jobs -------------------------------------------------------------------------------

    def start_job(
        self,
        executor: str,
        selection: str,
        host: str,
        pid: int,
        llm: str = "",
        llm_concurrency: int = 0,
    ) -> int:
        now = _now()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO jobs (started_at, updated_at, status, stage, executor, selection, "
                "host, pid, llm, llm_concurrency) VALUES (?, ?, 'running', 'prompts', ?, ?, ?, ?, "
                "?, ?)",
                (now, now, executor, selection, host, pid, llm, llm_concurrency),
            )
            return int(cursor.lastrowid)

    def update_job(self, job_id: int, **values: Any) -> None:
        """Set columns of the job's row (`failures` and `seconds` as Python values)."""
        allowed = {"status", "stage", "finished_at", "prompts_done", "prompts_total",
                   "images_done", "images_total", "failures", "seconds", "llm_calls"}  # fmt: skip
        unknown = set(values) - allowed
        if unknown:
            raise ValueError(f"not job columns: {sorted(unknown)}")
        for name in ("failures", "seconds"):
            if name in values:
                values[name] = json.dumps(values[name], ensure_ascii=False)
        values["updated_at"] = _now()
        columns = ", ".join(f"{name} = ?" for name in values)
        with self._lock:
            self._db.execute(f"UPDATE jobs SET {columns} WHERE id = ?", (*values.values(), job_id))

    def jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest batch jobs' rows, newest first (see studio.catalog.job_log.JobRecord)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM jobs ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        found = []
        for row in rows:
            values = dict(row)
            values["failures"] = json.loads(values["failures"])
            values["seconds"] = json.loads(values["seconds"])
            found.append(values)
        return found

    # Denoising strips (studio.images.strips) ----------------------------------------------------

    def add_strip(self, values: dict[str, Any], png: bytes) -> dict[str, Any]:
        """Store a strip's PNG under strips/ by content and record it (the `strips` table's
        columns but path, sha256 and created_at); re-adding replaces the row. The row as stored."""
        sha = hashlib.sha256(png).hexdigest()
        relative = Path("strips") / sha[:2] / f"{sha}.png"
        row = {
            **values,
            "steps": json.dumps(list(values["steps"])),
            "path": relative.as_posix(),
            "sha256": sha,
            "created_at": _now(),
        }
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                columns, marks = ", ".join(row), ", ".join("?" for _ in row)
                self._db.execute(
                    f"INSERT OR REPLACE INTO strips ({columns}) VALUES ({marks})",
                    tuple(row.values()),
                )
                if not (self.data_dir / relative).is_file():
                    atomic_write(self.data_dir / relative, png)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return self.find_strip(values["cache_key"], values["every"], values["decoder"])  # type: ignore[return-value]

    def find_strip(self, cache_key: str, every: int, decoder: str) -> dict[str, Any] | None:
        """The strip row of an image for `every` and `decoder` (steps as a list), if its file
        is there too."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM strips WHERE cache_key = ? AND every = ? AND decoder = ?",
                (cache_key, every, decoder),
            ).fetchone()
        if row is None or not (self.data_dir / row["path"]).is_file():
            return None
        return {**dict(row), "steps": json.loads(row["steps"])}

    # Campaigns --------------------------------------------------------------------------------

    def save_campaign(self, campaign_id: str, name: str, data: dict[str, Any]) -> None:
        now = _now()
        with self._lock:
            self._db.execute(
                "INSERT INTO campaigns VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "name = excluded.name, data = excluded.data, updated_at = excluded.updated_at",
                (campaign_id, name, json.dumps(data, ensure_ascii=False), now, now),
            )

    def campaign(self, campaign_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT data FROM campaigns WHERE id = ?", (campaign_id,)
            ).fetchone()
        return None if row is None else json.loads(row[0])

    def campaigns(self) -> list[sqlite3.Row]:
        """Saved campaigns' id, name and times, newest first."""
        with self._lock:
            return self._db.execute(
                "SELECT id, name, created_at, updated_at FROM campaigns ORDER BY updated_at DESC, "
                "rowid DESC"
            ).fetchall()
