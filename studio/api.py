"""The studio's public Python API: `open_studio` wires settings to the catalog, the LLM and the
image backend once; `dataprep.py`, the dashboard, the benchmarks and the tests all use it.

    from studio import open_studio
    with open_studio(data_dir="out", image_model="demo", steps=4) as studio:   # Settings fields
        rec = studio.generate("a lighthouse at night", seed=1)                  # txt2img
        rec = studio.generate("stormy sea", mode="img2img", init_image="in.png", strength=0.6)
        rec = studio.generate("a red door", mode="inpaint", init_image="in.png", mask="mask.png")
        rec = studio.generate("the coast", mode="outpaint", init_image="in.png",
                              outpaint={"left": 128})
        recs = studio.variations("in.png", n=4)
        studio.character_portrait("Sherlock Holmes")        # the LLM's look, then a portrait
        studio.alternate_reality("Sherlock Holmes", "film noir", strength=0.6)
        board = studio.storyboard(1, 3)                     # 4-6 moments, rendered in order
        new = studio.revise(rec.key, "night instead of day")  # chain-of-thought, new image
        hits = studio.library.search("castelo à noite", k=5)  # prompts by meaning, any language
    rec.path, rec.cached, rec.key   # the PNG in the catalog, whether it was already there, its key

Expected failures raise `studio.core.errors.StudioError` subclasses whose message says what to do.
The LLM and the image model load on first use: opening a studio is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from studio.catalog.records import StoredImage
from studio.catalog.store import Store
from studio.core.config import Settings, check_settings, load_settings, setting
from studio.core.errors import ConfigError, ParameterError
from studio.core.inputs import ImageSource, read_image
from studio.core.metadata import infotext_of, parse_parameters
from studio.core.params import (
    CONTROL_FIELDS,
    OUTPAINT_SIDES,
    SAMPLER_NAMES,
    RenderRequest,
    outpaint_size,
    resolve_seed,
)
from studio.core.samplers import our_sampler
from studio.core.targets import STUDIO_TARGET, Target
from studio.images.backends.base import ImageBackend, StepCallback
from studio.images.backends.registry import open_image_backend
from studio.images.interpolation import Interpolation
from studio.images.safety import SafetyFilter, open_safety_filter
from studio.images.service import ImageResult, ImageService, ImageTask
from studio.workflows import characters, revisions, storyboards
from studio.workflows.host import catalog_image

if TYPE_CHECKING:
    from studio.catalog.job_log import JobRecord
    from studio.catalog.records import CharacterRecord
    from studio.core.dataset import Series
    from studio.images.strips import DenoisingStrip, DenoisingStrips, StripSource
    from studio.library.service import Library
    from studio.llm.base import ChatBackend
    from studio.llm.client import LLM
    from studio.vision.checks import ClipChecks, ClipReport, LabelScore
    from studio.writing.quality import QualityReport
    from studio.writing.storyboards import Storyboard

DEFAULT_STRENGTH = {"img2img": 0.6, "inpaint": 1.0, "variation": 0.35}


class Studio:
    """One catalog, one LLM and one image backend, made from one `Settings`."""

    def __init__(
        self,
        settings: Settings,
        on_status: Callable[[str], None] | None = None,
        backend: ImageBackend | None = None,
        chat_backend: ChatBackend | None = None,
        series: Series | None = None,
    ):
        """`backend` and `chat_backend` replace the ones the settings name (a model already
        loaded and shared, or a fake in tests); the catalog still caches the LLM's answers.
        `series` replaces the one the `series` setting names (loaded with a column mapping)."""
        self.settings = settings
        self.store = Store(settings.data_dir)
        self._on_status = on_status
        self._chat_backend = chat_backend
        if backend is not None:
            self.__dict__["backend"] = backend
        if series is not None:
            self.__dict__["series"] = series

    def __enter__(self) -> Studio:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if "library" in self.__dict__:
            self.library.close()
        self.store.close()

    @cached_property
    def backend(self) -> ImageBackend:
        """The image backend the settings name (weights load when it first renders)."""
        return open_image_backend(self.settings)

    @cached_property
    def safety(self) -> SafetyFilter | None:
        """The safety filter `safety_checker` names (loaded when it first checks), or None."""
        return open_safety_filter(self.settings)

    @cached_property
    def clip_checks(self) -> ClipChecks | None:
        """The CLIP checks with the clip_model setting's model (loaded when it first scores),
        or None when no CLIP model is set."""
        from studio.vision.checks import open_clip_checks

        return open_clip_checks(self.store, self.settings.clip_model, self._on_status)

    @cached_property
    def images(self) -> ImageService:
        return ImageService(self.store, self.backend, self.safety, self.clip_checks)

    @cached_property
    def llm(self) -> LLM:
        from studio.llm.choice import default_concurrency
        from studio.llm.client import LLM, make_llm

        if self._chat_backend is not None:
            s = self.settings
            return LLM(
                self._chat_backend,
                self.store,
                s.llm_temperature,
                s.llm_seed,
                concurrency=default_concurrency(s),
            )
        return make_llm(self.settings, self.store, on_status=self._on_status)

    @cached_property
    def library(self) -> Library:
        """The prompt library: search by meaning or image, improve an idea, import a CSV."""
        from studio.library.service import Library

        return Library(self, self._on_status)

    @cached_property
    def series(self) -> Series:
        """The series the settings name (rows that cannot be read are skipped)."""
        from studio.core.dataset import load_series

        return load_series(self.settings.series)[0]

    # Making images ------------------------------------------------------------------------------

    def request(
        self,
        prompt: str = "",
        *,
        mode: str = "txt2img",
        init_image: ImageSource | None = None,
        mask: ImageSource | None = None,
        strength: float | None = None,
        outpaint: Mapping[str, int] | tuple[int, int, int, int] | None = None,
        control_image: ImageSource | None = None,
        control_preprocess: bool = True,
        canny_thresholds: tuple[int, int] | None = None,
        **values: Any,
    ) -> RenderRequest:
        """A checked request from the settings' defaults, `values` (RenderRequest fields) and the
        mode's inputs, which are stored in the catalog and named by their sha256. A
        `control_image` (a sketch, a picture for Canny edges, a depth map) guides a txt2img
        request as `guide` says, with `values`' control_type, control_scale, control_start and
        control_end."""
        s = self.settings
        request = RenderRequest(prompt, "", s.sampler, s.steps, s.cfg, s.width, s.height, s.seed)
        request = replace(request, **values, mode=mode)
        # A1111's dialect: seed -1 is drawn now (the record and the PNG get the drawn seed), and
        # a sampler may be named as A1111, ComfyUI or k-diffusion name it
        request = replace(request, seed=resolve_seed(request.seed))
        if isinstance(request.sampler, str) and request.sampler not in SAMPLER_NAMES:
            request = replace(request, sampler=our_sampler(request.sampler))
        if init_image is not None:
            init_sha = self.images.add_input(init_image)
            init = self.images.input_image(init_sha)
            width, height = init.size
            if mode == "outpaint":
                amounts = _outpaint_amounts(outpaint)
                width, height = outpaint_size(init.size, amounts)
                request = replace(request, outpaint=amounts)
            size = {"width": width, "height": height}
            request = replace(request, init_image=init_sha, **{**size, **_sizes(values)})
            if mask is not None:
                request = replace(request, mask_image=self.images.add_mask(mask, init_sha))
        if mode in DEFAULT_STRENGTH:
            request = replace(request, strength=DEFAULT_STRENGTH[mode] if strength is None
                              else strength)  # fmt: skip
        elif strength is not None:
            request = replace(request, strength=strength)
        if control_image is not None:
            request = self.guide(
                request,
                control_image,
                preprocess=control_preprocess,
                canny_thresholds=canny_thresholds,
            )
        request.check()
        return request

    def guide(
        self,
        request: RenderRequest,
        control_image: ImageSource,
        control_type: str | None = None,
        *,
        scale: float | None = None,
        start: float | None = None,
        end: float | None = None,
        resize: str | None = None,
        preprocess: bool = True,
        canny_thresholds: tuple[int, int] | None = None,
    ) -> RenderRequest:
        """`request` guided by a ControlNet: `control_image` made into what `control_type`'s
        ControlNet reads (`studio.images.control.control_map`: a sketch normalised to white lines on
        black, Canny edges, a depth map given or estimated by the `depth_model`) at the request's
        size (a picture of another shape brought to it by the resize mode: just resize, crop and
        resize, resize and fill), stored in the catalog and named by its sha256. Works in every
        mode; set the request's size (or init image) first. Unset values come from `request`,
        else scribble, scale 1, start 0, end 1, crop and resize."""
        from studio.core.inputs import png_bytes
        from studio.core.params import DEFAULT_CONTROL_RESIZE
        from studio.images.control import CANNY_THRESHOLDS, control_map

        def pick(given: Any, current: Any, default: Any) -> Any:
            return given if given is not None else current if current is not None else default

        kind = pick(control_type, request.control_type, "scribble")
        fit = pick(resize, request.control_resize, DEFAULT_CONTROL_RESIZE)
        picture = control_map(
            read_image(control_image, "control image"),
            kind,
            (request.width, request.height),
            preprocess=preprocess,
            canny_thresholds=canny_thresholds or CANNY_THRESHOLDS,
            depth_model=self.settings.depth_model,
            resize=fit,
        )
        guided = replace(
            request,
            control_image=self.store.add_input(png_bytes(picture)),
            control_type=kind,
            control_scale=pick(scale, request.control_scale, 1.0),
            control_start=pick(start, request.control_start, 0.0),
            control_end=pick(end, request.control_end, 1.0),
            control_resize=fit,
        )
        guided.check()
        return guided

    def generate(
        self,
        prompt: str = "",
        *,
        target: Target = STUDIO_TARGET,
        provenance: Mapping[str, Any] | None = None,
        on_step: StepCallback | None = None,
        **options: Any,
    ) -> ImageResult:
        """One image: the catalog's when this exact request was made before, else rendered and
        stored. `options`: mode, init_image, mask, strength, outpaint and RenderRequest fields."""
        request = self.request(prompt, **options)
        job = ImageTask(request, target, provenance=dict(provenance or {}))
        return self.images.make_one(job, on_step=on_step)

    def variations(
        self,
        image: ImageSource,
        n: int = 4,
        prompt: str | None = None,
        *,
        guide: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> list[ImageResult]:
        """`n` variations of `image`: its own prompt (from its PNG metadata, when it has any)
        or `prompt`, new seeds, a low strength. `guide`: `guide`'s arguments (control_image,
        control_type, scale, ...) for a control image that steers every variation."""
        if prompt is None:
            prompt = _prompt_inside(image)
        seed = resolve_seed(options.pop("seed", self.settings.seed))  # -1: drawn once, then +1
        requests = [
            self.request(
                prompt, mode="variation", init_image=image, seed=(seed + i) % 2**32, **options
            )  # fmt: skip
            for i in range(n)
        ]
        if guide is not None:  # one control map for all: made and stored once
            guided = self.guide(requests[0], **guide)
            control = {name: getattr(guided, name) for name in CONTROL_FIELDS}
            requests = [replace(request, **control) for request in requests]
        return self.images.make([ImageTask(r) for r in requests])

    def interpolate(
        self,
        start_prompt: str | RenderRequest,
        end_prompt: str,
        frames: int = 6,
        *,
        on_result: Callable[[ImageResult], None] | None = None,
        on_step: StepCallback | None = None,
        **values: Any,
    ) -> Interpolation:
        """A strip of `frames` txt2img images from `start_prompt` to `end_prompt`: the same
        seed and settings, the text embeddings moved evenly between the two prompts. The ends
        are the images each prompt makes alone; every frame is cached and stored as any image.
        `start_prompt` may be a request instead: its prompt starts, and every frame keeps the rest
        of it (a control image, a reference image) with `values` on top."""
        from studio.images.interpolation import interpolation_requests

        if isinstance(start_prompt, RenderRequest):
            base = replace(start_prompt, **values)
            base.check()
            start_prompt = base.prompt
        else:
            base = self.request(start_prompt, **values)
        requests = interpolation_requests(base, end_prompt, frames)
        results = self.images.make(
            [ImageTask(r) for r in requests], on_step=on_step, on_result=on_result
        )
        return Interpolation(start_prompt, end_prompt, results)

    # CLIP checks ------------------------------------------------------------------------------

    def _clip_checks(self) -> ClipChecks:
        if self.clip_checks is None:
            raise ConfigError(
                f"CLIP checks need a CLIP model: set {setting('clip_model')} to a CLIP folder or "
                "hub id (a transformers CLIPModel, safetensors)."
            )
        return self.clip_checks

    def clip_scores(self, image: str | StoredImage) -> ClipReport:
        """CLIP's report on a catalog image (its key or record): the CLIP score against its own
        prompt and the failure-mode check. Computed once per image and CLIP model, then read
        from the catalog; a CLIP model that cannot be loaded raises a ConfigError naming
        clip_model."""
        record = catalog_image(self.store, image) if isinstance(image, str) else image
        return self._clip_checks().reports([record])[record.cache_key]

    def score_catalog(self, on_progress: Callable[[int, int], None] | None = None) -> int:
        """Score every catalog image that has no CLIP score yet (images made before a CLIP
        model was set), 32 at a time; how many were scored."""
        checks = self._clip_checks()
        records = self.store.images()
        scored = checks.stored_reports(records)
        missing = [record for record in records if record.cache_key not in scored]
        for start in range(0, len(missing), 32):
            checks.reports(missing[start : start + 32])
            if on_progress:
                on_progress(min(start + 32, len(missing)), len(missing))
        return len(missing)

    def zero_shot(
        self, image: str | StoredImage | ImageSource, labels: Sequence[str]
    ) -> list[LabelScore]:
        """CLIP's zero-shot probabilities of `labels` (2 to 20 texts, e.g. "a chihuahua",
        "a muffin") for a catalog image (its key or record: the scores are kept) or any
        picture (a path, bytes or PIL image), in the labels' order; they sum to 1."""
        checks = self._clip_checks()
        if isinstance(image, str) and self.store.find_image(image) is not None:
            image = catalog_image(self.store, image)
        if not isinstance(image, StoredImage):
            image = read_image(image, "image")
        return checks.zero_shot(image, labels)

    # Denoising strips -------------------------------------------------------------------------

    @cached_property
    def strips(self) -> DenoisingStrips:
        from studio.images.strips import DenoisingStrips

        return DenoisingStrips(self.images)

    def denoising_strip(
        self,
        image: StripSource,
        every: int = 5,
        decoder: str = "vae",
        on_step: StepCallback | None = None,
    ) -> DenoisingStrip:
        """The intermediate images of `image` (a catalog key or record, or a request to render
        now), a frame every `every` steps and the last, decoded by "vae" (the model's) or
        "preview" (the tiny preview VAE); kept with the image, so a second ask costs nothing.
        A catalog image is rendered again with its seed, and checked against the stored one."""
        return self.strips.strip(image, every, decoder, on_step)

    def stored_strip(self, image_key: str, every: int, decoder: str) -> DenoisingStrip | None:
        """The catalog's strip of an image for `every` and `decoder`, without any model work."""
        return self.strips.find(image_key, every, decoder)

    # Batch jobs -------------------------------------------------------------------------------

    def loras(self) -> list[str]:
        """The LoRA names in the LoRA folder (lora_dir), for `<lora:name:weight>` tags."""
        from studio.core.config import lora_folder
        from studio.images.loras import LoraFolder

        return LoraFolder(lora_folder(self.settings)).names()

    def batch_jobs(self, limit: int = 20) -> list[JobRecord]:
        """The newest runs of the batch job on this catalog, newest first: stage, counts,
        failures with their reasons, seconds by stage (a killed run reads as stopped)."""
        from studio.catalog.job_log import recent_jobs

        return recent_jobs(self.store, limit)

    def prompt_quality(self) -> QualityReport:
        """The scored check of the catalog's prompts, looks and storyboards (no model work):
        over CLIP's window, cut words, non-English words, missing descriptors, lost items,
        repeated moments, modern words in a period series, duplicates, overlapping styles."""
        from studio.writing.quality import check_catalog

        return check_catalog(self.store, self.series, self.backend.count_tokens)

    # The cast ---------------------------------------------------------------------------------

    def looks(self) -> dict[str, str]:
        """name -> the descriptor every prompt uses for that character."""
        return characters.looks(self)

    def character_look(self, name: str, refresh: bool = False) -> CharacterRecord:
        """`name`'s current look; the LLM writes one (from the description and the episodes'
        summaries) when the catalog has none, or when `refresh` (a person's edit stays)."""
        return characters.character_look(self, name, refresh)

    def edit_character(
        self, name: str, descriptor: str, portrait: str | None = None
    ) -> CharacterRecord:
        """Save a person's descriptor (and portrait prompt) as `name`'s newest look."""
        from studio.writing.cast import edit_look

        return edit_look(
            self.store, self.series, name, descriptor, self.backend.count_tokens, portrait
        )

    def character_portrait(
        self, name: str, on_step: StepCallback | None = None, force: bool = False
    ) -> ImageResult:
        """The portrait of `name`'s current look (written first when there is none)."""
        return characters.character_portrait(self, name, on_step, force)

    def portrait_of(self, name: str) -> StoredImage | None:
        """The newest portrait of `name`'s current look, else of any earlier look, else None."""
        return characters.portrait_of(self, name)

    def reference_of(self, name: str) -> str | None:
        """The sha256 of `name`'s portrait as an IP-Adapter reference image (stored in the
        catalog's inputs), or None when they have no portrait yet."""
        return characters.reference_of(self, name)

    def cast_scene(
        self,
        names: Sequence[str],
        scene: str,
        *,
        on_step: StepCallback | None = None,
        **options: Any,
    ) -> ImageResult:
        """A scene with up to three characters (the most important first), each one's portrait
        conditioning the image on their side of it (left, centre, right) through the IP-Adapter;
        portraits are made first where there are none. `options`: RenderRequest fields."""
        return characters.cast_scene(self, names, scene, on_step=on_step, **options)

    def alternate_reality(
        self,
        name: str | None = None,
        reality: str = "film noir",
        *,
        image_key: str | None = None,
        strength: float = 0.6,
        on_step: StepCallback | None = None,
        **options: Any,
    ) -> ImageResult:
        """Character `name` (from their portrait), or the catalog image `image_key`, in another
        `reality`: the LLM writes what the reality changes; img2img keeps the person."""
        return characters.alternate_reality(
            self, name, reality, image_key=image_key, strength=strength, on_step=on_step, **options
        )

    # Storyboards and change requests ------------------------------------------------------------

    def storyboard(
        self,
        season: int,
        episode: int,
        refresh: bool = False,
        on_result: Callable[[ImageResult], None] | None = None,
    ) -> Storyboard:
        """An episode's key moments in story order, each rendered (cached like everything)."""
        return storyboards.storyboard(self, season, episode, refresh, on_result)

    def stored_storyboard(self, season: int, episode: int) -> Storyboard | None:
        """The newest storyboard of an episode in the catalog, without any model work."""
        from studio.writing.storyboards import stored_storyboard

        return stored_storyboard(self.store, season, episode)

    def revise(
        self, image_key: str, request: str, on_step: StepCallback | None = None
    ) -> ImageResult:
        """A new image from catalog image `image_key` changed as `request` says: the LLM reasons
        in visible steps, kept with the new image; the old image and prompt stay."""
        return revisions.revise(self, image_key, request, on_step)


def _sizes(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: values[k] for k in ("width", "height") if k in values}


def _outpaint_amounts(
    outpaint: Mapping[str, int] | tuple[int, int, int, int] | None,
) -> tuple[int, int, int, int]:
    if outpaint is None:
        return (0, 0, 0, 0)
    if isinstance(outpaint, Mapping):
        unknown = set(outpaint) - set(OUTPAINT_SIDES)
        if unknown:
            raise ParameterError(
                f"Unknown outpaint side(s) {sorted(unknown)}; use {', '.join(OUTPAINT_SIDES)}."
            )
        return tuple(int(outpaint.get(side, 0)) for side in OUTPAINT_SIDES)  # type: ignore[return-value]
    return tuple(outpaint)  # type: ignore[return-value]


def _prompt_inside(image: ImageSource) -> str:
    """The prompt in an image's A1111 `parameters` chunk (ours carry one), or in ComfyUI's or
    InvokeAI's metadata (`metadata.infotext_of`), else ""."""
    picture = read_image(image, "image")
    parameters, _ = infotext_of(picture)
    return parse_parameters(parameters)["Prompt"] if parameters else ""


def open_studio(settings: Settings | None = None, **overrides: Any) -> Studio:
    """A studio over `settings`, or over the settings looked up as everywhere (env vars,
    studio.toml, defaults) with `overrides` (Settings fields) first."""
    if settings is None:
        settings = load_settings(overrides)
    elif overrides:
        if isinstance(overrides.get("sampler"), str):  # A1111's names too, as the settings take
            overrides["sampler"] = our_sampler(overrides["sampler"])
        settings = replace(settings, **overrides)
        check_settings(settings)
    return Studio(settings)
