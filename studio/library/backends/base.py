"""What the library asks of a database (`LibraryDB`), and the filters every database reads
the same way (`FILTERS`, `check_filters`, `where_clause`, `FACETS_SQL`).

Two databases meet the contract: the catalog's own tables with usearch index files beside them
(`catalog.CatalogLibrary`) and a PostgreSQL server with pgvector shared by a team
(`postgres.ServerLibrary`). `Library.db` is one or the other, chosen by library_db; the library
service and the CSV importer use nothing outside `LibraryDB`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from studio.core.errors import StudioError

if TYPE_CHECKING:
    import numpy as np

    from studio.catalog.store import Store
    from studio.library.items import LibraryItem, NewItem
    from studio.library.vector_index import Match

FILTERS = ("season", "episode", "target", "style", "model", "placeholder", "since", "until",
           "source_site")  # fmt: skip
FACETS = ("target", "style", "model", "source_site")  # filters whose values can be listed
FACETS_SQL = {
    name: f"SELECT DISTINCT {name} FROM library_items WHERE {name} IS NOT NULL ORDER BY 1"
    for name in FACETS
}


def check_filters(filters: Mapping[str, Any]) -> dict[str, Any]:
    """The filters that are set, checked: unknown names and unreadable dates are errors."""
    unknown = sorted(set(filters) - set(FILTERS))
    if unknown:
        raise StudioError(
            f"Unknown library filter {', '.join(unknown)}; the filters are {', '.join(FILTERS)}."
        )
    chosen = {name: value for name, value in filters.items() if value not in (None, "")}
    for name in ("since", "until"):
        if name in chosen:
            value = chosen[name]
            try:
                chosen[name] = (
                    value if isinstance(value, date) else date.fromisoformat(str(value))
                ).isoformat()
            except ValueError:
                raise StudioError(
                    f"The {name} filter {value!r} is not a date; write it as YYYY-MM-DD."
                ) from None
    return chosen


def where_clause(filters: Mapping[str, Any], mark: str = "?") -> tuple[str, list[Any]]:
    """Checked `filters` as an SQL condition on library_items, with `mark` for each value, and
    the values: one definition for the catalog (SQLite, `?`) and the server (PostgreSQL, `%s`)."""
    clauses, values = [], []
    for name, value in filters.items():
        if name == "since":
            clauses.append(f"created_at >= {mark}")
            values.append(value)
        elif name == "until":
            clauses.append(f"created_at < {mark}")
            values.append((date.fromisoformat(value) + timedelta(days=1)).isoformat())
        elif name == "placeholder":
            clauses.append(f"placeholder = {mark}")
            values.append(bool(value))
        else:
            clauses.append(f"{name} = {mark}")
            values.append(value)
    return " AND ".join(clauses) or "TRUE", values


class LibraryDB(Protocol):
    """Where the library's texts, items, vectors and image hashes live.

    A text is stored once, whatever number of items (catalog images, prompt records, imported
    rows) carry it; vectors belong to a space (one embedder, or CLIP's text or image side) and
    are keyed by text id (text spaces) or item id (image spaces). Every method may be called from
    several threads.
    """

    store: Store  # the catalog this studio works on: its images and prompt records come in
    where: str  # where the data lives, for messages: a file path, or a URL without its password

    def close(self) -> None: ...

    # Writing

    def add_items(self, items: Sequence[NewItem]) -> int:
        """Record `items` (their texts first); an item already there (same kind and ref) is
        left as it is. How many were added."""
        ...

    def sync_catalog(self) -> int:
        """Bring in the catalog images and prompt records made since the last sync; how many
        items were added."""
        ...

    def existing_refs(self, kind: str, refs: Collection[str]) -> set[str]:
        """Which of `refs` are already items of `kind`."""
        ...

    # Vectors

    def pending_texts(self, space: str, limit: int = 10_000) -> list[tuple[int, str]]:
        """(text id, text) of texts with no vector in `space` yet, oldest first (vectors are
        added in id order)."""
        ...

    def pending_count(self, space: str) -> int:
        """How many texts have no vector in `space` yet."""
        ...

    def pending_images(self, space: str, limit: int = 1_000) -> list[tuple[int, str]]:
        """(item id, image cache key) of this catalog's images with no vector in `space` yet."""
        ...

    def add_vectors(self, space: str, ids: Sequence[int], vectors: np.ndarray) -> None:
        """Store `vectors` (one row per id, normalised here) in `space`; ids already there are
        left as they are."""
        ...

    def save_indexes(self) -> None:
        """Write the vector indexes out, where the database keeps them in files."""
        ...

    def nearest(
        self, space: str, query: np.ndarray, k: int, allowed: Collection[int] | None = None
    ) -> list[Match]:
        """The `k` ids nearest to `query` in `space` (among `allowed`, when given), best first."""
        ...

    # Reading

    def allowed_texts(self, filters: Mapping[str, Any]) -> set[int] | None:
        """Ids of the texts with an item that passes `filters` (checked by `check_filters`);
        None when none are set."""
        ...

    def texts(self, ids: Collection[int]) -> dict[int, str]:
        """text id -> text, for those of `ids` that exist."""
        ...

    def text_id(self, text: str) -> int | None: ...

    def items_of(
        self, text_ids: Collection[int], filters: Mapping[str, Any] | None = None
    ) -> dict[int, list[LibraryItem]]:
        """text id -> its items passing `filters`, images first, newest first."""
        ...

    def items(self, ids: Collection[int]) -> dict[int, LibraryItem]:
        """item id -> item, for those of `ids` that exist."""
        ...

    def item_of_image(self, cache_key: str) -> LibraryItem | None:
        """The item of the catalog image with this cache key; None when it has none."""
        ...

    def unhashed_images(self, limit: int = 1_000) -> list[tuple[int, str]]:
        """(item id, image cache key) of this catalog's images with no perceptual hash yet."""
        ...

    def add_hashes(self, hashes: Sequence[tuple[int, int]]) -> None:
        """Store (item id, 64-bit perceptual hash as a signed int) pairs, replacing old ones."""
        ...

    def hashes(self) -> tuple[np.ndarray, np.ndarray]:
        """(item ids, 64-bit perceptual hashes as uint64) of every image hashed so far."""
        ...

    def facets(self) -> dict[str, list[str]]:
        """The values the library holds for each filter in FACETS."""
        ...

    def counts(self) -> dict[str, int]:
        """How many texts (`texts`) and items of each kind the library holds."""
        ...
