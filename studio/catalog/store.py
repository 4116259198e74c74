"""The catalog: SQLite (WAL, named migrations) plus content-addressed PNG files, written atomically.

Layout under the data folder: `catalog.sqlite`, `images/ab/abcdef....png` (the name is the file's
sha256). A run killed at any moment leaves no broken file and no half-recorded image: files are
written to a temporary name and renamed into place inside the transaction that adds their row, and
when the store opens it removes stale temporaries, drops rows whose file is gone and adopts PNGs
that have no row (a kill between the rename and the commit) from their own metadata.

A catalog that is damaged, unreadable, not ours, or empty while images lie beside it is never
taken as new: opening it raises `CatalogError` naming the file and the fix (`studio.recovery`
rebuilds it from the PNGs).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from studio.catalog.records import REFUSED, STATUSES, SafetyVerdict
from studio.core.config import setting
from studio.core.errors import CatalogError
from studio.core.metadata import json_safe, parse_parameters
from studio.core.params import REQUEST_FIELDS, PromptSpec, RenderRequest, Target

TMP_PREFIX = ".tmp-"
CATALOG_NAME = "catalog.sqlite"
RECOVER_HINT = (
    "Rebuild it from the images' own metadata with `python dataprep.py --recover` (the old file "
    "is kept aside)"
)


def _file_mode() -> int:
    # The permissions a plain open() would give, as for the catalog itself (mkstemp uses 0600).
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


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


def _add_modes(db: sqlite3.Connection) -> None:
    # init_image and mask_image: sha256 of files in inputs/; outpaint: JSON [left, right, up,
    # down]. (No comments in the SQL: ADD COLUMN copies them into the table's schema text.)
    _run_script(
        db,
        """
        ALTER TABLE images ADD COLUMN mode TEXT NOT NULL DEFAULT 'txt2img';
        ALTER TABLE images ADD COLUMN strength REAL;
        ALTER TABLE images ADD COLUMN init_image TEXT;
        ALTER TABLE images ADD COLUMN mask_image TEXT;
        ALTER TABLE images ADD COLUMN outpaint TEXT
        """,
    )


def _add_characters(db: sqlite3.Connection) -> None:
    # characters: every version of every character's descriptor (the newest is current);
    # images get the IP-Adapter reference (sha256 of a file in inputs/) and its scale.
    _run_script(
        db,
        """
        CREATE TABLE characters (
            name TEXT NOT NULL,
            version INTEGER NOT NULL,
            descriptor TEXT NOT NULL,
            portrait TEXT NOT NULL,
            source TEXT NOT NULL,
            llm_key TEXT,
            note TEXT NOT NULL DEFAULT '',
            created_at TEXT NOT NULL,
            PRIMARY KEY (name, version)
        );
        ALTER TABLE images ADD COLUMN reference_image TEXT;
        ALTER TABLE images ADD COLUMN reference_scale REAL
        """,
    )


def _add_library(db: sqlite3.Connection) -> None:
    # The prompt library (studio.library): every distinct prompt text once, the things that use
    # it (catalog images, prompt records, imported rows, improved ideas), vectors per embedding
    # space (the usearch index beside the catalog is rebuilt from them), perceptual hashes.
    _run_script(
        db,
        """
        CREATE TABLE library_texts (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
        CREATE TABLE library_items (
            id INTEGER PRIMARY KEY,
            text_id INTEGER NOT NULL REFERENCES library_texts (id),
            kind TEXT NOT NULL,               -- image, prompt or import
            ref TEXT NOT NULL,                -- cache key, prompt record key, site:id
            target TEXT,
            season INTEGER,
            episode INTEGER,
            style TEXT,
            model TEXT,
            placeholder INTEGER,
            image_key TEXT,
            url TEXT,
            width INTEGER,
            height INTEGER,
            source_site TEXT,
            parents TEXT NOT NULL DEFAULT '[]', -- JSON: refs it was improved or revised from
            created_at TEXT NOT NULL,
            UNIQUE (kind, ref)
        );
        CREATE INDEX library_items_by_text ON library_items (text_id);
        CREATE TABLE library_vectors (
            space TEXT NOT NULL,              -- embedder name (ids: texts, or items for images)
            id INTEGER NOT NULL,
            vector BLOB NOT NULL,             -- float32, unit length
            PRIMARY KEY (space, id)
        );
        CREATE TABLE library_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        CREATE TABLE image_hashes (
            item_id INTEGER PRIMARY KEY,      -- a library item with an image
            phash INTEGER NOT NULL            -- 64-bit perceptual hash, as a signed integer
        )
        """,
    )


def _add_jobs(db: sqlite3.Connection) -> None:
    # Batch jobs (studio.jobs): what each run of dataprep.py did and how far it got, for the
    # dashboard's Batch jobs page; a running job updates its row as it goes.
    _run_script(
        db,
        """
        CREATE TABLE jobs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,             -- running, finished, failed, stopped
            stage TEXT NOT NULL,              -- prompts, images, done
            executor TEXT NOT NULL,
            selection TEXT NOT NULL,
            prompts_done INTEGER NOT NULL DEFAULT 0,
            prompts_total INTEGER NOT NULL DEFAULT 0,
            images_done INTEGER NOT NULL DEFAULT 0,
            images_total INTEGER NOT NULL DEFAULT 0,
            failures TEXT NOT NULL DEFAULT '[]',  -- JSON: "what: why"
            seconds TEXT NOT NULL DEFAULT '{}',   -- JSON: stage -> seconds
            host TEXT NOT NULL,
            pid INTEGER NOT NULL
        )
        """,
    )


def _add_prompt_controls(db: sqlite3.Connection) -> None:
    # long_prompt: 1 when a prompt past 77 tokens was encoded in chunks; blend_prompt and blend:
    # prompt interpolation's other prompt and how far towards it (0..1).
    _run_script(
        db,
        """
        ALTER TABLE images ADD COLUMN long_prompt INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE images ADD COLUMN blend_prompt TEXT;
        ALTER TABLE images ADD COLUMN blend REAL
        """,
    )


def _add_controlnet(db: sqlite3.Connection) -> None:
    # Guided generation (ControlNet): the control map's sha256 in inputs/, its type (scribble,
    # lineart, canny, depth), how strongly it steers (0..2) and between which fractions of the
    # denoising (start < end).
    _run_script(
        db,
        """
        ALTER TABLE images ADD COLUMN control_image TEXT;
        ALTER TABLE images ADD COLUMN control_type TEXT;
        ALTER TABLE images ADD COLUMN control_scale REAL;
        ALTER TABLE images ADD COLUMN control_start REAL;
        ALTER TABLE images ADD COLUMN control_end REAL
        """,
    )


def _add_clip_scores(db: sqlite3.Connection) -> None:
    # CLIP's cosine between an image and a text, once per image, CLIP model, kind and text
    # (studio.clip_checks): kind "prompt" (the image's own prompt), "failure" (the failure-mode
    # descriptions and the neutral one) or "label" (zero-shot labels a person typed).
    _run_script(
        db,
        """
        CREATE TABLE image_scores (
            cache_key TEXT NOT NULL,
            clip_model TEXT NOT NULL,         -- the clip_model setting: the vector space's name
            kind TEXT NOT NULL,               -- prompt, failure or label
            label TEXT NOT NULL,              -- the text scored against the image
            score REAL NOT NULL,              -- cosine similarity, -1..1
            created_at TEXT NOT NULL,
            PRIMARY KEY (cache_key, clip_model, kind, label)
        )
        """,
    )


def _add_safety(db: sqlite3.Connection) -> None:
    # One row per checked image (by its cache key), or per request an image server refused (a
    # key with no image row); no row: made with no safety filter. See studio.safety.
    _run_script(
        db,
        """
        CREATE TABLE image_flags (
            cache_key TEXT PRIMARY KEY,
            status TEXT NOT NULL CHECK (status IN ('clear', 'flagged', 'unchecked', 'refused')),
            reason TEXT NOT NULL,             -- in words, shown in the dashboard
            checker TEXT NOT NULL,            -- the safety_checker setting, or the backend
            score REAL,                       -- the checker's own measure
            prompt TEXT,                      -- a refused request's prompt
            created_at TEXT NOT NULL
        );
        CREATE INDEX image_flags_by_status ON image_flags (status, created_at)
        """,
    )


def _add_strips(db: sqlite3.Connection) -> None:
    # Denoising strips (studio.strips): an image's intermediate steps as one PNG under strips/,
    # one per (image, every k steps, decoder); not part of the pixels, so not in the cache key.
    _run_script(
        db,
        """
        CREATE TABLE strips (
            cache_key TEXT NOT NULL,          -- the image's
            every INTEGER NOT NULL,           -- a frame every `every` steps, and the last step
            decoder TEXT NOT NULL,            -- vae | preview
            path TEXT NOT NULL,               -- relative to the data folder
            sha256 TEXT NOT NULL,
            steps TEXT NOT NULL,              -- JSON: each frame's step, 1-based
            total INTEGER NOT NULL,           -- the denoising steps the render ran
            frame_width INTEGER NOT NULL,
            frame_height INTEGER NOT NULL,
            columns INTEGER NOT NULL,         -- frames per row
            max_difference INTEGER,           -- a re-render against the stored PNG, NULL: none
            created_at TEXT NOT NULL,
            PRIMARY KEY (cache_key, every, decoder)
        )
        """,
    )


# Applied in order, once each, and recorded in the `migrations` table.
MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_create_tables", _create_tables),
    ("002_covers", _create_covers),
    ("003_campaigns", _create_campaigns),
    ("004_modes", _add_modes),
    ("005_characters", _add_characters),
    ("006_library", _add_library),
    ("007_jobs", _add_jobs),
    ("008_prompt_controls", _add_prompt_controls),
    ("009_clip_scores", _add_clip_scores),
    ("010_safety", _add_safety),
    ("011_strips", _add_strips),
    ("012_controlnet", _add_controlnet),
]


@dataclass(frozen=True)
class ImageRecord:
    """An image's catalog entry: what it was made for and everything that made it."""

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
    mode: str = "txt2img"
    strength: float | None = None
    init_image: str | None = None  # sha256 of the init image in the catalog's inputs/
    mask_image: str | None = None
    outpaint: tuple[int, int, int, int] | None = None
    reference_image: str | None = None  # sha256 of the IP-Adapter reference in inputs/
    reference_scale: float | None = None
    long_prompt: bool = False
    blend_prompt: str | None = None
    blend: float | None = None
    control_image: str | None = None  # sha256 of the ControlNet's control map in inputs/
    control_type: str | None = None
    control_scale: float | None = None
    control_start: float | None = None
    control_end: float | None = None

    @classmethod
    def of(
        cls,
        request: RenderRequest,
        target: Target,
        image_index: int,
        model_label: str,
        placeholder: bool,
        provenance: dict[str, Any],
        cache_key: str,
    ) -> ImageRecord:
        values = asdict(request)
        return cls(
            cache_key=cache_key,
            target=target.kind,
            season=target.season,
            episode=target.episode,
            style=target.style,
            image_index=image_index,
            model=model_label,
            placeholder=placeholder,
            provenance=provenance,
            **values,
        )

    @property
    def request(self) -> RenderRequest:
        return RenderRequest(**{name: getattr(self, name) for name in REQUEST_FIELDS})

    @property
    def target_of(self) -> Target:
        return Target(self.target, self.season, self.episode, self.style)


@dataclass(frozen=True)
class StoredImage(ImageRecord):
    """An image as the catalog holds it: its record, where its PNG is, when it was made."""

    id: int = 0
    sha256: str = ""
    path: str = ""  # relative to the data folder
    created_at: str = ""

    def __getitem__(self, name: str) -> Any:  # row-style access, as templates and tests use
        return getattr(self, name)

    def summary(self) -> dict[str, Any]:
        """Every field but the provenance: one row of a table of images."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "provenance"}

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StoredImage:
        values = {name: row[name] for name in row.keys()}  # noqa: SIM118 - a Row, not a dict
        outpaint = values.get("outpaint")
        return cls(
            **{
                **values,
                "placeholder": bool(values["placeholder"]),
                "long_prompt": bool(values.get("long_prompt")),
                "provenance": json.loads(values["provenance"]),
                "outpaint": tuple(json.loads(outpaint)) if outpaint else None,
            }
        )


@dataclass(frozen=True)
class CharacterRecord:
    """One version of a character's look: the descriptor every prompt uses for them, verbatim,
    and the portrait prompt. `source`: "llm" (written from the series data), "description" (the
    data's description, shortened: no LLM was asked) or "edit" (typed by a person)."""

    name: str
    version: int
    descriptor: str
    portrait: str
    source: str
    llm_key: str | None = None
    note: str = ""  # what to know about it, e.g. "not in characters.csv"
    created_at: str = ""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> CharacterRecord:
        return cls(**{name: row[name] for name in row.keys()})  # noqa: SIM118 - a Row


@dataclass(frozen=True)
class PromptRecord:
    """A prompt the LLM wrote for a target, with the self-ask trace for seasons."""

    key: str  # the LLM cache key that produced it (seasons: key:style)
    target: Target
    spec: PromptSpec
    llm_model: str
    template_hash: str
    trace: list[dict[str, str]] | None = None
    created_at: str = ""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> PromptRecord:
        return cls(
            key=row["key"],
            target=Target(row["target"], row["season"], row["episode"], row["style"]),
            spec=PromptSpec(**json.loads(row["spec"])),
            llm_model=row["llm_model"],
            template_hash=row["template_hash"],
            trace=None if row["trace"] is None else json.loads(row["trace"]),
            created_at=row["created_at"],
        )


def record_from_png(path: Path) -> ImageRecord | None:
    """The catalog record a studio PNG describes (its `studio` and `parameters` chunks), or None.

    Images written since the recorded request and model label were added to the provenance are
    recovered exactly; older ones from the A1111 infotext, where numbers are rounded as written.
    """
    try:
        with Image.open(path) as image:
            info = dict(image.info)  # text chunks before the image data: no decoding needed
        provenance = json.loads(info["studio"])
        infotext = parse_parameters(info.get("parameters", ""))
        request = provenance.get("request") or {
            "prompt": infotext["Prompt"],
            "negative_prompt": infotext["Negative prompt"],
            "sampler": infotext["Sampler"],
            "steps": int(infotext["Steps"]),
            "cfg": float(infotext["CFG scale"]),
            "width": int(infotext["Size-1"]),
            "height": int(infotext["Size-2"]),
            "seed": int(infotext["Seed"]),
        }
        return ImageRecord(
            cache_key=provenance["cache_key"],
            target=provenance.get("target") or "studio",
            season=provenance.get("season"),
            episode=provenance.get("episode"),
            style=provenance.get("style"),
            image_index=int(provenance.get("image_index") or 0),
            prompt=request["prompt"],
            negative_prompt=request["negative_prompt"],
            model=provenance.get("model_label") or infotext.get("Model", ""),
            sampler=request["sampler"],
            steps=int(request["steps"]),
            cfg=float(request["cfg"]),
            width=int(request["width"]),
            height=int(request["height"]),
            seed=int(request["seed"]),
            placeholder=bool(provenance.get("placeholder")),
            provenance=provenance,
            mode=request.get("mode", "txt2img"),
            strength=request.get("strength"),
            init_image=request.get("init_image"),
            mask_image=request.get("mask_image"),
            outpaint=tuple(request["outpaint"]) if request.get("outpaint") else None,
            reference_image=request.get("reference_image"),
            reference_scale=request.get("reference_scale"),
            long_prompt=bool(request.get("long_prompt")),
            blend_prompt=request.get("blend_prompt"),
            blend=request.get("blend"),
            control_image=request.get("control_image"),
            control_type=request.get("control_type"),
            control_scale=request.get("control_scale"),
            control_start=request.get("control_start"),
            control_end=request.get("control_end"),
        )
    except (OSError, SyntaxError, KeyError, ValueError, TypeError, AttributeError):
        return None


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` so that `path` is either absent, old, or complete, never partial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=path.suffix, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _unwritable(folder: Path, exc: Exception) -> CatalogError:
    reason = getattr(exc, "strerror", None) or str(exc)
    return CatalogError(
        f"The data folder {folder} cannot be written ({reason}). Set {setting('data_dir')} to a "
        "folder you can write, or fix the folder's permissions."
    )


@dataclass
class OpenReport:
    """What the store tidied when it opened."""

    adopted: int = 0  # PNGs without a row, recorded again from their own metadata
    dropped: int = 0  # rows whose PNG file is gone, removed


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
            raise _unwritable(self.data_dir, exc) from None
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
            raise _unwritable(self.data_dir, exc) from None

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
            return _unwritable(self.data_dir, exc)
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
            "outpaint": None if record.outpaint is None else json.dumps(list(record.outpaint)),
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

    # Safety verdicts (studio.safety) ------------------------------------------------------------

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

    def start_job(self, executor: str, selection: str, host: str, pid: int) -> int:
        now = _now()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO jobs (started_at, updated_at, status, stage, executor, selection, "
                "host, pid) VALUES (?, ?, 'running', 'prompts', ?, ?, ?, ?)",
                (now, now, executor, selection, host, pid),
            )
            return int(cursor.lastrowid)

    def update_job(self, job_id: int, **values: Any) -> None:
        """Set columns of the job's row (`failures` and `seconds` as Python values)."""
        allowed = {"status", "stage", "finished_at", "prompts_done", "prompts_total",
                   "images_done", "images_total", "failures", "seconds"}  # fmt: skip
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
        """The newest batch jobs' rows, newest first (see studio.jobs.JobRecord)."""
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

    # Denoising strips (studio.strips) -----------------------------------------------------------

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
