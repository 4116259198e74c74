"""CLIP checks on the catalog's images: a score against each image's own prompt, a flag for the
known failure modes, zero-shot labels a person types, and the ranking of candidate seeds.

    checks = ClipChecks(store, "openai/clip-vit-base-patch32")   # the clip_model setting
    report = checks.reports([stored])[stored.cache_key]  # .score (CLIP score), .failure (a flag)
    labels = checks.zero_shot(stored, ["a chihuahua", "a muffin"])  # probabilities, summing to 1
    best = checks.best(candidates)   # the stored image that fits its prompt best

A score is the cosine between CLIP's vectors of the image and of a text, kept in the catalog
(`image_scores`) once per image, CLIP model, kind and text, so asking again costs no model work.
Shown as a CLIP score, 100 x the cosine (at least 0), as torchmetrics' CLIPScore does. The image
service scores every image it stores (`score_new`); older images are scored when first asked
about. A CLIP model that fails to load stops nothing: `problem` says why, naming clip_model, the
image is stored without a score, and what needs a score raises that ConfigError.

The failure-mode check is a heuristic: each image is compared with descriptions of what image
models get wrong (`FAILURE_LABELS`) and with a neutral description (`NEUTRAL_LABEL`), and is
flagged when a failure description fits it better than the neutral one by `FLAG_MARGIN`. CLIP
sees some malformed hands and misses others: a flag picks images for a person to look at; no
flag proves nothing. Importing this module is cheap: the model loads on first use.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from studio.catalog.records import StoredImage
from studio.catalog.store import Store
from studio.core.errors import ConfigError, ParameterError, one_line
from studio.core.prompt_syntax import parse_prompt

if TYPE_CHECKING:
    from studio.vision.clip import ClipModel

# What image models get wrong, as CLIP reads captions; each is compared with NEUTRAL_LABEL.
FAILURE_LABELS = (
    "a picture with malformed hands and wrong fingers",
    "a picture of a person with extra limbs",
    "a picture with a distorted, deformed face",
    "a garbled, incoherent picture",
)
NEUTRAL_LABEL = "a well-made, coherent picture"
# A failure description must beat the neutral one by this much cosine to flag an image: with a
# trained CLIP's logit scale (100) that makes the failure e^2, about 7 times, likelier.
FLAG_MARGIN = 0.02
MAX_LABELS = 20
MAX_LABEL = 200  # characters
IMAGE_VECTORS = 256  # image vectors kept in memory, for zero-shot labels asked one after another


@dataclass(frozen=True)
class FailureCheck:
    """The failure-mode check of one image: the failure description that fits it best, by how
    much it beats the neutral description (cosine), and whether that flags the image."""

    label: str
    margin: float
    flagged: bool


@dataclass(frozen=True)
class ClipReport:
    """What CLIP says of one catalog image."""

    cache_key: str
    clip_model: str
    cosine: float  # between the image and its own prompt
    failure: FailureCheck

    @property
    def score(self) -> float:
        """The CLIP score: 100 x the cosine, at least 0."""
        return clip_score(self.cosine)


@dataclass(frozen=True)
class LabelScore:
    label: str
    probability: float  # CLIP's zero-shot probability among the labels given together
    cosine: float

    @property
    def score(self) -> float:
        return clip_score(self.cosine)


def clip_score(cosine: float) -> float:
    return max(100.0 * float(cosine), 0.0)


def failure_check(cosines: dict[str, float], margin: float = FLAG_MARGIN) -> FailureCheck:
    """The verdict from an image's cosines with FAILURE_LABELS and NEUTRAL_LABEL: flagged when
    the best-fitting failure description beats the neutral one by at least `margin`."""
    missing = [label for label in (*FAILURE_LABELS, NEUTRAL_LABEL) if label not in cosines]
    if missing:
        raise ValueError(f"no cosine for {missing}")
    worst = max(FAILURE_LABELS, key=lambda label: cosines[label])
    lead = float(cosines[worst] - cosines[NEUTRAL_LABEL])
    return FailureCheck(worst, lead, lead >= margin)


def check_labels(labels: Sequence[str]) -> list[str]:
    """The zero-shot labels a person typed, trimmed, without blanks and repeats; an error unless
    2 to MAX_LABELS are left, each under MAX_LABEL characters."""
    if isinstance(labels, str):
        labels = labels.splitlines()
    kept: list[str] = []
    for label in labels:
        if str(label).strip():
            text = one_line(label, "label", MAX_LABEL, "")
            if text not in kept:
                kept.append(text)
    if not 2 <= len(kept) <= MAX_LABELS:
        raise ParameterError(
            f"Zero-shot labels: give 2 to {MAX_LABELS} different labels to choose between (one a "
            f"line, e.g. 'a chihuahua' and 'a muffin'), not {len(kept)}."
        )
    return kept


def prompt_text(prompt: str) -> str:
    """What a prompt says, without weights, BREAK and LoRA tags: the text CLIP compares."""
    try:
        return parse_prompt(prompt).plain
    except ParameterError:  # a prompt from elsewhere that our parser refuses: take it as text
        return prompt


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


class ClipChecks:
    """The CLIP checks of one catalog with the CLIP model the clip_model setting names."""

    def __init__(self, store: Store, name: str, on_status: Callable[[str], None] | None = None):
        self.store = store
        self.name = name.strip()  # the setting as given: scores are kept under it
        self._on_status = on_status or (lambda line: None)
        self._texts: dict[str, np.ndarray] = {}
        self._images: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    problem = ""  # why the model could not be loaded

    @cached_property
    def model(self) -> ClipModel | None:
        """The CLIP model; None when it fails to load (then `problem` says why)."""
        from studio.vision.clip import open_clip

        try:
            return open_clip(self.name)
        except ConfigError as exc:
            self.problem = f"CLIP checks are off: {exc}"
            self._on_status(self.problem)
            return None

    def require(self) -> ClipModel:
        """The model, or the ConfigError that says why there is none."""
        model = self.model
        if model is None:
            raise ConfigError(self.problem)
        return model

    # Scores ---------------------------------------------------------------------------------

    def score_new(self, record: StoredImage, image: Image.Image) -> ClipReport | None:
        """Score an image just stored (its prompt and the failure modes); None, and the image
        stays unscored, when the model cannot be loaded."""
        if self.model is None:
            return None
        self._remember(record.cache_key, self.model.images([image])[0])
        return self.reports([record])[record.cache_key]

    def stored_reports(self, records: Sequence[StoredImage]) -> dict[str, ClipReport]:
        """The reports the catalog holds for `records` (no model work): for image cards."""
        scores = self.store.scores([r.cache_key for r in records], self.name)
        found = {}
        for record in records:
            report = self._report(record, scores.get(record.cache_key, {}))
            if report is not None:
                found[record.cache_key] = report
        return found

    def reports(self, records: Sequence[StoredImage]) -> dict[str, ClipReport]:
        """Every record's report, computing (and keeping) the scores the catalog lacks; raises
        the ConfigError naming clip_model when that needs a model that cannot be loaded."""
        found = self.stored_reports(records)
        missing = [r for r in records if r.cache_key not in found]
        if missing:
            model = self.require()
            texts = [*FAILURE_LABELS, NEUTRAL_LABEL]
            images = self._image_vectors(missing)
            prompts = self._text_vectors([prompt_text(r.prompt) for r in missing])
            fixed = self._text_vectors(texts)
            rows = []
            for record, image, prompt in zip(missing, images, prompts, strict=True):
                rows.append((record.cache_key, "prompt", record.prompt, float(image @ prompt)))
                rows += [(record.cache_key, "failure", label, float(cosine))
                         for label, cosine in zip(texts, fixed @ image, strict=True)]  # fmt: skip
            self.store.add_scores(model.name, rows)
            found.update(self.stored_reports(missing))
        return found

    def best(self, records: Sequence[StoredImage]) -> StoredImage:
        """The record whose image fits its own prompt best (the first of equals)."""
        if not records:
            raise ValueError("best() of no images")
        reports = self.reports(records)
        return max(records, key=lambda r: reports[r.cache_key].cosine)

    def zero_shot(
        self, image: StoredImage | Image.Image, labels: Sequence[str]
    ) -> list[LabelScore]:
        """CLIP's zero-shot probabilities of `labels` (2 to 20 texts) for a catalog image (its
        cosines kept in the catalog) or any picture, in the labels' order."""
        labels = check_labels(labels)
        model = self.require()
        if isinstance(image, StoredImage):
            stored = self.store.scores([image.cache_key], self.name, "label").get(
                image.cache_key, {}
            )
            new = [label for label in labels if ("label", label) not in stored]
            if new:
                vector = self._image_vectors([image])[0]
                cosines = self._text_vectors(new) @ vector
                pairs = zip(new, cosines, strict=True)
                rows = [(image.cache_key, "label", text, float(c)) for text, c in pairs]
                self.store.add_scores(self.name, rows)
                stored.update({("label", t): float(c) for _, _, t, c in rows})
            cosines = np.array([stored[("label", label)] for label in labels])
        else:
            vector = model.images([image])[0]
            cosines = self._text_vectors(labels) @ vector
        probabilities = softmax(model.logit_scale * cosines)
        return [
            LabelScore(label, float(p), float(c))
            for label, p, c in zip(labels, probabilities, cosines, strict=True)
        ]

    # Internals ------------------------------------------------------------------------------

    def _report(
        self, record: StoredImage, scores: dict[tuple[str, str], float]
    ) -> ClipReport | None:
        cosine = scores.get(("prompt", record.prompt))
        failures = {label: value for (kind, label), value in scores.items() if kind == "failure"}
        try:
            failure = failure_check(failures)
        except ValueError:  # scored before the failure labels changed: score it again
            return None
        if cosine is None:
            return None
        return ClipReport(record.cache_key, self.name, cosine, failure)

    def _text_vectors(self, texts: Sequence[str]) -> np.ndarray:
        model = self.require()
        new = [text for text in dict.fromkeys(texts) if text not in self._texts]
        if new:
            for text, vector in zip(new, model.texts(new), strict=True):
                self._texts[text] = vector
        if not texts:
            return np.zeros((0, model.dim), dtype=np.float32)
        return np.stack([self._texts[text] for text in texts])

    def _image_vectors(self, records: Sequence[StoredImage]) -> np.ndarray:
        model = self.require()
        with self._lock:
            known = {r.cache_key: self._images.get(r.cache_key) for r in records}
        missing = [r for r in records if known[r.cache_key] is None]
        if missing:
            pictures = []
            for record in missing:
                with Image.open(self.store.image_path(record)) as picture:
                    picture.load()
                    pictures.append(picture.copy())
            for record, vector in zip(missing, model.images(pictures), strict=True):
                known[record.cache_key] = self._remember(record.cache_key, vector)
        return np.stack([known[r.cache_key] for r in records])

    def _remember(self, key: str, vector: np.ndarray) -> np.ndarray:
        with self._lock:
            self._images[key] = vector
            self._images.move_to_end(key)
            while len(self._images) > IMAGE_VECTORS:
                self._images.popitem(last=False)
        return vector


def open_clip_checks(
    store: Store, clip_model: str, on_status: Callable[[str], None] | None = None
) -> ClipChecks | None:
    """The CLIP checks for the clip_model setting; None when it is empty."""
    return ClipChecks(store, clip_model, on_status) if clip_model.strip() else None
