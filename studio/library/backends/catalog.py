"""Where the prompt library lives: tables inside the catalog (`006_library`) and one usearch index
file per vector space in `library/` beside it.

The vectors are kept in the catalog too, so an index file that is missing, unreadable or out of
step is rebuilt from them (with a message) and never loses anything. Items come from three
places: the catalog's own images and prompt records (copied in by `sync_catalog`, incrementally),
imported CSV rows, and nothing else: improved prompts are prompt records like any other.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np

from studio.catalog.store import Store
from studio.library.backends.base import FACETS_SQL, where_clause
from studio.library.items import LibraryItem, NewItem, image_item, prompt_item
from studio.library.vector_index import Match, VectorIndex, unit

CHUNK = 20_000  # rows per read when (re)building an index


def space_file(space: str) -> str:
    """A file name for a vector space's index: `openai:m@host` -> `openai-m-host.usearch`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", space).strip("-") + ".usearch"


def select_in(
    db: sqlite3.Connection, query: str, values: Sequence[Any], before: tuple[Any, ...] = ()
) -> set[Any]:
    """The first column of `query` for `values`, 500 at a time into its `IN ({marks})`."""
    found: set[Any] = set()
    for start in range(0, len(values), 500):
        chunk = values[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        found.update(row[0] for row in db.execute(query.format(marks=marks), (*before, *chunk)))
    return found


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class CatalogLibrary:
    """The library's tables in one catalog, and its vector indexes beside it (a `LibraryDB`)."""

    def __init__(self, store: Store, on_status: Callable[[str], None] | None = None):
        self.store = store
        self.where = str(store.catalog_path)
        self.index_dir = store.data_dir / "library"
        self._on_status = on_status or (lambda line: None)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(store.catalog_path, check_same_thread=False,
                                   isolation_level=None)  # fmt: skip
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA busy_timeout=10000")
        self._indexes: dict[str, tuple[VectorIndex, int]] = {}  # space -> (index, max id in it)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # Writing ----------------------------------------------------------------------------------

    def _state(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM library_state WHERE name = ?", (name,)).fetchone()
        return row[0] if row else 0

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def add_items(self, items: Sequence[NewItem]) -> int:
        """Record `items` (their texts first); an item already there (same kind and ref) is
        left as it is. How many were added."""
        if not items:
            return 0
        with self._lock, self._transaction() as db:
            return self._insert(db, items)

    def _insert(self, db: sqlite3.Connection, items: Sequence[NewItem]) -> int:
        """Insert `items` and their texts; how many items were new."""
        now = _now()
        db.executemany(
            "INSERT OR IGNORE INTO library_texts (text, created_at) VALUES (?, ?)",
            [(item.text, item.created_at or now) for item in items],
        )
        before = db.total_changes
        db.executemany(
            """INSERT OR IGNORE INTO library_items (text_id, kind, ref, target, season, episode,
            style, model, placeholder, image_key, url, width, height, source_site, parents,
            created_at) SELECT id, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?
            FROM library_texts WHERE text = ?""",
            [
                (
                    item.kind,
                    item.ref,
                    item.target,
                    item.season,
                    item.episode,
                    item.style,
                    item.model,
                    None if item.placeholder is None else int(item.placeholder),
                    item.image_key,
                    item.url,
                    item.width,
                    item.height,
                    item.source_site,
                    json.dumps(list(item.parents)),
                    item.created_at or now,
                    item.text,
                )  # fmt: skip
                for item in items
            ],
        )
        return db.total_changes - before

    def sync_catalog(self) -> int:
        """Copy in the catalog images and prompt records made since the last sync."""
        with self._lock:
            last_image = self._state("images")
            last_prompt = self._state("prompts")
            images = self._db.execute(
                "SELECT * FROM images WHERE id > ? ORDER BY id", (last_image,)
            ).fetchall()
            prompts = self._db.execute(
                "SELECT rowid AS rowid_, * FROM prompts WHERE rowid > ? ORDER BY rowid",
                (last_prompt,),
            ).fetchall()
            if not images and not prompts:
                return 0
            items = [image_item(row) for row in images] + [prompt_item(row) for row in prompts]
            items = [item for item in items if item is not None]
            with self._transaction() as db:
                added = self._insert(db, items)
                for name, rows, column in (("images", images, "id"), ("prompts", prompts,
                                                                      "rowid_")):  # fmt: skip
                    if rows:
                        db.execute(
                            "INSERT OR REPLACE INTO library_state VALUES (?, ?)",
                            (name, rows[-1][column]),
                        )
            return added

    def existing_refs(self, kind: str, refs: Collection[str]) -> set[str]:
        with self._lock:
            return select_in(
                self._db, "SELECT ref FROM library_items WHERE kind = ? AND ref IN ({marks})",
                list(refs), (kind,),
            )  # fmt: skip

    # Vectors ----------------------------------------------------------------------------------

    def _max_vector(self, space: str) -> int:
        row = self._db.execute(
            "SELECT max(id) FROM library_vectors WHERE space = ?", (space,)
        ).fetchone()
        return row[0] or 0

    def pending_texts(self, space: str, limit: int = 10_000) -> list[tuple[int, str]]:
        """Texts with no vector in `space` yet, oldest first (vectors are added in id order)."""
        with self._lock:
            after = self._max_vector(space)
            return [
                (row[0], row[1])
                for row in self._db.execute(
                    "SELECT id, text FROM library_texts WHERE id > ? ORDER BY id LIMIT ?",
                    (after, limit),
                )
            ]

    def pending_count(self, space: str) -> int:
        with self._lock:
            after = self._max_vector(space)
            return self._db.execute(
                "SELECT count(*) FROM library_texts WHERE id > ?", (after,)
            ).fetchone()[0]

    def pending_images(self, space: str, limit: int = 1_000) -> list[tuple[int, str]]:
        """(item id, image cache key) of catalog images with no vector in `space` yet."""
        with self._lock:
            after = self._max_vector(space)
            return [
                (row[0], row[1])
                for row in self._db.execute(
                    "SELECT id, image_key FROM library_items WHERE id > ? AND kind = 'image' "
                    "ORDER BY id LIMIT ?",
                    (after, limit),
                )
            ]

    def add_vectors(self, space: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = unit(vectors)
        with self._lock:
            with self._transaction() as db:
                db.executemany(
                    "INSERT OR IGNORE INTO library_vectors VALUES (?, ?, ?)",
                    [(space, int(i), v.tobytes()) for i, v in zip(ids, vectors, strict=True)],
                )
            held = self._indexes.get(space)
            if held is not None:
                index, _ = held
                index.add(np.asarray(ids), vectors)
                self._indexes[space] = (index, max(held[1], int(max(ids))))

    def _vector_batches(
        self, space: str, after: int = 0
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, vector FROM library_vectors WHERE space = ? AND id > ? "
                    "ORDER BY id LIMIT ?",
                    (space, after, CHUNK),
                ).fetchall()
            if not rows:
                return
            ids = np.array([row[0] for row in rows], dtype=np.int64)
            vectors = np.vstack([np.frombuffer(row[1], dtype=np.float32) for row in rows])
            yield ids, vectors
            after = int(ids[-1])

    def index(self, space: str) -> VectorIndex | None:
        """`space`'s index, loaded (or rebuilt) once and kept up with new vectors; None when the
        space has no vectors."""
        with self._lock:
            newest = self._max_vector(space)
            held = self._indexes.get(space)
            if held is not None:
                index, known = held
                if newest > known:  # another process added vectors
                    for ids, vectors in self._vector_batches(space, known):
                        index.add(ids, vectors)
                    index.save()
                    self._indexes[space] = (index, newest)
                return index
            if newest == 0:
                return None
            count, dim = self._db.execute(
                "SELECT count(*), length(vector) / 4 FROM library_vectors WHERE space = ? LIMIT 1",
                (space,),
            ).fetchone()
            path = self.index_dir / space_file(space)
            index, why = VectorIndex.load(path, dim)
            if index is None or len(index) > count:
                why = why or f"holds {len(index)} vectors, the catalog {count}"
                if why != "missing" or self._state(f"index:{space}"):  # not merely never built
                    self._on_status(
                        f"The library index {path} is {why}; rebuilding it from the catalog's "
                        f"{count:,} vectors."
                    )
                index = VectorIndex.build(path, dim, self._vector_batches(space))
                self._db.execute(
                    "INSERT OR REPLACE INTO library_state VALUES (?, 1)", (f"index:{space}",)
                )
            elif len(index) < count:
                for ids, vectors in self._vector_batches(space):
                    index.add(ids, vectors)
                index.save()
            self._indexes[space] = (index, newest)
            return index

    def save_indexes(self) -> None:
        with self._lock:
            for index, _ in self._indexes.values():
                index.save()

    def nearest(
        self, space: str, query: np.ndarray, k: int, allowed: Collection[int] | None = None
    ) -> list[Match]:
        index = self.index(space)
        return [] if index is None else index.search(query, k, allowed)

    # Reading ----------------------------------------------------------------------------------

    def allowed_texts(self, filters: Mapping[str, Any]) -> set[int] | None:
        """Ids of the texts with an item that passes `filters`; None when there are none set."""
        if not filters:
            return None
        where, values = where_clause(filters)
        with self._lock:
            return {
                row[0]
                for row in self._db.execute(
                    f"SELECT DISTINCT text_id FROM library_items WHERE {where}", values
                )
            }

    def texts(self, ids: Collection[int]) -> dict[int, str]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        with self._lock:
            return {
                row[0]: row[1]
                for row in self._db.execute(
                    f"SELECT id, text FROM library_texts WHERE id IN ({marks})", ids
                )
            }

    def text_id(self, text: str) -> int | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM library_texts WHERE text = ?", (text,)
            ).fetchone()
        return row[0] if row else None

    def items_of(
        self, text_ids: Collection[int], filters: Mapping[str, Any] | None = None
    ) -> dict[int, list[LibraryItem]]:
        """text id -> its items passing `filters`, images first, newest first."""
        text_ids = list(text_ids)
        if not text_ids:
            return {}
        where, values = where_clause(filters or {})
        marks = ", ".join("?" for _ in text_ids)
        found: dict[int, list[LibraryItem]] = {}
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM library_items WHERE text_id IN ({marks}) AND {where} "
                "ORDER BY image_key IS NULL, created_at DESC, id DESC",
                (*text_ids, *values),
            ).fetchall()
        for row in rows:
            found.setdefault(row["text_id"], []).append(LibraryItem.from_row(row))
        return found

    def items(self, ids: Collection[int]) -> dict[int, LibraryItem]:
        ids = list(ids)
        if not ids:
            return {}
        marks = ", ".join("?" for _ in ids)
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM library_items WHERE id IN ({marks})", ids
            ).fetchall()
        return {row["id"]: LibraryItem.from_row(row) for row in rows}

    def item_of_image(self, cache_key: str) -> LibraryItem | None:
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM library_items WHERE kind = 'image' AND ref = ?", (cache_key,)
            ).fetchone()
        return None if row is None else LibraryItem.from_row(row)

    def unhashed_images(self, limit: int = 1_000) -> list[tuple[int, str]]:
        with self._lock:
            return [
                (row[0], row[1])
                for row in self._db.execute(
                    "SELECT i.id, i.image_key FROM library_items i LEFT JOIN image_hashes h "
                    "ON h.item_id = i.id WHERE i.kind = 'image' AND h.item_id IS NULL "
                    "ORDER BY i.id LIMIT ?",
                    (limit,),
                )
            ]

    def add_hashes(self, hashes: Sequence[tuple[int, int]]) -> None:
        with self._lock, self._transaction() as db:
            db.executemany("INSERT OR REPLACE INTO image_hashes VALUES (?, ?)", hashes)

    def hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, 64-bit perceptual hashes as uint64)."""
        with self._lock:
            rows = self._db.execute("SELECT item_id, phash FROM image_hashes").fetchall()
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        values = np.array([row[1] for row in rows], dtype=np.int64).view(np.uint64)
        return ids, values

    def facets(self) -> dict[str, list[str]]:
        """The values the library holds for each filter in FACETS."""
        with self._lock:
            return {
                name: [row[0] for row in self._db.execute(query)]
                for name, query in FACETS_SQL.items()
            }

    def counts(self) -> dict[str, int]:
        with self._lock:
            counts = {"texts": self._db.execute("SELECT count(*) FROM library_texts").fetchone()[0]}
            for kind, count in self._db.execute(
                "SELECT kind, count(*) FROM library_items GROUP BY kind"
            ):
                counts[kind] = count
        return counts
