"""The image service: every image the studio makes, whoever asks, goes through `ImageService.make`.

    service = ImageService(store, backend)
    results = service.make([ImageTask(request, Target("episode", 1, 3), provenance={...})])
    results[0].record.path, results[0].cached, results[0].key

For each job: the cache key (the backend's: everything that affects the pixels), a catalog look-up
(a hit costs nothing), then the misses in batches the backend can take, grouped so that requests
that can share a pipeline call sit together; each image is written with its A1111 `parameters`
chunk and its provenance, and recorded in the catalog as one unit. Provenance is passed in as
plain values (a prompt's key, an LLM's name): the service never asks the LLM anything, so a
finished image is never lost to an LLM that is down. Input images (init images, masks) are
normalised and stored by content in the catalog (`add_input`), and requests name them by hash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from studio.catalog.records import REFUSED, ImageRecord, SafetyVerdict, StoredImage
from studio.catalog.store import Store
from studio.core.errors import ContentRefusedError, RenderError
from studio.core.inputs import (
    ImageSource,
    fit_image,
    fit_mask,
    png_bytes,
    read_image,
    to_mask,
    to_rgb,
)
from studio.core.metadata import encode_png, format_parameters
from studio.core.params import CONTROL_RESIZE, SAMPLER_NAMES, RenderRequest, a1111_sampler
from studio.core.targets import STUDIO_TARGET, Target
from studio.core.version import __version__
from studio.images.backends.base import ImageBackend, StepCallback
from studio.images.executors import LocalExecutor, RenderExecutor
from studio.images.safety import SafetyFilter

# Called after each image is stored (or found): for progress bars.
ResultCallback = Callable[["ImageResult"], None]


class ImageScorer(Protocol):
    """Scores each image once it is stored, e.g. CLIP checks (`studio.vision.checks.ClipChecks`,
    a layer above this one); a model that cannot load leaves the image unscored."""

    def score_new(self, record: StoredImage, image: Image.Image) -> Any: ...


@dataclass(frozen=True)
class ImageTask:
    """One image to make: the request, what it is for, and what to record about where it came
    from (plain values, e.g. the prompt's key and the LLM that wrote it)."""

    request: RenderRequest
    target: Target = STUDIO_TARGET
    image_index: int | None = None  # None: the target's next free index
    provenance: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def label(self) -> str:
        return self.target.label(self.image_index)


@dataclass(frozen=True)
class ImageResult:
    job: ImageTask
    record: StoredImage | None  # None when the render failed
    path: Path | None = None  # the PNG in the catalog
    cached: bool = False
    error: str = ""  # why it failed, for the job's summary

    @property
    def key(self) -> str:
        return self.record.cache_key if self.record else ""

    def image(self) -> Image.Image:
        """The PNG, decoded."""
        with Image.open(self.path) as image:
            image.load()
            return image.copy()


def request_parameters(
    request: RenderRequest,
    model_label: str,
    version: str | None = None,
    loras: Sequence[dict[str, Any]] = (),
    controlnet: dict[str, Any] | None = None,
    model_hash: str | None = None,
) -> str:
    """A request's A1111 infotext, as written into the PNG and shown in the dashboard; `loras`:
    the provenance's LoRA files (name, sha256), for A1111's `Lora hashes` field; `controlnet`:
    the provenance's ControlNet (its `controlnet` name goes in the `ControlNet 0` field);
    `model_hash`: the provenance's `model_hash` (A1111's short hash of the checkpoint). The
    sampler as A1111 1.9 writes it: `Sampler: DPM++ 2M, Schedule type: Karras`."""
    sampler, schedule = (
        a1111_sampler(request.sampler)
        if request.sampler in SAMPLER_NAMES
        else (request.sampler, "")
    )
    fields: dict[str, Any] = {
        "Steps": request.steps,
        "Sampler": sampler,
        "Schedule type": schedule,
        "CFG scale": float(request.cfg),
        "Seed": request.seed,
        "Size": f"{request.width}x{request.height}",
        "Model hash": model_hash,
        "Model": model_label,
    }
    if request.mode != "txt2img":
        fields["Denoising strength"] = request.strength
        fields["Mode"] = request.mode
    if request.inpaint_padding is not None:  # as A1111 writes "Only masked"
        fields["Inpaint area"] = "Only masked"
        fields["Masked area padding"] = request.inpaint_padding
    if request.outpaint:
        fields["Outpaint"] = " ".join(
            f"{side}:{amount}" for side, amount in zip(("left", "right", "up", "down"),
                                                        request.outpaint, strict=True) if amount
        )  # fmt: skip
    if request.reference_image is not None:  # A1111 names images by the first 10 hex of a hash
        references = (request.reference_image, *(request.extra_references or ()))
        fields["IP-Adapter image hash"] = ", ".join(sha[:10] for sha in references)
        fields["IP-Adapter scale"] = request.reference_scale
        if request.reference_masks:
            fields["IP-Adapter masks"] = ", ".join(sha[:10] for sha in request.reference_masks)
    if request.long_prompt:
        fields["Long prompt"] = "chunks"
    if request.blend_prompt is not None:
        fields["Blend prompt"] = request.blend_prompt
        fields["Blend"] = request.blend
    if request.control_image is not None:  # as A1111's ControlNet extension writes it
        model = (controlnet or {}).get("controlnet", request.control_type)
        resize = CONTROL_RESIZE.get(request.control_resize or "")
        fields["ControlNet 0"] = (
            f"Module: {request.control_type}, Model: {model}, Weight: {request.control_scale:g}, "
            + (f"Resize Mode: {resize}, " if resize else "")
            + f"Guidance Start: {request.control_start:g}, Guidance End: {request.control_end:g}, "
            f"Image hash: {request.control_image[:10]}"
        )
    if loras:  # A1111 names a LoRA file by the first 12 hex of its sha256
        fields["Lora hashes"] = ", ".join(
            f"{lora['name']}: {lora['sha256'][:12]}" for lora in loras
        )
    fields["Version"] = version
    return format_parameters(request.prompt, request.negative_prompt, fields)


class ImageService:
    """Makes, caches and stores images for one catalog with one backend."""

    def __init__(
        self,
        store: Store,
        backend: ImageBackend,
        safety: SafetyFilter | None = None,
        clip_checks: ImageScorer | None = None,
    ):
        """`safety`: the safety filter that checks each image made before it is stored;
        `clip_checks`: CLIP scores each image once it is stored (a CLIP model that cannot be
        loaded leaves the image unscored)."""
        self.store = store
        self.backend = backend
        self.safety = safety
        self.clip_checks = clip_checks
        self._original_sizes: dict[str, tuple[int, int]] = {}  # init image sha -> size as given
        # Where the time went: waiting for renders, and writing PNGs and catalog rows.
        self.seconds = {"render": 0.0, "write": 0.0, "clip": 0.0}

    # Inputs ---------------------------------------------------------------------------------

    def add_input(self, source: ImageSource, what: str = "init image") -> str:
        """Store an init image in the catalog, as RGB and resized to `inputs.fitted_size`
        (multiples of 8, at most 2048 a side); its sha256, for `RenderRequest`."""
        image = to_rgb(read_image(source, what))
        sha = self.store.add_input(png_bytes(fit_image(image)))
        self._original_sizes[sha] = image.size  # a mask may come at the size the user has
        return sha

    def add_mask(self, source: ImageSource, image_sha: str) -> str:
        """Store a mask for the init image `image_sha` (white = repaint); its sha256."""
        image = self.store.input_image(image_sha)
        original = self._original_sizes.get(image_sha, image.size)
        mask = fit_mask(to_mask(read_image(source, "mask")), image, original)
        return self.store.add_input(png_bytes(mask))

    def add_regions(self, count: int, size: tuple[int, int]) -> tuple[str, ...]:
        """Store the masks of `count` side-by-side regions of an image of `size` (one per
        character of a scene, `studio.images.regions`); their sha256s, in order."""
        from studio.images.regions import region_masks

        return tuple(self.store.add_input(png_bytes(mask)) for mask in region_masks(count, size))

    def input_image(self, sha: str) -> Image.Image:
        return self.store.input_image(sha)

    # Images ---------------------------------------------------------------------------------

    def cache_key(self, request: RenderRequest) -> str:
        return self.backend.cache_key(request)

    def make(
        self,
        jobs: Sequence[ImageTask],
        force: bool = False,
        on_step: StepCallback | None = None,
        on_result: ResultCallback | None = None,
        keep_going: bool = False,
        executor: RenderExecutor | None = None,
    ) -> list[ImageResult]:
        """An image for every job, in order: the catalog's, else rendered and stored.

        `force` renders again what the catalog has. With `keep_going`, a batch that fails is
        reported in its results (`error`) and the others go on; otherwise the error is raised.
        `executor` renders the misses (default: this backend, here); wherever they are rendered,
        this process writes them. `on_result` hears of each image as it is stored.
        """
        capabilities = self.backend.capabilities
        for job in jobs:
            job.request.check()
            capabilities.check(job.request, self.backend.label)
        results: list[ImageResult | None] = [None] * len(jobs)

        def done(index: int, result: ImageResult) -> None:
            results[index] = result
            if on_result:
                on_result(result)

        pending: list[tuple[int, str]] = []
        for index, job in enumerate(jobs):
            key = self.cache_key(job.request)
            found = None if force else self.store.find_image(key)
            if found is not None:
                done(index, self._result(job, found, cached=True))
            else:
                pending.append((index, key))
        pending.sort(key=lambda item: jobs[item[0]].request.batch_group())
        size = max(1, capabilities.max_batch)
        batches = [pending[start : start + size] for start in range(0, len(pending), size)]
        executor = executor or LocalExecutor(self.backend)
        outcomes = executor.run(
            [[jobs[index].request for index, _ in batch] for batch in batches],
            inputs=self.store.input_image,
            on_step=on_step,
        )
        waited = time.perf_counter()
        for number, outcome in outcomes:
            self.seconds["render"] += time.perf_counter() - waited
            batch = batches[number]
            if isinstance(outcome, RenderError):
                if isinstance(outcome, ContentRefusedError):
                    self._record_refusal([(jobs[i], key) for i, key in batch], outcome)
                if not keep_going:
                    raise outcome
                for index, _ in batch:
                    done(index, ImageResult(jobs[index], None, error=str(outcome)))
            else:
                for (index, key), image in zip(batch, outcome, strict=True):
                    started = time.perf_counter()
                    stored = self._store(jobs[index], key, image)
                    self.seconds["write"] += time.perf_counter() - started
                    if self.clip_checks is not None:
                        started = time.perf_counter()
                        self.clip_checks.score_new(stored, image)
                        self.seconds["clip"] += time.perf_counter() - started
                    done(index, self._result(jobs[index], stored))
            waited = time.perf_counter()
        return [result for result in results if result is not None]

    def _result(self, job: ImageTask, record: StoredImage, cached: bool = False) -> ImageResult:
        return ImageResult(job, record, self.store.image_path(record), cached)

    def make_one(self, job: ImageTask, on_step: StepCallback | None = None) -> ImageResult:
        return self.make([job], on_step=on_step)[0]

    def _store(self, job: ImageTask, key: str, image: Image.Image) -> StoredImage:
        """Write one image with its parameters inside and its catalog row."""
        request, backend, target = job.request, self.backend, job.target
        image_index = job.image_index
        if image_index is None:
            image_index = self.store.next_image_index(target.kind, target.season, target.episode)
        provenance = {
            **backend.provenance(request),
            **job.provenance,
            "request": asdict(request),  # exact values, for recovering the catalog
            "model_label": backend.label,
            "cache_key": key,
            "target": target.kind,
            "season": target.season,
            "episode": target.episode,
            "style": target.style,
            "image_index": image_index,
        }
        if image.info.get("render_path"):  # the fast path: compiled, or eager while compiling
            provenance["render_path"] = image.info["render_path"]
        if image.info.get("revised_prompt"):  # DALL-E 3 rewrites prompts; keep what it drew
            provenance["revised_prompt"] = image.info["revised_prompt"]
        parameters = request_parameters(
            request,
            backend.label,
            f"series-studio {__version__}",
            provenance.get("loras", ()),
            provenance.get("controlnet"),
            provenance.get("model_hash"),
        )
        verdict = self.safety.check(image) if self.safety is not None else None
        if verdict is not None:  # in the PNG too, so a rebuilt catalog keeps it
            provenance["safety"] = verdict.as_dict()
        png = encode_png(image, parameters, provenance)
        return self.store.add_image(
            ImageRecord.of(
                request, target, image_index, backend.label, backend.placeholder, provenance, key
            ),  # fmt: skip
            png,
            safety=verdict,
        )

    def _record_refusal(self, refused: Sequence[tuple[ImageTask, str]], error: RenderError) -> None:
        """The image server refused these jobs (with their cache keys): say so in the catalog,
        with no image."""
        verdict = SafetyVerdict(REFUSED, str(error), self.backend.label)
        for job, key in refused:
            self.store.add_refusal(key, job.request.prompt, verdict)
