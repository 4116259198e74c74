"""The library's vector index: recall against exact search, filters on both paths, the file."""

from __future__ import annotations

import numpy as np
import pytest

from studio.library import vector_index
from studio.library.vector_index import VectorIndex, exact_search, unit


def clustered(n: int, dim: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(n // 50, 4), dim))
    return unit(centres[rng.integers(0, len(centres), n)] + 0.7 * rng.standard_normal((n, dim)))


@pytest.fixture(scope="module")
def built():
    vectors = clustered(5_000)
    ids = np.arange(1, len(vectors) + 1)
    return VectorIndex.build(None, vectors.shape[1], [(ids, vectors)]), ids, vectors


def recall(found, truth) -> float:
    return len({m.id for m in found} & {m.id for m in truth}) / len(truth)


def test_search_agrees_with_exact_search(built):
    index, ids, vectors = built
    queries = unit(
        vectors[:50] + 0.05 * np.random.default_rng(1).standard_normal(vectors[:50].shape)
    )
    scores = [recall(index.search(q, 10), exact_search(ids, vectors, q, 10)) for q in queries]
    assert np.mean(scores) >= 0.95
    best = index.search(vectors[7], 1)[0]
    assert best.id == ids[7] and best.score == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("share", [0.001, 0.02, 0.3])
def test_filtered_search_returns_only_allowed_ids_on_every_path(built, share, monkeypatch):
    monkeypatch.setattr(vector_index, "EXACT_LIMIT", 20)  # 0.001 exact; the others the graph
    index, ids, vectors = built
    rng = np.random.default_rng(2)
    allowed = set(rng.choice(ids, int(len(ids) * share), replace=False).tolist())
    chosen = np.array(sorted(allowed))
    for query in vectors[100:110]:
        found = index.search(query, 5, allowed)
        assert {m.id for m in found} <= allowed
        truth = exact_search(chosen, vectors[chosen - 1], query, 5)
        assert recall(found, truth) >= 0.8
        assert len(found) == min(5, len(allowed))
    assert index.search(vectors[0], 5, set()) == []


def test_the_graph_falls_back_to_exact_when_allowed_ids_are_far_away(built, monkeypatch):
    monkeypatch.setattr(vector_index, "EXACT_LIMIT", 0)
    monkeypatch.setattr(vector_index, "GRAPH_LIMIT", 50)
    index, ids, vectors = built
    allowed = {int(ids[-1]), int(ids[-2])}
    found = index.search(vectors[0], 2, allowed)
    assert {m.id for m in found} == allowed


def test_an_index_saved_and_loaded_answers_the_same(tmp_path, built):
    _, ids, vectors = built
    path = tmp_path / "space.usearch"
    made = VectorIndex.build(path, vectors.shape[1], [(ids[:500], vectors[:500])])
    loaded, why = VectorIndex.load(path, vectors.shape[1])
    assert why == "" and len(loaded) == 500
    assert loaded.search(vectors[3], 3) == made.search(vectors[3], 3)
    assert VectorIndex.load(path, 16)[1] == "made for 32-dimensional vectors, not 16"
    assert VectorIndex.load(tmp_path / "none.usearch", 32) == (None, "missing")
    (tmp_path / "bad.usearch").write_bytes(b"garbage" * 50)
    assert VectorIndex.load(tmp_path / "bad.usearch", 32)[1].startswith("unreadable")
    made.add(ids[:10], vectors[:10])  # already there: nothing added twice
    assert len(made) == 500
