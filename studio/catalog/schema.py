"""The catalog's schema: named migrations, applied in order once each and recorded in the
`migrations` table; an existing catalog opens without any migration it already has."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


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
    # The prompt library (studio.library.service): every distinct prompt text once, the things that
    # use it (catalog images, prompt records, imported rows, improved ideas), vectors per embedding
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
    # Batch jobs (studio.catalog.job_log): what each run of dataprep.py did and how far it got, for
    # the dashboard's Batch jobs page; a running job updates its row as it goes.
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


def _add_control_resize(db: sqlite3.Connection) -> None:
    # How a control picture of another shape than the image was fitted (AUTOMATIC1111's resize
    # modes: just resize, crop and resize, resize and fill); NULL before resize modes.
    _run_script(db, "ALTER TABLE images ADD COLUMN control_resize TEXT")


def _add_several_references(db: sqlite3.Connection) -> None:
    # Several characters in one image (IP-Adapter): JSON arrays of sha256s in inputs/, the
    # references after the first and one region mask per reference; NULL: one reference or none.
    _run_script(
        db,
        """
        ALTER TABLE images ADD COLUMN extra_references TEXT;
        ALTER TABLE images ADD COLUMN reference_masks TEXT
        """,
    )


def _add_inpaint_padding(db: sqlite3.Connection) -> None:
    # Inpainting only the masked area (A1111's "Only masked") with this many pixels of context;
    # NULL: the whole picture.
    _run_script(db, "ALTER TABLE images ADD COLUMN inpaint_padding INTEGER")


def _add_clip_scores(db: sqlite3.Connection) -> None:
    # CLIP's cosine between an image and a text, once per image, CLIP model, kind and text
    # (studio.vision.checks): kind "prompt" (the image's own prompt), "failure" (the failure-mode
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
    # Denoising strips (studio.images.strips): an image's intermediate steps as one PNG under
    # strips/, one per (image, every k steps, decoder); not part of the pixels, so not in the cache
    # key.
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


def _add_job_llm(db: sqlite3.Connection) -> None:
    # Which LLM a batch job asked (its description, credentials left out) and how many calls
    # reached it, so that the next job's estimate can time its calls by what this one measured.
    _run_script(
        db,
        """
        ALTER TABLE jobs ADD COLUMN llm TEXT NOT NULL DEFAULT '';
        ALTER TABLE jobs ADD COLUMN llm_calls INTEGER NOT NULL DEFAULT 0
        """,
    )


def _add_job_llm_concurrency(db: sqlite3.Connection) -> None:
    # How many LLM calls a batch job made at once (0: not recorded, jobs before this column), so
    # that an estimate times its calls by a job that asked as many at once.
    _run_script(db, "ALTER TABLE jobs ADD COLUMN llm_concurrency INTEGER NOT NULL DEFAULT 0")


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
    ("013_control_resize", _add_control_resize),
    ("014_several_references", _add_several_references),
    ("015_inpaint_padding", _add_inpaint_padding),
    ("016_job_llm", _add_job_llm),
    ("017_job_llm_concurrency", _add_job_llm_concurrency),
]
