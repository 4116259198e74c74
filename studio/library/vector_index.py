"""A vector index for the prompt library: HNSW (usearch) over unit vectors keyed by integer ids,
kept in one file beside the catalog and rebuilt from the catalog's own copy of the vectors when
that file is missing, corrupt or out of step.

Why usearch and not sqlite-vec: `bench/bench_library.py` measures p95 search latency of a few ms
at 1M prompts with recall@10 above 0.95, where exact search (what sqlite-vec's `vec0` tables do)
costs about 90 ms per query on 2 cores at 1M; and this Python's sqlite3 cannot load extensions.

Filters: when the allowed ids are few (`EXACT_LIMIT`), the query is scored exactly against their
vectors (read back from the index); otherwise the graph is searched for more and more neighbours
until `k` allowed ones are found.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from usearch.index import Index

CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 256  # recall@10 >= 0.99 at 100k, >= 0.95 at 1M (bench/bench_library.py)
# Filtered searches over at most this many ids are exact (reading vectors back costs about 5 us
# each); over more, the graph is asked for more and more neighbours, up to GRAPH_LIMIT, and then
# the search falls back to exact.
EXACT_LIMIT = 2_000
GRAPH_LIMIT = 20_000


@dataclass(frozen=True)
class Match:
    id: int
    score: float  # cosine similarity, 1 for the same direction


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (zero rows stay zero), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def exact_search(ids: np.ndarray, vectors: np.ndarray, query: np.ndarray, k: int) -> list[Match]:
    """The `k` rows of `vectors` most similar to `query`, best first (both unit length)."""
    if len(ids) == 0 or k <= 0:
        return []
    scores = vectors @ query
    k = min(k, len(ids))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [Match(int(ids[i]), float(scores[i])) for i in top]


class VectorIndex:
    """An HNSW index of `dim`-dimensional unit vectors saved at `path`."""

    def __init__(self, path: Path | None, dim: int, index: Index | None = None):
        self.path = path
        self.dim = dim
        self.index = index or Index(
            ndim=dim,
            metric="cos",
            dtype="f16",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )
        self.index.expansion_search = EXPANSION_SEARCH

    @classmethod
    def load(cls, path: Path, dim: int) -> tuple[VectorIndex | None, str]:
        """The index saved at `path`, or (None, why) when it is missing or unusable."""
        if not path.is_file():
            return None, "missing"
        try:
            index = Index.restore(str(path))
        except (ValueError, RuntimeError, OSError) as exc:
            return None, f"unreadable ({exc})"
        if index is None:
            return None, "unreadable (not an index file)"
        if index.ndim != dim:
            return None, f"made for {index.ndim}-dimensional vectors, not {dim}"
        return cls(path, dim, index), ""

    @classmethod
    def build(
        cls,
        path: Path | None,
        dim: int,
        batches: Iterable[tuple[np.ndarray, np.ndarray]],
        on_added: Callable[[int], None] | None = None,
    ) -> VectorIndex:
        """A new index of every (ids, vectors) batch; saved when it has a path."""
        made = cls(path, dim)
        for ids, vectors in batches:
            made.add(ids, vectors)
            if on_added is not None:
                on_added(len(ids))
        made.save()
        return made

    def __len__(self) -> int:
        return len(self.index)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        if len(ids) == 0:
            return np.zeros(0, dtype=bool)
        return np.asarray(self.index.contains(np.asarray(ids, dtype=np.uint64)), dtype=bool)

    def add(self, ids: np.ndarray, vectors: np.ndarray, threads: int = 0) -> None:
        ids = np.asarray(ids, dtype=np.uint64)
        if len(ids) == 0:
            return
        vectors = unit(np.asarray(vectors).reshape(len(ids), self.dim))
        fresh = ~self.contains(ids)
        if fresh.any():
            self.index.add(ids[fresh], vectors[fresh], threads=threads)

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".tmp-{self.path.name}")
        self.index.save(str(tmp))
        tmp.replace(self.path)

    def vectors(self, ids: np.ndarray) -> np.ndarray:
        found = self.index.get(np.asarray(ids, dtype=np.uint64))
        if isinstance(found, tuple):
            found = np.vstack(found) if found else np.zeros((0, self.dim))
        return np.asarray(found, dtype=np.float32).reshape(len(ids), self.dim)

    def search(
        self, query: np.ndarray, k: int, allowed: Collection[int] | None = None
    ) -> list[Match]:
        """The `k` nearest ids to `query` (among `allowed`, when given), best first."""
        total = len(self.index)
        if total == 0 or k <= 0:
            return []
        query = unit(np.asarray(query).reshape(self.dim))
        if allowed is not None:
            if not allowed:
                return []
            if len(allowed) <= EXACT_LIMIT:
                return self._exact(query, k, allowed)
        # Enough neighbours that about 4k of them are allowed (near-ties outside the query's
        # neighbourhood need the margin: 2k gave recall 0.92 at 10% of 100k), then more while
        # too few are.
        count = k
        if allowed is not None:
            share = min(1.0, len(allowed) / total)
            count = max(EXPANSION_SEARCH, int(4 * k / share))
        count = min(total, count)
        while True:
            found = self.index.search(query, count)
            matches = [
                Match(int(key), float(1.0 - distance))
                for key, distance in zip(found.keys, found.distances, strict=True)
                if allowed is None or int(key) in allowed
            ]
            if len(matches) >= k or count >= total:
                return matches[:k]
            if count >= GRAPH_LIMIT:
                return self._exact(query, k, allowed)
            count = min(total, GRAPH_LIMIT, count * 4)

    def _exact(self, query: np.ndarray, k: int, allowed: Collection[int]) -> list[Match]:
        ids = np.fromiter(allowed, dtype=np.int64, count=len(allowed))
        ids = ids[self.contains(ids)]
        return exact_search(ids, unit(self.vectors(ids)), query, k)
