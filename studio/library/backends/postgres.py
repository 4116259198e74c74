"""The prompt library on a PostgreSQL server with pgvector, shared by a team: each member's
catalog pushes its images and prompt records there, and every member searches all of them.

    python -m studio.library.local_server ~/library-server  # one on this machine, to try
    export STUDIO_LIBRARY_DB='postgresql://...'              # the URL it prints, or the team's

A team runs one PostgreSQL with pgvector instead, reachable only on loopback or a private
network and with a password (docs/prompt-library.md has the recipe), and each member sets
library_db (STUDIO_LIBRARY_DB) to `postgresql://user:password@host:5432/db`.

The tables mirror the catalog's (`006_library`) and are made on first connect. The vectors of
every space (embedder) share one table, whose `vector` column has no fixed dimension; each space
gets a partial HNSW index on its vectors cast to its dimension, and searches cast the same way so
the planner can use it. What a catalog has pushed is recorded in that catalog (`library_state`,
under the server's id), so every member's catalog pushes its own; image refs are content hashes
and prompt record keys LLM cache keys, so the same thing pushed by two catalogs is one item.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import struct
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import Format
from psycopg.rows import dict_row
from psycopg.types import TypeInfo

from studio.catalog.store import Store
from studio.core.config import setting
from studio.core.errors import LibraryServerError, StudioError
from studio.core.remote import mask_password
from studio.library.backends.base import FACETS_SQL, where_clause
from studio.library.backends.catalog import select_in
from studio.library.items import LibraryItem, NewItem, image_item, prompt_item
from studio.library.vector_index import EXACT_LIMIT, EXPANSION_SEARCH, Match, unit

CONNECT_TIMEOUT = 10  # seconds
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64  # pgvector's default: cheaper inserts; EXPANSION_SEARCH gives recall
HNSW_EF_SEARCH_MAX = 1000  # pgvector's limit
CHUNK = 5_000  # rows per read when passing over other catalogs' images
PGVECTOR_HNSW = (0, 5, 0)  # the first pgvector with HNSW indexes
# Advisory locks: one for the schema and indexes, one held while texts and items are written, so
# their ids are committed in order and "no vector after the newest" stays a sound way to find work.
SCHEMA_LOCK = 0x5EA1_0001
WRITE_LOCK = 0x5EA1_0002

# libpq's words when the server wants a password it did not get or refuses the one it got
AUTH_FAILED = re.compile(r"no password supplied|authentication failed")

# Raised when SCHEMA changes. The statements run only on a server whose tables are of another
# version: CREATE INDEX IF NOT EXISTS locks its table against writes even when the index is there.
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS library_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS library_texts (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    text TEXT NOT NULL,
    created_at TEXT COLLATE "C" NOT NULL
);
-- by hash: a btree entry cannot hold a long prompt
CREATE UNIQUE INDEX IF NOT EXISTS library_texts_by_text ON library_texts (md5(text));
CREATE TABLE IF NOT EXISTS library_items (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    text_id BIGINT NOT NULL REFERENCES library_texts (id),
    kind TEXT NOT NULL,
    ref TEXT NOT NULL,
    target TEXT,
    season INTEGER,
    episode INTEGER,
    style TEXT,
    model TEXT,
    placeholder BOOLEAN,
    image_key TEXT,
    url TEXT,
    width INTEGER,
    height INTEGER,
    source_site TEXT,
    parents TEXT NOT NULL DEFAULT '[]',
    created_at TEXT COLLATE "C" NOT NULL,
    UNIQUE (kind, ref)
);
CREATE INDEX IF NOT EXISTS library_items_by_text ON library_items (text_id);
CREATE INDEX IF NOT EXISTS library_items_images ON library_items (id) WHERE kind = 'image';
CREATE TABLE IF NOT EXISTS library_vectors (
    space TEXT NOT NULL,
    id BIGINT NOT NULL,
    embedding vector NOT NULL,
    PRIMARY KEY (space, id)
);
CREATE TABLE IF NOT EXISTS image_hashes (item_id BIGINT PRIMARY KEY, phash BIGINT NOT NULL);
"""

ITEM_COLUMNS = (
    ("kind", "text"), ("ref", "text"), ("target", "text"), ("season", "int"),
    ("episode", "int"), ("style", "text"), ("model", "text"), ("placeholder", "bool"),
    ("image_key", "text"), ("url", "text"), ("width", "int"), ("height", "int"),
    ("source_site", "text"), ("parents", "text"), ("created_at", "text"),
)  # fmt: skip
INSERT_ITEMS = sql.SQL(
    "INSERT INTO library_items (text_id, {columns}) SELECT t.id, {values} "
    "FROM unnest(%s::text[], {arrays}) WITH ORDINALITY AS u(text, {columns}, n) "
    "JOIN library_texts t ON md5(t.text) = md5(u.text) AND t.text = u.text "
    "ORDER BY u.n ON CONFLICT (kind, ref) DO NOTHING"
).format(
    columns=sql.SQL(", ").join(sql.Identifier(name) for name, _ in ITEM_COLUMNS),
    values=sql.SQL(", ").join(sql.Identifier("u", name) for name, _ in ITEM_COLUMNS),
    arrays=sql.SQL(", ").join(sql.SQL(f"%s::{kind}[]") for _, kind in ITEM_COLUMNS),
)
# Image items, in id order, from `after` on, that have no row in image_hashes / library_vectors.
UNHASHED = sql.SQL(
    "SELECT i.id, i.image_key FROM library_items i WHERE i.kind = 'image' AND i.id > %s "
    "AND NOT EXISTS (SELECT 1 FROM image_hashes h WHERE h.item_id = i.id) ORDER BY i.id LIMIT %s"
)
UNEMBEDDED = sql.SQL(
    "SELECT i.id, i.image_key FROM library_items i WHERE i.kind = 'image' AND i.id > %s "
    "AND NOT EXISTS (SELECT 1 FROM library_vectors v WHERE v.space = {space} AND v.id = i.id) "
    "ORDER BY i.id LIMIT %s"
)


def _password(url: str) -> str:
    try:
        return conninfo_to_dict(url).get("password") or ""
    except psycopg.Error:
        return ""


def _cause(exc: BaseException, url: str) -> str:
    """What went wrong, on one line, with no password in it."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    password = _password(url)
    return text.replace(password, "***") if password else text


def _leave_empty() -> str:
    return f"or leave {setting('library_db')} empty to keep the library inside the catalog"


def index_name(space: str, dim: int) -> str:
    """The name of `space`'s HNSW index: spaces are free text (`openai:m@host`), names are not."""
    return f"library_vectors_hnsw_{hashlib.sha1(f'{space}/{dim}'.encode()).hexdigest()[:16]}"


def nearest_query(space: str, dim: int) -> sql.Composed:
    """The nearest vectors of `space` to a query (the vector, then k), by its HNSW index:
    the space and the dimension are literals, as in the index's predicate and expression."""
    return sql.SQL(
        "SELECT id, embedding::vector({dim}) <=> %b::vector({dim}) AS distance "
        "FROM library_vectors WHERE space = {space} ORDER BY distance LIMIT %s"
    ).format(dim=sql.Literal(dim), space=sql.Literal(space))


def exact_query(space: str) -> sql.Composed:
    """The nearest vectors of `space` among ids (the vector, the ids, then k), scored exactly:
    uncast, the distance matches no index, so the rows are read by id and sorted."""
    return sql.SQL(
        "SELECT id, embedding <=> %b::vector AS distance FROM library_vectors "
        "WHERE space = {space} AND id = ANY(%s::bigint[]) ORDER BY distance, id LIMIT %s"
    ).format(space=sql.Literal(space))


class _VectorDumper(Dumper):
    """numpy float vectors in pgvector's binary form (dimension, 0, big-endian float32s)."""

    format = Format.BINARY

    def dump(self, obj: np.ndarray) -> bytes:
        vector = np.asarray(obj, dtype=">f4").reshape(-1)
        return struct.pack(">HH", len(vector), 0) + vector.tobytes()


def _typed(filters: Mapping[str, Any]) -> dict[str, Any]:
    """Season and episode as numbers: PostgreSQL compares an integer column only with one."""
    typed = dict(filters)
    for name in ("season", "episode"):
        if name in typed:
            try:
                typed[name] = int(typed[name])
            except (TypeError, ValueError):
                raise StudioError(
                    f"The {name} filter {typed[name]!r} is not a number; give one like 2."
                ) from None
    return typed


def connect(url: str) -> psycopg.Connection:
    """A connection to the library's server, its tables made if missing; a clear error when
    the server cannot be reached or has no pgvector."""
    shown = mask_password(url)
    try:
        pg = psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        if AUTH_FAILED.search(str(exc)):
            raise LibraryServerError(
                f"The prompt library's server {shown}, set in {setting('library_db')}, refuses "
                f"its user or password ({_cause(exc, url)}). Give the password in the URL "
                "(postgresql://user:password@host:5432/db) or name a password file in it "
                "(`passfile=`, as the URL `python -m studio.library.local_server` prints does), "
                f"{_leave_empty()}."
            ) from None
        raise LibraryServerError(
            f"The prompt library's server {shown}, set in {setting('library_db')}, cannot be "
            f"reached ({_cause(exc, url)}). Start it (`python -m studio.library.local_server DIR` "
            f"runs one on this machine), correct the URL, {_leave_empty()}."
        ) from None
    try:
        if _schema_version(pg) != SCHEMA_VERSION:
            with pg.transaction():
                pg.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                _enable_pgvector(pg, shown, url)
                pg.execute(SCHEMA)
                pg.execute(
                    "INSERT INTO library_meta VALUES ('id', %s), ('schema', %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value "
                    "WHERE library_meta.name = 'schema'",
                    (uuid.uuid4().hex, str(SCHEMA_VERSION)),
                )
        info = TypeInfo.fetch(pg, "vector")
    except LibraryServerError:
        pg.close()
        raise
    except psycopg.Error as exc:
        pg.close()
        raise LibraryServerError(
            f"The prompt library's tables cannot be made on {shown}, set in "
            f"{setting('library_db')} ({_cause(exc, url)}). Give its user the right to create "
            f"tables there, {_leave_empty()}."
        ) from None
    info.register(pg)
    dumper = type("VectorDumper", (_VectorDumper,), {"oid": info.oid})
    pg.adapters.register_dumper(np.ndarray, dumper)
    return pg


def _schema_version(pg: psycopg.Connection) -> int:
    """The version of the tables on the server; 0 before they are made."""
    if pg.execute("SELECT to_regclass('library_meta')").fetchone()[0] is None:
        return 0
    row = pg.execute("SELECT value FROM library_meta WHERE name = 'schema'").fetchone()
    return int(row[0]) if row else 0


def _enable_pgvector(pg: psycopg.Connection, shown: str, url: str) -> None:
    row = pg.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        available = pg.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if available is None:
            raise LibraryServerError(
                f"The PostgreSQL server {shown}, set in {setting('library_db')}, has no pgvector "
                "extension, which the prompt library needs for its vectors. Install it "
                "(https://github.com/pgvector/pgvector; the pgvector/pgvector Docker images "
                f"have it), {_leave_empty()}."
            )
        try:
            with pg.transaction():
                pg.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise LibraryServerError(
                f"The PostgreSQL server {shown}, set in {setting('library_db')}, has pgvector "
                f"but this user cannot enable it ({_cause(exc, url)}). Ask its administrator to "
                f"run `CREATE EXTENSION vector;` in that database once, {_leave_empty()}."
            ) from None
        row = pg.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    version = tuple(int(part) for part in re.findall(r"\d+", row[0])[:3])
    if version < PGVECTOR_HNSW:
        raise LibraryServerError(
            f"The PostgreSQL server {shown}, set in {setting('library_db')}, has pgvector "
            f"{row[0]}; the prompt library needs 0.5.0 or newer (HNSW indexes). Upgrade it and "
            f"run `ALTER EXTENSION vector UPDATE;`, {_leave_empty()}."
        )


class ServerLibrary:
    """The library's tables on a PostgreSQL server with pgvector (a `LibraryDB`); what this
    catalog pushed there is recorded in the catalog."""

    def __init__(self, url: str, store: Store, on_status: Callable[[str], None] | None = None):
        self.store = store
        self.url = url
        self.where = mask_password(url)
        self._on_status = on_status or (lambda line: None)
        self._lock = threading.RLock()
        self._pg = connect(url)
        with self._server() as pg:
            self._server_id = pg.execute(
                "SELECT value FROM library_meta WHERE name = 'id'"
            ).fetchone()[0]
        self._catalog = sqlite3.connect(
            store.catalog_path, check_same_thread=False, isolation_level=None
        )
        self._catalog.row_factory = sqlite3.Row
        self._catalog.execute("PRAGMA busy_timeout=10000")
        self._indexed: set[str] = set()  # HNSW indexes known to exist

    def close(self) -> None:
        with self._lock:
            self._pg.close()
            self._catalog.close()

    @contextmanager
    def _server(self) -> Iterator[psycopg.Connection]:
        """The connection (made again after a lost one); failures as a message to act on."""
        with self._lock:
            if self._pg.closed:
                self._pg = connect(self.url)
            try:
                yield self._pg
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if isinstance(exc, psycopg.InterfaceError) and not self._pg.closed:
                    raise
                raise LibraryServerError(
                    f"The prompt library's server {self.where}, set in {setting('library_db')}, "
                    f"failed ({_cause(exc, self.url)}). Check that it is running and try again, "
                    f"{_leave_empty()}."
                ) from None

    # This catalog's marks: what it pushed to this server ----------------------------------------

    def _state(self, name: str) -> int:
        row = self._catalog.execute(
            "SELECT value FROM library_state WHERE name = ?", (f"{self._server_id}:{name}",)
        ).fetchone()
        return row[0] if row else 0

    def _set_state(self, name: str, value: int) -> None:
        self._catalog.execute(
            "INSERT OR REPLACE INTO library_state VALUES (?, ?)",
            (f"{self._server_id}:{name}", value),
        )

    def _catalog_keys(self, keys: Sequence[str]) -> set[str]:
        """Which of `keys` are images of this catalog."""
        return select_in(
            self._catalog, "SELECT cache_key FROM images WHERE cache_key IN ({marks})", list(keys)
        )

    def add_items(self, items: Sequence[NewItem]) -> int:
        """Record `items` (their texts first); an item already there (same kind and ref) is
        left as it is. How many were added."""
        if not items:
            return 0
        with self._server() as pg, pg.transaction():
            return self._insert(pg, items)

    def _insert(self, pg: psycopg.Connection, items: Sequence[NewItem]) -> int:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        pg.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        pg.execute(
            "INSERT INTO library_texts (text, created_at) SELECT text, created_at "
            "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS u(text, created_at, n) "
            "ORDER BY n ON CONFLICT ((md5(text))) DO NOTHING",
            ([item.text for item in items], [item.created_at or now for item in items]),
        )
        special = {
            "parents": lambda item: json.dumps(list(item.parents)),
            "created_at": lambda item: item.created_at or now,
        }
        columns = [
            [special[name](item) if name in special else getattr(item, name) for item in items]
            for name, _ in ITEM_COLUMNS
        ]
        cursor = pg.execute(INSERT_ITEMS, [[item.text for item in items], *columns])
        return max(cursor.rowcount, 0)

    def sync_catalog(self) -> int:
        """Push the catalog images and prompt records made since this catalog's last push."""

        with self._lock:
            images = self._catalog.execute(
                "SELECT * FROM images WHERE id > ? ORDER BY id", (self._state("images"),)
            ).fetchall()
            prompts = self._catalog.execute(
                "SELECT rowid AS rowid_, * FROM prompts WHERE rowid > ? ORDER BY rowid",
                (self._state("prompts"),),
            ).fetchall()
            if not images and not prompts:
                return 0
            items = [image_item(row) for row in images] + [prompt_item(row) for row in prompts]
            added = self.add_items([item for item in items if item is not None])
            # Marked after the server committed: a push cut short is pushed again, adding nothing.
            if images:
                self._set_state("images", images[-1]["id"])
            if prompts:
                self._set_state("prompts", prompts[-1]["rowid_"])
            return added

    def existing_refs(self, kind: str, refs: Collection[str]) -> set[str]:
        with self._server() as pg:
            rows = pg.execute(
                "SELECT ref FROM library_items WHERE kind = %s AND ref = ANY(%s::text[])",
                (kind, list(refs)),
            ).fetchall()
        return {row[0] for row in rows}

    # Vectors ----------------------------------------------------------------------------------

    def _max_vector(self, pg: psycopg.Connection, space: str) -> int:
        row = pg.execute(
            "SELECT max(id) FROM library_vectors WHERE space = %s", (space,)
        ).fetchone()
        return row[0] or 0

    def pending_texts(self, space: str, limit: int = 10_000) -> list[tuple[int, str]]:
        """Texts with no vector in `space` yet, oldest first (vectors are added in id order)."""
        with self._server() as pg:
            after = self._max_vector(pg, space)
            rows = pg.execute(
                "SELECT id, text FROM library_texts WHERE id > %s ORDER BY id LIMIT %s",
                (after, limit),
            ).fetchall()
        return [(row[0], row[1]) for row in rows]

    def pending_count(self, space: str) -> int:
        with self._server() as pg:
            after = self._max_vector(pg, space)
            return pg.execute(
                "SELECT count(*) FROM library_texts WHERE id > %s", (after,)
            ).fetchone()[0]

    def pending_images(self, space: str, limit: int = 1_000) -> list[tuple[int, str]]:
        """(item id, image cache key) of this catalog's images with no vector in `space` yet;
        other members' images are theirs to embed (their files are not here)."""
        query = UNEMBEDDED.format(space=sql.Literal(space))
        return self._catalog_pending(f"vectors:{space}", query, limit)

    def _catalog_pending(
        self, name: str, query: sql.Composable, limit: int
    ) -> list[tuple[int, str]]:
        """The image items `query` finds that are this catalog's, in id order. Other catalogs'
        are passed over once: the mark `name` moves past them, never past one of this catalog's
        (it may fail and has to come back)."""
        with self._lock:
            start = passed = after = self._state(name)
            with self._server() as pg:
                # Items are committed in id order, so every image up to this one is seen below.
                newest = pg.execute(
                    "SELECT coalesce(max(id), 0) FROM library_items WHERE kind = 'image'"
                ).fetchone()[0]
                found: list[tuple[int, str]] = []
                while len(found) < limit:
                    rows = pg.execute(query, (after, CHUNK)).fetchall()
                    ours = self._catalog_keys([row[1] for row in rows])
                    for item_id, key in rows:
                        if key in ours:
                            found.append((item_id, key))
                        elif not found:
                            passed = item_id
                    if len(rows) < CHUNK:
                        if not found:
                            passed = max(passed, newest)
                        break
                    after = rows[-1][0]
            if passed > start:
                self._set_state(name, passed)
            return found[:limit]

    def add_vectors(self, space: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vectors = unit(vectors)
        with self._server() as pg:
            self._ensure_index(pg, space, vectors.shape[1])
            pg.execute(
                "INSERT INTO library_vectors (space, id, embedding) SELECT %s, id, embedding "
                "FROM unnest(%s::bigint[], %b) AS u(id, embedding) ON CONFLICT DO NOTHING",
                (space, [int(i) for i in ids], list(vectors)),
            )

    def _ensure_index(self, pg: psycopg.Connection, space: str, dim: int) -> None:
        """`space`'s HNSW index, made when its first vectors arrive."""
        name = index_name(space, dim)
        if name in self._indexed:
            return
        if pg.execute("SELECT to_regclass(%s)", (name,)).fetchone()[0] is None:
            with pg.transaction():
                pg.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                held = pg.execute(
                    "SELECT count(*) FROM library_vectors WHERE space = %s", (space,)
                ).fetchone()[0]
                if held:
                    self._on_status(f"Indexing the library's {held:,} {space} vectors on "
                                    f"{self.where}, once.")  # fmt: skip
                pg.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {name} ON library_vectors USING hnsw "
                        "((embedding::vector({dim})) vector_cosine_ops) "
                        "WITH (m = {m}, ef_construction = {ef}) WHERE space = {space}"
                    ).format(
                        name=sql.Identifier(name),
                        dim=sql.Literal(dim),
                        m=sql.Literal(HNSW_M),
                        ef=sql.Literal(HNSW_EF_CONSTRUCTION),
                        space=sql.Literal(space),
                    )
                )
        self._indexed.add(name)

    def save_indexes(self) -> None:
        """Nothing to do: the server keeps its indexes."""

    def nearest(
        self, space: str, query: np.ndarray, k: int, allowed: Collection[int] | None = None
    ) -> list[Match]:
        """The `k` nearest ids to `query` in `space` (among `allowed`, when given), best first,
        by the space's HNSW index. Few allowed ids are scored exactly; many are taken from the
        index's nearest, or all scored when fewer than `k` of those pass."""
        if k <= 0 or (allowed is not None and not allowed):
            return []
        query = unit(np.asarray(query).reshape(-1))
        dim = len(query)
        with self._server() as pg, pg.transaction():
            if allowed is not None and len(allowed) <= EXACT_LIMIT:
                rows = pg.execute(exact_query(space), (query, list(allowed), k)).fetchall()
            elif allowed is None:
                search = min(HNSW_EF_SEARCH_MAX, max(k, EXPANSION_SEARCH))
                pg.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(search))
                rows = pg.execute(nearest_query(space, dim), (query, k)).fetchall()
            else:  # many allowed: as many of the index's nearest as it gives, filtered
                allowed = set(allowed)
                pg.execute(sql.SQL("SET LOCAL hnsw.ef_search = {}").format(HNSW_EF_SEARCH_MAX))
                rows = pg.execute(nearest_query(space, dim), (query, HNSW_EF_SEARCH_MAX))
                rows = [row for row in rows if row[0] in allowed]
                if len(rows) < k:  # too few of them pass: score them all
                    rows = pg.execute(exact_query(space), (query, list(allowed), k)).fetchall()
        return [Match(int(row[0]), 1.0 - float(row[1])) for row in rows[:k]]

    # Reading ----------------------------------------------------------------------------------

    def _items_where(self, select: str, filters: Mapping[str, Any]) -> set[int]:
        where, values = where_clause(_typed(filters), "%s")
        with self._server() as pg:
            rows = pg.execute(f"{select} FROM library_items WHERE {where}", values).fetchall()
        return {row[0] for row in rows}

    def allowed_texts(self, filters: Mapping[str, Any]) -> set[int] | None:
        """Ids of the texts with an item that passes `filters`; None when there are none set."""
        return self._items_where("SELECT DISTINCT text_id", filters) if filters else None

    def texts(self, ids: Collection[int]) -> dict[int, str]:
        if not ids:
            return {}
        with self._server() as pg:
            rows = pg.execute(
                "SELECT id, text FROM library_texts WHERE id = ANY(%s::bigint[])", (list(ids),)
            ).fetchall()
        return {row[0]: row[1] for row in rows}

    def text_id(self, text: str) -> int | None:
        with self._server() as pg:
            row = pg.execute(
                "SELECT id FROM library_texts WHERE md5(text) = md5(%s) AND text = %s",
                (text, text),
            ).fetchone()
        return row[0] if row else None

    def _item_rows(self, condition: str, values: Sequence[Any], order: str = "") -> list[dict]:
        with self._server() as pg:
            cursor = pg.cursor(row_factory=dict_row)
            return cursor.execute(
                f"SELECT * FROM library_items WHERE {condition} {order}", values
            ).fetchall()

    def items_of(
        self, text_ids: Collection[int], filters: Mapping[str, Any] | None = None
    ) -> dict[int, list[LibraryItem]]:
        """text id -> its items passing `filters`, images first, newest first."""
        if not text_ids:
            return {}
        where, values = where_clause(_typed(filters or {}), "%s")
        rows = self._item_rows(
            f"text_id = ANY(%s::bigint[]) AND {where}",
            [list(text_ids), *values],
            "ORDER BY image_key IS NULL, created_at DESC, id DESC",
        )
        found: dict[int, list[LibraryItem]] = {}
        for row in rows:
            found.setdefault(row["text_id"], []).append(LibraryItem.from_row(row))
        return found

    def items(self, ids: Collection[int]) -> dict[int, LibraryItem]:
        if not ids:
            return {}
        rows = self._item_rows("id = ANY(%s::bigint[])", [list(ids)])
        return {row["id"]: LibraryItem.from_row(row) for row in rows}

    def item_of_image(self, cache_key: str) -> LibraryItem | None:
        rows = self._item_rows("kind = 'image' AND ref = %s", [cache_key])
        return LibraryItem.from_row(rows[0]) if rows else None

    def unhashed_images(self, limit: int = 1_000) -> list[tuple[int, str]]:
        """(item id, image cache key) of this catalog's images with no perceptual hash yet;
        other members' images are theirs to hash (their files are not here)."""
        return self._catalog_pending("hashes", UNHASHED, limit)

    def add_hashes(self, hashes: Sequence[tuple[int, int]]) -> None:
        if not hashes:
            return
        latest = dict(hashes)  # one row each: an upsert may not touch a row twice
        with self._server() as pg:
            pg.execute(
                "INSERT INTO image_hashes (item_id, phash) SELECT * FROM "
                "unnest(%s::bigint[], %s::bigint[]) ON CONFLICT (item_id) DO UPDATE "
                "SET phash = excluded.phash",
                (list(latest), list(latest.values())),
            )

    def hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, 64-bit perceptual hashes as uint64), of every member's images."""
        with self._server() as pg:
            rows = pg.execute("SELECT item_id, phash FROM image_hashes").fetchall()
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        values = np.array([row[1] for row in rows], dtype=np.int64).view(np.uint64)
        return ids, values

    def facets(self) -> dict[str, list[str]]:
        """The values the library holds for each filter in FACETS."""
        with self._server() as pg:
            return {
                name: [row[0] for row in pg.execute(query).fetchall()]
                for name, query in FACETS_SQL.items()
            }

    def counts(self) -> dict[str, int]:
        with self._server() as pg:
            counts = {"texts": pg.execute("SELECT count(*) FROM library_texts").fetchone()[0]}
            for kind, count in pg.execute(
                "SELECT kind, count(*) FROM library_items GROUP BY kind"
            ).fetchall():
                counts[kind] = count
        return counts
