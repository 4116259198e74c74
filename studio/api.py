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
    rec.path, rec.cached, rec.key   # the PNG in the catalog, whether it was already there, its key

Expected failures raise `studio.errors.StudioError` subclasses whose message says what to do.
The LLM and the image model load on first use: opening a studio is cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from studio.config import Settings, check_settings, load_settings
from studio.image_backends import ImageBackend, StepCallback, open_image_backend
from studio.images import ImageJob, ImageResult, ImageService
from studio.inputs import ImageSource, read_image
from studio.metadata import parse_parameters, read_png_metadata
from studio.params import (
    OUTPAINT_SIDES,
    STUDIO_TARGET,
    ParameterError,
    RenderRequest,
    Target,
    outpaint_size,
)
from studio.store import Store

if TYPE_CHECKING:
    from studio.llm import LLM, ChatBackend

DEFAULT_STRENGTH = {"img2img": 0.6, "inpaint": 1.0, "variation": 0.35}


class Studio:
    """One catalog, one LLM and one image backend, made from one `Settings`."""

    def __init__(
        self,
        settings: Settings,
        on_status: Callable[[str], None] | None = None,
        backend: ImageBackend | None = None,
        chat_backend: ChatBackend | None = None,
    ):
        """`backend` and `chat_backend` replace the ones the settings name (a model already
        loaded and shared, or a fake in tests); the catalog still caches the LLM's answers."""
        self.settings = settings
        self.store = Store(settings.data_dir)
        self._on_status = on_status
        self._chat_backend = chat_backend
        if backend is not None:
            self.__dict__["backend"] = backend

    def __enter__(self) -> Studio:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    @cached_property
    def backend(self) -> ImageBackend:
        """The image backend the settings name (weights load when it first renders)."""
        return open_image_backend(self.settings)

    @cached_property
    def images(self) -> ImageService:
        return ImageService(self.store, self.backend)

    @cached_property
    def llm(self) -> LLM:
        from studio.llm import LLM, make_llm

        if self._chat_backend is not None:
            s = self.settings
            return LLM(self._chat_backend, self.store, s.llm_temperature, s.llm_seed)
        return make_llm(self.settings, self.store, on_status=self._on_status)

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
        **values: Any,
    ) -> RenderRequest:
        """A checked request from the settings' defaults, `values` (RenderRequest fields) and the
        mode's inputs, which are stored in the catalog and named by their sha256."""
        s = self.settings
        request = RenderRequest(prompt, "", s.sampler, s.steps, s.cfg, s.width, s.height, s.seed)
        request = replace(request, **values, mode=mode)
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
        request.check()
        return request

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
        job = ImageJob(request, target, provenance=dict(provenance or {}))
        return self.images.make_one(job, on_step=on_step)

    def variations(
        self, image: ImageSource, n: int = 4, prompt: str | None = None, **options: Any
    ) -> list[ImageResult]:
        """`n` variations of `image`: its own prompt (from its PNG metadata, when it has any)
        or `prompt`, new seeds, a low strength."""
        if prompt is None:
            prompt = _prompt_inside(image)
        seed = options.pop("seed", self.settings.seed)
        requests = [
            self.request(
                prompt, mode="variation", init_image=image, seed=(seed + i) % 2**32, **options
            )  # fmt: skip
            for i in range(n)
        ]
        return self.images.make([ImageJob(r) for r in requests])


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
    """The prompt in an image's A1111 `parameters` chunk (ours carry one), else ""."""
    picture = read_image(image, "image")
    parameters, _ = read_png_metadata(picture)
    return parse_parameters(parameters)["Prompt"] if parameters else ""


def open_studio(settings: Settings | None = None, **overrides: Any) -> Studio:
    """A studio over `settings`, or over the settings looked up as everywhere (env vars,
    studio.toml, defaults) with `overrides` (Settings fields) first."""
    if settings is None:
        settings = load_settings(overrides)
    elif overrides:
        settings = replace(settings, **overrides)
        check_settings(settings)
    return Studio(settings)
