"""The catalog: SQLite (WAL, named migrations) plus content-addressed PNG files, written atomically.

Layout under the data folder: `catalog.sqlite`, `images/ab/abcdef....png` (the name is the file's
sha256). A run killed at any moment leaves no broken file: files are written to a temporary name
and renamed into place, catalog rows are written after their file in one transaction, and stale
temporary files are removed when the store opens.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _run_script(db: sqlite3.Connection, script: str) -> None:
    # Statement by statement: executescript() would commit the migration's open transaction.
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _create_tables(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE images (
            id INTEGER PRIMARY KEY,
            cache_key TEXT NOT NULL UNIQUE,   -- hash of everything that affects the pixels
            sha256 TEXT NOT NULL,             -- of the PNG file, which is also its name
            path TEXT NOT NULL,               -- relative to the data folder
            target TEXT NOT NULL,             -- episode, season or studio
            season INTEGER,
            episode INTEGER,
            style TEXT,
            image_index INTEGER NOT NULL DEFAULT 0,
            prompt TEXT NOT NULL,
            negative_prompt TEXT NOT NULL,
            model TEXT NOT NULL,
            sampler TEXT NOT NULL,
            steps INTEGER NOT NULL,
            cfg REAL NOT NULL,
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            seed INTEGER NOT NULL,
            placeholder INTEGER NOT NULL,     -- 1: made by the untrained demo model
            provenance TEXT NOT NULL,         -- JSON, as in the PNG's studio chunk
            created_at TEXT NOT NULL
        );
        CREATE INDEX images_by_target ON images (target, season, episode, style);
        CREATE TABLE prompts (
            key TEXT PRIMARY KEY,             -- the LLM cache key that produced it
            target TEXT NOT NULL,
            season INTEGER,
            episode INTEGER,
            style TEXT,
            spec TEXT NOT NULL,               -- JSON PromptSpec
            trace TEXT,                       -- JSON self-ask trace, for seasons
            llm_model TEXT NOT NULL,
            template_hash TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX prompts_by_target ON prompts (target, season, episode, style);
        CREATE TABLE llm_cache (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            response TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        """,
    )


def _create_covers(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE covers (
            season INTEGER NOT NULL,
            episode INTEGER NOT NULL,
            cache_key TEXT NOT NULL,          -- the image chosen as the episode's cover
            PRIMARY KEY (season, episode)
        );
        CREATE INDEX images_by_created ON images (created_at)
        """,
    )


def _create_campaigns(db: sqlite3.Connection) -> None:
    _run_script(
        db,
        """
        CREATE TABLE campaigns (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            data TEXT NOT NULL,               -- JSON: the brief and every step's output
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
    )


# Applied in order, once each, and recorded in the `migrations` table.
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_create_tables", _create_tables),
    ("002_covers", _create_covers),
    ("003_campaigns", _create_campaigns),
]


@dataclass(frozen=True)
class ImageRecord:
    cache_key: str
    target: str
    season: int | None
    episode: int | None
    style: str | None
    image_index: int
    prompt: str
    negative_prompt: str
    model: str
    sampler: str
    steps: int
    cfg: float
    width: int
    height: int
    seed: int
    placeholder: bool
    provenance: dict[str, Any]


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` so that `path` is either absent, old, or complete, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """The catalog of one data folder. Safe to share between threads."""

    def __init__(self, data_dir: Path | str):
        self.data_dir = Path(data_dir)
        self.images_dir = self.data_dir / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(
            self.data_dir / "catalog.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._migrate()
        self._remove_stale_temporaries()

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    def _remove_stale_temporaries(self) -> None:
        for tmp in self.images_dir.rglob(f"{TMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)

    # Images ---------------------------------------------------------------------------------

    def image_path(self, row: sqlite3.Row | dict[str, Any]) -> Path:
        return self.data_dir / row["path"]

    def find_image(self, cache_key: str) -> sqlite3.Row | None:
        """The catalog row for `cache_key`, if its file is there too."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM images WHERE cache_key = ?", (cache_key,)
            ).fetchone()
        if row is None or not self.image_path(row).is_file():
            return None
        return row

    def add_image(self, record: ImageRecord, png: bytes) -> sqlite3.Row:
        """Store the PNG under its content hash and record it; re-adding replaces the row."""
        sha = hashlib.sha256(png).hexdigest()
        relative = Path("images") / sha[:2] / f"{sha}.png"
        path = self.data_dir / relative
        if not (path.is_file() and hashlib.sha256(path.read_bytes()).hexdigest() == sha):
            atomic_write(path, png)
        values = {
            **{k: v for k, v in record.__dict__.items() if k != "provenance"},
            "placeholder": int(record.placeholder),
            "provenance": json.dumps(record.provenance, sort_keys=True),
            "sha256": sha,
            "path": relative.as_posix(),
            "created_at": _now(),
        }
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO images ({columns}) VALUES ({marks})",
                tuple(values.values()),
            )
            return self._db.execute(
                "SELECT * FROM images WHERE cache_key = ?", (record.cache_key,)
            ).fetchone()

    def images(self, **where: Any) -> list[sqlite3.Row]:
        """Image rows matching column=value filters, oldest first."""
        clauses = " AND ".join(f"{column} IS ?" for column in where) or "1"
        with self._lock:
            return self._db.execute(
                f"SELECT * FROM images WHERE {clauses} ORDER BY id", tuple(where.values())
            ).fetchall()

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

    def episode_covers(self, season: int) -> dict[int, sqlite3.Row]:
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
        return {row["episode"]: row for row in rows}

    def image_counts(self, season: int) -> dict[int, int]:
        with self._lock:
            rows = self._db.execute(
                "SELECT episode, COUNT(*) FROM images WHERE target = 'episode' AND season = ? "
                "GROUP BY episode",
                (season,),
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    # Prompts --------------------------------------------------------------------------------

    def add_prompt(
        self,
        key: str,
        target: str,
        season: int | None,
        episode: int | None,
        style: str | None,
        spec: dict[str, Any],
        llm_model: str,
        template_hash: str,
        trace: list[dict[str, str]] | None = None,
    ) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO prompts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    target,
                    season,
                    episode,
                    style,
                    json.dumps(spec),
                    None if trace is None else json.dumps(trace),
                    llm_model,
                    template_hash,
                    _now(),
                ),
            )

    def prompts(self, **where: Any) -> list[sqlite3.Row]:
        clauses = " AND ".join(f"{column} IS ?" for column in where) or "1"
        with self._lock:
            return self._db.execute(
                f"SELECT * FROM prompts WHERE {clauses} ORDER BY rowid", tuple(where.values())
            ).fetchall()

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
