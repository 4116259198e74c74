"""The one gate for render parameters: their limits, the request type, and values from elsewhere.

Torch-free, so the CLI's `--help`, the grid and the gallery do not load torch. Every value that
reaches rendering (widgets, the comparison grid, PNG imports, the CLI, the config file, the API)
is checked here, with the same limits; the dashboard's widgets take their ranges from `LIMITS`.
Values written by other tools (AUTOMATIC1111's infotext) are mapped and clamped with a note, never
trusted: `Seed: -1` means random, `Steps: 200` becomes our maximum and says so.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from studio.core.errors import ParameterError

# Sampler names: ours, A1111 1.9's split spelling and everyone's ids (studio.core.samplers);
# imported from here too, as everywhere before they had a module of their own.
from studio.core.samplers import DEFAULT_SAMPLER, SAMPLER_NAMES, check_sampler, resolve_sampler
from studio.core.samplers import SCHEDULE_TYPES as SCHEDULE_TYPES
from studio.core.samplers import a1111_sampler as a1111_sampler

CLIP_WINDOW = 77  # tokens, BOS and EOS included
# The longest prompt, negative prompt or blend prompt, in characters, wherever it comes from (the
# Studio page, the CLI, Python, HTTP) and the longest prompt the prompt library imports. Generous
# for real prompts: CLIP reads 77 tokens (about 300 characters) per chunk, so 2,000 characters
# is 6 or more long-prompt chunks, past where later chunks still steer the image, and longer than
# AUTOMATIC1111 prompts heavy with weights and LoRA tags. Not more: every prompt is written into
# each PNG's metadata, the catalog and the library, whose "improve" quotes five of them to the
# embedded LLM within its 4,096-token context.
MAX_PROMPT = 2000

# A1111's `seed -1`: a random seed, drawn when the request is made and recorded as drawn.
RANDOM_SEED = -1

# Ways of making an image. img2img, inpaint, outpaint and variation start from an init image
# (inpaint also from a mask: white = repaint, black = keep).
MODES = ("txt2img", "img2img", "inpaint", "outpaint", "variation")
NEEDS_INIT = frozenset({"img2img", "inpaint", "outpaint", "variation"})
USES_STRENGTH = frozenset({"img2img", "inpaint", "variation"})
OUTPAINT_SIDES = ("left", "right", "up", "down")
MAX_OUTPAINT = 1024  # pixels added on one side at most
REFERENCE_SCALE = (0.0, 1.5)  # IP-Adapter scale: the accepted range
MAX_REFERENCES = 3  # IP-Adapter reference images in one image (characters in one scene)
# Guided generation (ControlNet): what the control image is, each with a ControlNet of its own
# (the `controlnets` setting); scribble and lineart are white lines on black, canny an edge map,
# depth a grayscale depth map (near = light).
CONTROL_TYPES = ("scribble", "lineart", "canny", "depth")
CONTROL_SCALE = (0.0, 2.0)  # how strongly the control image steers: the accepted range
# How a control image of another shape than the image becomes its size, as AUTOMATIC1111 does:
# stretched to it; scaled to cover it and cut to it at the centre (the default); scaled to fit
# inside it, with the rest filled by the map's border colour. Names as A1111's ControlNet writes
# them in its infotext ("Resize Mode: Crop and Resize").
CONTROL_RESIZE = {
    "just resize": "Just Resize",
    "crop and resize": "Crop and Resize",
    "resize and fill": "Resize and Fill",
}
DEFAULT_CONTROL_RESIZE = "crop and resize"
CONTROL_FIELDS = (
    "control_image",
    "control_type",
    "control_scale",
    "control_start",
    "control_end",
    "control_resize",
)


@dataclass(frozen=True)
class Limit:
    low: float
    high: float
    multiple: int = 1  # integer values must be a multiple of this (sizes: 8, the VAE's factor)


# The accepted range of every numeric parameter, everywhere.
LIMITS: dict[str, Limit] = {
    "steps": Limit(1, 150),
    "cfg": Limit(0.0, 30.0),
    "width": Limit(64, 2048, 8),
    "height": Limit(64, 2048, 8),
    "seed": Limit(0, 2**32 - 1),
}
_INTEGER = {"steps", "width", "height", "seed"}


def draw_seed() -> int:
    """A random seed, 0..2**32-1: what `seed -1` becomes."""
    return secrets.randbelow(2**32)


def resolve_seed(seed: int) -> int:
    """`seed`, or a freshly drawn one for RANDOM_SEED (-1)."""
    return draw_seed() if seed == RANDOM_SEED else seed


def whole(value: float) -> str:
    """A limit as people write it: 4294967295 (not 4.29497e+09), 0.5, 30."""
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return str(int(value))
    return f"{value:g}"


def _random_hint(name: str) -> str:
    return " (use -1 for a random seed)" if name == "seed" else ""


def check_value(name: str, value: Any) -> None:
    """Raise `ParameterError` unless `value` is a finite number of the right kind within limits."""
    limit = LIMITS[name]
    integer = name in _INTEGER
    kind = "a whole number" if integer else "a number"
    number_ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not number_ok or (integer and not isinstance(value, int)) or not math.isfinite(value):
        raise ParameterError(
            f"`{name}` has to be {kind} between {whole(limit.low)} and {whole(limit.high)}"
            f"{_random_hint(name)} but is {value!r}."
        )
    if not limit.low <= value <= limit.high:
        raise ParameterError(
            f"`{name}` has to be between {whole(limit.low)} and {whole(limit.high)}"
            f"{_random_hint(name)} but is {value if isinstance(value, int) else f'{value:g}'}."
        )
    if integer and value % limit.multiple:
        raise ParameterError(
            f"`{name}` has to be divisible by {limit.multiple} but is {value}; "
            f"try {round_to_multiple(value, limit.multiple)}."
        )


def check_prompt_length(name: str, text: str) -> None:
    """Raise `ParameterError` when `text` (the `name`, e.g. "negative prompt") is longer than
    MAX_PROMPT characters."""
    if len(text) > MAX_PROMPT:
        raise ParameterError(
            f"The {name} is {len(text):,} characters long; keep it under {MAX_PROMPT:,}."
        )


def outpaint_size(size: tuple[int, int], amounts: Sequence[int]) -> tuple[int, int]:
    """The outpainted image's (width, height): `size` plus (left, right, up, down) pixels."""
    left, right, up, down = amounts
    return size[0] + left + right, size[1] + up + down


def round_to_multiple(value: int, multiple: int) -> int:
    """The nearest multiple at or below `value` (at least `multiple`)."""
    return max(multiple, value // multiple * multiple)


@dataclass(frozen=True)
class RenderRequest:
    """Everything that decides an image's pixels besides the model.

    Input images are named by the sha256 of their normalised PNG (see `studio.core.inputs`), so a
    request is a plain value: hashable, comparable, and a complete cache key.
    """

    prompt: str
    negative_prompt: str = ""
    sampler: str = DEFAULT_SAMPLER
    steps: int = 25
    cfg: float = 7.0
    width: int = 512
    height: int = 512
    seed: int = 0
    mode: str = "txt2img"
    strength: float | None = None  # img2img, inpaint, variation: how much to change, 0..1
    init_image: str | None = None  # sha256 of the init image (every mode but txt2img)
    mask_image: str | None = None  # sha256 of the mask (inpaint)
    outpaint: tuple[int, int, int, int] | None = None  # pixels added left, right, up, down
    # IP-Adapter: a reference image (a character's portrait) that conditions the picture, and how
    # strongly (0 ignores it, 1 follows it closely). Needs a backend with `ip_adapter`.
    reference_image: str | None = None  # sha256 of the reference in the catalog's inputs/
    reference_scale: float | None = None
    # Several characters in one scene: up to MAX_REFERENCES - 1 more references (sha256s), each
    # limited, like the first, to its region by `reference_masks`: one mask per reference, in
    # order (sha256s of L images of the request's size in inputs/; white = where it applies).
    # Masks are optional with one reference and needed with more (faces would blend).
    extra_references: tuple[str, ...] | None = None
    reference_masks: tuple[str, ...] | None = None
    # Prompts past 77 tokens encoded in 77-token chunks (AUTOMATIC1111's way; BREAK needs it);
    # off: cut at 77 tokens, as plain encoding does.
    long_prompt: bool = False
    # Prompt interpolation: the text embeddings moved `blend` of the way (0..1) towards
    # `blend_prompt`'s, with everything else the same.
    blend_prompt: str | None = None
    blend: float | None = None
    # Guided generation (a ControlNet, in every mode): the control image (a sketch, an edge map or
    # a depth map at the request's size) steers the composition at `control_scale` (0..2), from
    # `control_start` to `control_end` of the denoising (fractions, start < end).
    # `control_resize` says how the given picture was brought to that size (CONTROL_RESIZE; None:
    # before resize modes, when only pictures of the image's shape were taken); the control
    # image's sha256 names the result, so it is recorded but not part of the cache key.
    control_image: str | None = None  # sha256 of the control map in the catalog's inputs/
    control_type: str | None = None  # one of CONTROL_TYPES: which ControlNet reads it
    control_scale: float | None = None
    control_start: float | None = None
    control_end: float | None = None
    control_resize: str | None = None
    # Inpaint only the masked area (A1111's "Only masked"): the mask's bounding box with this many
    # pixels of context around it, widened to the image's shape, is inpainted at the request's
    # size and pasted back under the mask; None inpaints the whole picture at its size.
    inpaint_padding: int | None = None

    @property
    def weighted(self) -> bool:
        """Whether the prompts go through weighted encoding (compel) rather than the pipeline's
        own: AUTOMATIC1111 syntax in the prompt or negative prompt, long prompts, or a blend."""
        from studio.core.prompt_syntax import uses_syntax

        return (
            self.long_prompt
            or self.blend_prompt is not None
            or uses_syntax(self.prompt)
            or uses_syntax(self.negative_prompt)
        )

    @property
    def loras(self) -> tuple[tuple[str, float], ...]:
        """The prompt's `<lora:name:weight>` tags, in order."""
        from studio.core.prompt_syntax import parse_prompt

        return parse_prompt(self.prompt).loras if "<lora:" in self.prompt else ()

    def batch_group(self) -> tuple:
        """Requests with equal groups can share one pipeline call: the same mode, sampler,
        steps, CFG, size and strength, and (diffusers takes one per call) the same IP-Adapter
        reference image and scale. Sortable: no reference sorts first."""
        return (
            self.mode,
            self.sampler,
            self.steps,
            self.cfg,
            self.width,
            self.height,
            self.strength if self.strength is not None else -1.0,
            self.reference_image or "",
            self.reference_scale if self.reference_scale is not None else -1.0,
            self.extra_references or (),
            self.reference_masks or (),
            self.weighted,  # weighted and plain encoding never share a call
            self.long_prompt,
            self.loras,  # the LoRAs are set on the pipeline per call
            # one ControlNet and one set of its controls per call (the images may differ)
            self.control_type or "",
            self.control_scale if self.control_scale is not None else -1.0,
            self.control_start if self.control_start is not None else -1.0,
            self.control_end if self.control_end is not None else -1.0,
        )

    def check(self) -> None:
        """Reject bad inputs with the value and the fix, before any model work."""
        self._check_mode()  # first: a bad outpaint amount explains the size it makes
        if self.width % 8 or self.height % 8:
            raise ParameterError(
                f"`height` and `width` have to be divisible by 8 but are {self.height} and "
                f"{self.width}."
            )
        if self.seed == RANDOM_SEED:
            raise ParameterError(
                "`seed` is -1, a random seed, which has to be drawn before rendering "
                "(studio.core.params.resolve_seed); a request that renders has a real seed."
            )
        for name in LIMITS:
            check_value(name, getattr(self, name))
        for name in ("prompt", "negative_prompt", "blend_prompt"):  # before parsing them
            check_prompt_length(name.replace("_", " "), getattr(self, name) or "")
        if not self.prompt.strip() and self.mode != "variation":
            raise ParameterError("The prompt is empty; write what the image should show.")
        check_sampler(self.sampler)
        self._check_reference()
        self._check_prompt_syntax()
        self._check_control()

    def _check_control(self) -> None:
        if self.control_image is None:
            given = [name for name in CONTROL_FIELDS[1:] if getattr(self, name) is not None]
            if given:
                raise ParameterError(
                    f"{', '.join(f'`{name}`' for name in given)} need a control image "
                    "(`control_image`); give one, or leave them out."
                )
            return
        if self.control_resize is not None and self.control_resize not in CONTROL_RESIZE:
            raise ParameterError(
                f"Unknown control resize mode {self.control_resize!r}; choose one of: "
                f"{', '.join(CONTROL_RESIZE)}."
            )
        if self.control_type not in CONTROL_TYPES:
            raise ParameterError(
                f"Unknown control type {self.control_type!r}; choose one of: "
                f"{', '.join(CONTROL_TYPES)}."
            )
        low, high = CONTROL_SCALE
        values = {
            "control_scale": (self.control_scale, low, high),
            "control_start": (self.control_start, 0.0, 1.0),
            "control_end": (self.control_end, 0.0, 1.0),
        }
        for name, (value, least, most) in values.items():
            if (
                not isinstance(value, int | float)
                or isinstance(value, bool)
                or not (math.isfinite(value) and least <= value <= most)
            ):
                raise ParameterError(
                    f"`{name}` has to be a number between {least:g} and {most:g} but is {value!r}."
                )
        if self.control_start >= self.control_end:
            raise ParameterError(
                f"`control_start` has to be below `control_end` but they are "
                f"{self.control_start:g} and {self.control_end:g}; the control image steers the "
                "steps between them (0 = the first, 1 = the last)."
            )

    def _check_prompt_syntax(self) -> None:
        from studio.core.prompt_syntax import BREAK, parse_prompt

        for name, text in (("prompt", self.prompt), ("negative_prompt", self.negative_prompt),
                           ("blend_prompt", self.blend_prompt or "")):  # fmt: skip
            parsed = parse_prompt(text)
            if len(parsed.sections) > 1 and not self.long_prompt:
                raise ParameterError(
                    f"The {name.replace('_', ' ')} has {BREAK}, which starts a new 77-token chunk: "
                    "turn on long prompts (long_prompt), or take BREAK out."
                )
            if name != "prompt" and parsed.loras:
                raise ParameterError(
                    f"LoRA tags go in the prompt, not the {name.replace('_', ' ')}."
                )
        if self.blend_prompt is None and self.blend is None:
            return
        if self.blend_prompt is None or not self.blend_prompt.strip():
            raise ParameterError("`blend` needs a prompt to blend towards (`blend_prompt`).")
        blend = self.blend
        if (
            not isinstance(blend, int | float)
            or isinstance(blend, bool)
            or not (math.isfinite(blend) and 0 <= blend <= 1)
        ):
            raise ParameterError(
                f"`blend` has to be a number from 0 (the prompt) to 1 (the blend prompt) but is "
                f"{blend!r}."
            )

    def _check_reference(self) -> None:
        if self.reference_image is None:
            if self.reference_scale is not None:
                raise ParameterError("`reference_scale` needs a reference image; give one.")
            if self.extra_references or self.reference_masks:
                raise ParameterError(
                    "`extra_references` and `reference_masks` need a first reference image "
                    "(`reference_image`); give one."
                )
            return
        extra = self.extra_references or ()
        if not isinstance(extra, tuple) or not all(isinstance(sha, str) and sha for sha in extra):
            raise ParameterError(
                f"`extra_references` is a tuple of input images' sha256s, not {extra!r}."
            )
        references = 1 + len(extra)
        if references > MAX_REFERENCES:
            raise ParameterError(
                f"An image takes at most {MAX_REFERENCES} reference images (characters), not "
                f"{references}; leave the least important out."
            )
        masks = self.reference_masks
        if masks is None:
            if extra:
                raise ParameterError(
                    f"{references} reference images need a region each (`reference_masks`, one "
                    "mask per reference, white = where it applies); without regions their faces "
                    "would blend."
                )
        elif (
            not isinstance(masks, tuple)
            or len(masks) != references
            or not all(isinstance(sha, str) and sha for sha in masks)
        ):
            raise ParameterError(
                f"`reference_masks` has to be one mask (an input image's sha256) per reference "
                f"image, {references} in all, but is {masks!r}."
            )
        scale = self.reference_scale
        low, high = REFERENCE_SCALE
        if (
            not isinstance(scale, int | float)
            or isinstance(scale, bool)
            or not (math.isfinite(scale) and low <= scale <= high)
        ):
            raise ParameterError(
                f"`reference_scale` has to be a number between {low:g} and {high:g} but is "
                f"{scale!r}; 0 ignores the reference image, 1 follows it closely."
            )

    def _check_mode(self) -> None:
        if self.mode not in MODES:
            raise ParameterError(f"Unknown mode {self.mode!r}; choose one of: {', '.join(MODES)}.")
        if self.mode in NEEDS_INIT and not self.init_image:
            raise ParameterError(f"Mode {self.mode} needs an init image; give one.")
        if self.mode == "txt2img" and (self.init_image or self.mask_image):
            raise ParameterError("txt2img takes no init image or mask; use img2img or inpaint.")
        if self.mode == "inpaint" and not self.mask_image:
            raise ParameterError("Inpainting needs a mask (white = repaint, black = keep).")
        if self.mode in USES_STRENGTH:
            strength = self.strength
            if not isinstance(strength, int | float) or not (
                math.isfinite(strength) and 0 < strength <= 1
            ):
                raise ParameterError(
                    f"`strength` has to be a number above 0 and at most 1 but is {strength!r}; "
                    "low keeps the init image, 1 redraws it."
                )
        elif self.strength is not None:
            raise ParameterError(f"Mode {self.mode} takes no strength.")
        if self.mode == "outpaint":
            amounts = self.outpaint or (0, 0, 0, 0)
            if len(amounts) != 4 or any(
                not isinstance(a, int) or isinstance(a, bool) or a < 0 for a in amounts
            ):
                raise ParameterError(
                    "Outpaint amounts are whole pixels >= 0 for left, right, up and down, "
                    f"but are {amounts!r}."
                )
            if not any(amounts):
                raise ParameterError("Outpainting needs an amount above 0 on at least one side.")
            if max(amounts) > MAX_OUTPAINT:
                raise ParameterError(
                    f"An outpaint side can add at most {MAX_OUTPAINT} pixels, not {max(amounts)}."
                )
            if any(a % 8 for a in amounts):
                raise ParameterError(
                    f"Outpaint amounts have to be multiples of 8 but are {amounts!r}."
                )
        elif self.outpaint is not None:
            raise ParameterError(f"Mode {self.mode} takes no outpaint amounts.")
        padding = self.inpaint_padding
        if padding is not None:
            if self.mode != "inpaint":
                raise ParameterError(f"Mode {self.mode} takes no `inpaint_padding`; inpaint does.")
            if (
                not isinstance(padding, int)
                or isinstance(padding, bool)
                or not 0 <= padding <= 2048
            ):
                raise ParameterError(
                    f"`inpaint_padding` has to be a whole number of pixels from 0 to 2048 but is "
                    f"{padding!r}."
                )
            if self.control_image is not None or self.reference_masks:
                raise ParameterError(
                    "Inpainting only the masked area (`inpaint_padding`) takes no control image or "
                    "reference regions, which are drawn for the whole picture; inpaint the whole "
                    "picture instead."
                )

    def key_fields(self) -> dict[str, Any]:
        """The fields that go into a cache key: the mode's fields only where they are set, so
        a txt2img request keeps the key it had before modes existed."""
        values = asdict(self)
        if self.mode == "txt2img":
            for name in ("mode", "strength", "init_image", "mask_image", "outpaint"):
                values.pop(name)
        if self.reference_image is None:  # keys from before IP-Adapter references stay the same
            values.pop("reference_image")
            values.pop("reference_scale")
        for name in ("extra_references", "reference_masks"):  # and from before several
            if getattr(self, name) is None:
                values.pop(name)
        if not self.long_prompt:  # and keys from before long prompts and blends
            values.pop("long_prompt")
        if self.blend_prompt is None:
            values.pop("blend_prompt")
            values.pop("blend")
        if self.control_image is None:  # and keys from before guided generation
            for name in CONTROL_FIELDS:
                values.pop(name)
        else:  # the control image's sha256 already names what the resize made
            values.pop("control_resize")
        if self.inpaint_padding is None:  # and keys from before "only masked" inpainting
            values.pop("inpaint_padding")
        return values


REQUEST_FIELDS = tuple(f.name for f in fields(RenderRequest))


def _clamp(name: str, value: float, notes: list[str], label: str) -> float:
    limit = LIMITS[name]
    if value < limit.low:
        notes.append(f"{label} {value:g} -> {limit.low:g}, our minimum")
        return limit.low
    if value > limit.high:
        notes.append(f"{label} {value:g} -> {limit.high:g}, our maximum")
        return limit.high
    return value


def clamp_request(
    request: RenderRequest, fallback: RenderRequest
) -> tuple[RenderRequest, list[str]]:
    """`request` brought within the limits; `fallback`'s value where one cannot be used at all.

    For values that come from outside (another tool's PNG, an old session): never raises. A seed
    of -1 (RANDOM_SEED) is kept: the controls take it, and it is drawn when an image is made.
    """
    notes: list[str] = []
    changes: dict[str, Any] = {}
    labels = {"steps": "Steps", "cfg": "CFG scale", "width": "Width", "height": "Height"}
    for name, label in labels.items():
        value = getattr(request, name)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            notes.append(f"{label} {value!r} is not a number; using {getattr(fallback, name)}")
            changes[name] = getattr(fallback, name)
            continue
        value = _clamp(name, value, notes, label)
        if name in _INTEGER:
            value = int(value)
            multiple = LIMITS[name].multiple
            if value % multiple:
                rounded = round_to_multiple(value, multiple)
                notes.append(f"{label} {value} -> {rounded}, a multiple of {multiple}")
                value = rounded
        else:
            value = float(value)
        changes[name] = value
    seed = request.seed
    if (
        not isinstance(seed, int)
        or isinstance(seed, bool)
        or not (0 <= seed < 2**32 or seed == RANDOM_SEED)
    ):
        notes.append(f"Seed {seed!r} -> {fallback.seed}, seeds are 0..{2**32 - 1} (-1: random)")
        changes["seed"] = fallback.seed
    if request.sampler not in SAMPLER_NAMES:
        try:
            changes["sampler"], sampler_notes = resolve_sampler(request.sampler)
            notes.extend(sampler_notes)
        except ParameterError:
            notes.append(
                f"Sampler {request.sampler!r} is not one of ours; using {fallback.sampler}"
            )
            changes["sampler"] = fallback.sampler
    for name in ("prompt", "negative_prompt"):
        if not isinstance(getattr(request, name), str):
            changes[name] = getattr(fallback, name)
    return replace(request, **changes), notes


@dataclass(frozen=True)
class Imported:
    """Parameters read from another tool's infotext, made safe to use here."""

    request: RenderRequest
    notes: list[str]  # what was changed and why, to show the user
    random_seed: bool  # A1111's `Seed: -1`: a new random seed each time


def _number(values: dict[str, str], key: str, notes: list[str]) -> float | None:
    text = values.get(key)
    if text is None:
        return None
    try:
        number = float(text)
    except ValueError:
        notes.append(f"{key} {text!r} is not a number; using our default")
        return None
    return number


def request_from_infotext(values: dict[str, str], fallback: RenderRequest) -> Imported:
    """A request from A1111 infotext fields (`metadata.parse_parameters`), mapped and clamped."""
    notes: list[str] = []
    sampler = fallback.sampler
    if values.get("Sampler"):  # A1111 1.9 writes the schedule apart; never dropped silently
        try:
            sampler, sampler_notes = resolve_sampler(values["Sampler"], values.get("Schedule type"))
            notes.extend(sampler_notes)
        except ParameterError:
            notes.append(f"Sampler {values['Sampler']!r} is not one of ours; using {sampler}")
    elif values.get("Schedule type"):
        notes.append(f"Schedule type {values['Schedule type']!r} without a sampler is ignored")
    numbers = {
        "steps": _number(values, "Steps", notes),
        "cfg": _number(values, "CFG scale", notes),
        "width": _number(values, "Size-1", notes),
        "height": _number(values, "Size-2", notes),
        "seed": _number(values, "Seed", notes),
    }
    random_seed = numbers["seed"] is not None and numbers["seed"] < 0
    if random_seed:
        notes.append("Seed -1 means a random seed: the Studio picks a new one each time")
    merged: dict[str, Any] = {}
    for name, number in numbers.items():
        if number is None or (name == "seed" and random_seed):
            merged[name] = getattr(fallback, name)
        elif name in _INTEGER and math.isfinite(number):
            merged[name] = int(number)
        else:
            merged[name] = number
    request, clamp_notes = clamp_request(
        RenderRequest(
            prompt=values.get("Prompt", ""),
            negative_prompt=values.get("Negative prompt", ""),
            sampler=sampler,
            # AUTOMATIC1111 always chunks, so its BREAKs need long prompts here
            long_prompt=values.get("Long prompt") == "chunks"
            or re.search(r"\bBREAK\b", values.get("Prompt", "")) is not None,
            **merged,
        ),
        fallback,
    )
    return Imported(request, notes + clamp_notes, random_seed)
