"""The safety filter: every image the studio makes is checked before it is stored, when one is set.

    STUDIO_SAFETY_CHECKER=diffusers python dataprep.py

`safety_checker` (STUDIO_SAFETY_CHECKER) names the checker:
- empty (the default): no filter; images are stored unchecked and shown as they are;
- `diffusers`: diffusers' `StableDiffusionSafetyChecker`, from
  CompVis/stable-diffusion-safety-checker;
- a hub id or a folder of that checker: `config.json`, `model.safetensors` and the CLIP image
  processor's `preprocessor_config.json` side by side, or a Stable Diffusion pipeline folder with
  `safety_checker/` and `feature_extractor/`;
- `classifier:<hub id or folder>`: a transformers image-classification model; an image is flagged
  when one of `FLAGGED_LABELS` (nsfw, porn, hentai, sexy, explicit, unsafe) scores `FLAG_SCORE`
  or more.

Hub ids come from the Hugging Face cache, else are downloaded (never when HF_HUB_OFFLINE is set);
only safetensors weights are loaded. The checker runs on the CPU in float32, loaded on first use.

A verdict is recorded in the catalog with the image (`Store.add_image(..., safety=)`) and in its
PNG's provenance; the pixels are never changed: the dashboard blurs a flagged image, says why, and
shows it on a click. A checker that cannot be loaded does not stop the studio: images are made and
recorded as `unchecked`, with the reason, which the dashboard shows. An image backend's own refusal
(OpenAI's content policy) is recorded as `refused` under the request's cache key, with no image.
Importing this module is cheap: torch, diffusers and transformers load with the checker.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageDraw, ImageFilter

from studio.catalog.records import CLEAR, FLAGGED, UNCHECKED, SafetyVerdict
from studio.core.config import setting
from studio.core.errors import ConfigError
from studio.core.inputs import to_rgb

if TYPE_CHECKING:
    from studio.core.config import Settings

log = logging.getLogger(__name__)

DIFFUSERS_CHECKER = "CompVis/stable-diffusion-safety-checker"  # what `diffusers` names
CLASSIFIER_PREFIX = "classifier:"
FLAGGED_LABELS = frozenset({"nsfw", "porn", "hentai", "sexy", "explicit", "unsafe"})
FLAG_SCORE = 0.5  # a classifier's probability for a flagged label from which an image is flagged


class SafetyFilter:
    """The configured checker, loaded on first use and shared by threads (one lock).

    `check` never raises: a checker that cannot load, or fails on an image, gives an `unchecked`
    verdict that says why, so the image is still made and stored."""

    def __init__(self, source: str):
        self.source = source.strip()
        self._checker: _DiffusersChecker | _ClassifierChecker | None = None
        self.load_error = ""  # why the checker could not be loaded, once tried
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the checker now; a `ConfigError` naming the setting when it cannot be."""
        with self._lock:
            self._load()

    def _load(self) -> None:
        if self._checker is not None:
            return
        try:
            self._checker = load_checker(self.source)
        except ConfigError as exc:
            self.load_error = str(exc)
            raise

    def check(self, image: Image.Image) -> SafetyVerdict:
        with self._lock:
            if self.load_error:
                return SafetyVerdict(UNCHECKED, self.load_error, self.source)
            try:
                self._load()
            except ConfigError as exc:
                log.warning("%s", exc)
                return SafetyVerdict(UNCHECKED, str(exc), self.source)
            try:
                flagged, score, reason = self._checker.check(to_rgb(image))
            except Exception as exc:  # noqa: BLE001 - an unchecked image beats a lost one
                log.exception("The safety checker %r failed", self.source)
                return SafetyVerdict(
                    UNCHECKED,
                    f"The safety checker failed on this image ({type(exc).__name__}: {exc}).",
                    self.source,
                )
        return SafetyVerdict(FLAGGED if flagged else CLEAR, reason, self.source, score)


def open_safety_filter(settings: Settings) -> SafetyFilter | None:
    """The filter `safety_checker` names; None when it is empty (no filter)."""
    source = settings.safety_checker.strip()
    return SafetyFilter(source) if source else None


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


def _load_error(source: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"The safety checker {source!r} could not be loaded ({type(exc).__name__}: "
        f"{' '.join(str(exc).split())[:300]}). Set {setting('safety_checker')} to `diffusers`, "
        "a folder with a StableDiffusionSafetyChecker (config.json, model.safetensors, "
        "preprocessor_config.json) or `classifier:<folder>`, or leave it empty to turn the "
        "filter off. Images are made meanwhile, marked as not checked."
    )


def load_checker(source: str) -> _DiffusersChecker | _ClassifierChecker:
    """The checker `source` names (a `safety_checker` value), loaded; `ConfigError` if it can't."""
    if source.startswith(CLASSIFIER_PREFIX):
        model = source.removeprefix(CLASSIFIER_PREFIX).strip()
        try:
            return _ClassifierChecker(model)
        except Exception as exc:  # noqa: BLE001 - any failure to load says the same thing
            raise _load_error(source, exc) from None
    try:
        return _DiffusersChecker(DIFFUSERS_CHECKER if source == "diffusers" else source)
    except Exception as exc:  # noqa: BLE001
        raise _load_error(source, exc) from None


class _NotBlackedOut(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "black image" not in record.getMessage()

    def __eq__(self, other: object) -> bool:  # added once however many checkers load
        return isinstance(other, _NotBlackedOut)

    def __hash__(self) -> int:
        return hash(_NotBlackedOut)


class _DiffusersChecker:
    """diffusers' StableDiffusionSafetyChecker: its own verdict, and as the score the largest
    concept margin (cosine similarity minus the concept's threshold; above 0 flags)."""

    def __init__(self, source: str):
        from diffusers.pipelines.stable_diffusion import safety_checker as safety_checker_module
        from transformers import CLIPImageProcessor

        StableDiffusionSafetyChecker = safety_checker_module.StableDiffusionSafetyChecker  # noqa: N806

        options: dict[str, Any] = {"local_files_only": _offline()}
        folder = Path(source).expanduser()
        parts = ("safety_checker", "feature_extractor")
        if (folder / parts[0]).is_dir() or (folder / "model_index.json").is_file():
            model_options, processor_options = {"subfolder": parts[0]}, {"subfolder": parts[1]}
        else:
            model_options = processor_options = {}
        where = str(folder) if folder.exists() else source
        # Its warning says a black image is returned: not here, the pixels are kept.
        logging.getLogger(safety_checker_module.__name__).addFilter(_NotBlackedOut())
        self.model = StableDiffusionSafetyChecker.from_pretrained(
            where, use_safetensors=True, **options, **model_options
        ).eval()
        self.processor = CLIPImageProcessor.from_pretrained(where, **options, **processor_options)

    def check(self, image: Image.Image) -> tuple[bool, float, str]:
        import torch
        from diffusers.pipelines.stable_diffusion.safety_checker import cosine_distance

        embeds: list[torch.Tensor] = []
        hook = self.model.visual_projection.register_forward_hook(
            lambda _module, _inputs, output: embeds.append(output)
        )
        try:
            pixels = self.processor(images=[image], return_tensors="pt").pixel_values
            # The checker blacks out flagged images in what it is given: a stand-in, not ours.
            _, flags = self.model(clip_input=pixels.float(), images=[torch.zeros(1)])
        finally:
            hook.remove()
        with torch.no_grad():
            margins = cosine_distance(embeds[0], self.model.concept_embeds)[0]
            score = float((margins - self.model.concept_embeds_weights).max())
        flagged = bool(flags[0])
        reason = (
            "The diffusers safety checker found an NSFW concept"
            if flagged
            else "The diffusers safety checker found nothing"
        )
        return flagged, round(score, 3), f"{reason} (concept margin {score:+.3f})."


class _ClassifierChecker:
    """A transformers image-classification model; flagged when a label of FLAGGED_LABELS has a
    probability of FLAG_SCORE or more."""

    def __init__(self, source: str):
        from transformers import pipeline

        folder = Path(source).expanduser()
        self.pipe = pipeline(
            "image-classification",
            model=str(folder) if folder.exists() else source,
            device=-1,
            model_kwargs={"use_safetensors": True},  # HF_HUB_OFFLINE: the hub's own switch
        )
        labels = {str(label).lower() for label in self.pipe.model.config.id2label.values()}
        if not labels & FLAGGED_LABELS:
            raise ValueError(
                f"its labels ({', '.join(sorted(labels))}) include none of "
                f"{', '.join(sorted(FLAGGED_LABELS))}"
            )

    def check(self, image: Image.Image) -> tuple[bool, float, str]:
        scores = self.pipe(image, top_k=None)
        flagged = [s for s in scores if str(s["label"]).lower() in FLAGGED_LABELS]
        top = max(flagged, key=lambda s: s["score"])
        score = float(top["score"])
        if score >= FLAG_SCORE:
            return True, round(score, 3), f"The classifier says {top['label']} ({score:.0%})."
        return False, round(score, 3), f"The classifier found nothing ({top['label']} {score:.0%})."


# Pictures for the dashboard ---------------------------------------------------------------------


def blurred(image: Image.Image) -> Image.Image:
    """`image` blurred past recognition, for showing a flagged image before it is revealed."""
    image = to_rgb(image)
    radius = max(6, max(image.size) // 16)
    return image.filter(ImageFilter.GaussianBlur(radius))


def blurred_file(path: Path) -> Image.Image:
    """The PNG at `path`, decoded and blurred (the file itself is never changed)."""
    with Image.open(path) as image:
        return blurred(image)


def refusal_picture(width: int, height: int) -> Image.Image:
    """What stands in for an image the server refused to make: a blurred grey field with a
    struck-through frame, at the request's aspect (at most 512 a side). Never stored."""
    scale = 512 / max(width, height, 1)
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    picture = Image.new("RGB", size, (120, 120, 128))
    draw = ImageDraw.Draw(picture)
    inset = min(size) // 6
    draw.rectangle(
        (inset, inset, size[0] - inset, size[1] - inset), outline=(200, 200, 205), width=6
    )
    draw.line((inset, size[1] - inset, size[0] - inset, inset), fill=(200, 200, 205), width=6)
    return picture.filter(ImageFilter.GaussianBlur(3))
