"""The catalog's value types: what one image, prompt, character or strip row holds, and the
safety verdict stored with an image (the checker itself lives in `studio.images.safety`)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from PIL import Image

from studio.core.metadata import parse_parameters
from studio.core.params import REQUEST_FIELDS, RenderRequest
from studio.core.targets import PromptSpec, Target

# Request fields that are tuples: JSON arrays in the catalog's columns.
JSON_TUPLES = ("outpaint", "extra_references", "reference_masks")


def _tuple(value: Any) -> tuple | None:
    """A JSON array (a list) as a tuple; None for none."""
    return tuple(value) if value else None


# A verdict's status: what the dashboard does with the image.
CLEAR = "clear"  # checked, nothing found: shown
FLAGGED = "flagged"  # checked and flagged: blurred, with the reason and a Reveal button
UNCHECKED = "unchecked"  # the checker could not run: shown, with a note saying why
REFUSED = "refused"  # the image server refused the request: no image, the reason instead
STATUSES = (CLEAR, FLAGGED, UNCHECKED, REFUSED)


@dataclass(frozen=True)
class SafetyVerdict:
    """What the safety filter (or an image server) said about one image or request."""

    status: str  # one of STATUSES
    reason: str = ""  # in words, for the dashboard
    checker: str = ""  # the safety_checker setting, or the image backend that refused
    score: float | None = None  # the checker's own measure; flagged from 0 (diffusers) or 0.5

    @property
    def hidden(self) -> bool:
        """Whether the dashboard hides the image behind a blur (or, refused, has none)."""
        return self.status in (FLAGGED, REFUSED)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ImageRecord:
    """An image's catalog entry: what it was made for and everything that made it."""

    cache_key: str
    target: str
    season: int | None
    episode: int | None
    style: str | None
    image_index: int
    prompt: str
    negative_prompt: str
    model: str
    sampler: str
    steps: int
    cfg: float
    width: int
    height: int
    seed: int
    placeholder: bool
    provenance: dict[str, Any]
    mode: str = "txt2img"
    strength: float | None = None
    init_image: str | None = None  # sha256 of the init image in the catalog's inputs/
    mask_image: str | None = None
    outpaint: tuple[int, int, int, int] | None = None
    reference_image: str | None = None  # sha256 of the IP-Adapter reference in inputs/
    reference_scale: float | None = None
    extra_references: tuple[str, ...] | None = None  # more references' sha256s (several people)
    reference_masks: tuple[str, ...] | None = None  # each reference's region, sha256s in inputs/
    long_prompt: bool = False
    blend_prompt: str | None = None
    blend: float | None = None
    control_image: str | None = None  # sha256 of the ControlNet's control map in inputs/
    control_type: str | None = None
    control_scale: float | None = None
    control_start: float | None = None
    control_end: float | None = None
    control_resize: str | None = None  # how a control picture of another shape was fitted
    inpaint_padding: int | None = None  # inpainted only around the mask, with this context

    @classmethod
    def of(
        cls,
        request: RenderRequest,
        target: Target,
        image_index: int,
        model_label: str,
        placeholder: bool,
        provenance: dict[str, Any],
        cache_key: str,
    ) -> ImageRecord:
        values = asdict(request)
        return cls(
            cache_key=cache_key,
            target=target.kind,
            season=target.season,
            episode=target.episode,
            style=target.style,
            image_index=image_index,
            model=model_label,
            placeholder=placeholder,
            provenance=provenance,
            **values,
        )

    @property
    def request(self) -> RenderRequest:
        return RenderRequest(**{name: getattr(self, name) for name in REQUEST_FIELDS})

    @property
    def target_of(self) -> Target:
        return Target(self.target, self.season, self.episode, self.style)


@dataclass(frozen=True)
class StoredImage(ImageRecord):
    """An image as the catalog holds it: its record, where its PNG is, when it was made."""

    id: int = 0
    sha256: str = ""
    path: str = ""  # relative to the data folder
    created_at: str = ""

    def __getitem__(self, name: str) -> Any:  # row-style access, as templates and tests use
        return getattr(self, name)

    def summary(self) -> dict[str, Any]:
        """Every field but the provenance: one row of a table of images."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "provenance"}

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> StoredImage:
        values = {name: row[name] for name in row.keys()}  # noqa: SIM118 - a Row, not a dict
        lists = {  # JSON arrays in the catalog, tuples in records
            name: tuple(json.loads(values[name])) if values.get(name) else None
            for name in JSON_TUPLES
        }
        return cls(
            **{
                **values,
                **lists,
                "placeholder": bool(values["placeholder"]),
                "long_prompt": bool(values.get("long_prompt")),
                "provenance": json.loads(values["provenance"]),
            }
        )


@dataclass(frozen=True)
class CharacterRecord:
    """One version of a character's look: the descriptor every prompt uses for them, verbatim,
    and the portrait prompt. `source`: "llm" (written from the series data), "description" (the
    data's description, shortened: no LLM was asked) or "edit" (typed by a person)."""

    name: str
    version: int
    descriptor: str
    portrait: str
    source: str
    llm_key: str | None = None
    note: str = ""  # what to know about it, e.g. "not in characters.csv"
    created_at: str = ""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> CharacterRecord:
        return cls(**{name: row[name] for name in row.keys()})  # noqa: SIM118 - a Row


@dataclass(frozen=True)
class PromptRecord:
    """A prompt the LLM wrote for a target, with the self-ask trace for seasons."""

    key: str  # the LLM cache key that produced it (seasons: key:style)
    target: Target
    spec: PromptSpec
    llm_model: str
    template_hash: str
    trace: list[dict[str, str]] | None = None
    created_at: str = ""

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> PromptRecord:
        return cls(
            key=row["key"],
            target=Target(row["target"], row["season"], row["episode"], row["style"]),
            spec=PromptSpec(**json.loads(row["spec"])),
            llm_model=row["llm_model"],
            template_hash=row["template_hash"],
            trace=None if row["trace"] is None else json.loads(row["trace"]),
            created_at=row["created_at"],
        )


def record_from_png(path: Path) -> ImageRecord | None:
    """The catalog record a studio PNG describes (its `studio` and `parameters` chunks), or None.

    Images written since the recorded request and model label were added to the provenance are
    recovered exactly; older ones from the A1111 infotext, where numbers are rounded as written.
    """
    try:
        with Image.open(path) as image:
            info = dict(image.info)  # text chunks before the image data: no decoding needed
        provenance = json.loads(info["studio"])
        infotext = parse_parameters(info.get("parameters", ""))
        request = provenance.get("request") or {
            "prompt": infotext["Prompt"],
            "negative_prompt": infotext["Negative prompt"],
            "sampler": infotext["Sampler"],
            "steps": int(infotext["Steps"]),
            "cfg": float(infotext["CFG scale"]),
            "width": int(infotext["Size-1"]),
            "height": int(infotext["Size-2"]),
            "seed": int(infotext["Seed"]),
        }
        return ImageRecord(
            cache_key=provenance["cache_key"],
            target=provenance.get("target") or "studio",
            season=provenance.get("season"),
            episode=provenance.get("episode"),
            style=provenance.get("style"),
            image_index=int(provenance.get("image_index") or 0),
            prompt=request["prompt"],
            negative_prompt=request["negative_prompt"],
            model=provenance.get("model_label") or infotext.get("Model", ""),
            sampler=request["sampler"],
            steps=int(request["steps"]),
            cfg=float(request["cfg"]),
            width=int(request["width"]),
            height=int(request["height"]),
            seed=int(request["seed"]),
            placeholder=bool(provenance.get("placeholder")),
            provenance=provenance,
            mode=request.get("mode", "txt2img"),
            strength=request.get("strength"),
            init_image=request.get("init_image"),
            mask_image=request.get("mask_image"),
            outpaint=_tuple(request.get("outpaint")),
            reference_image=request.get("reference_image"),
            reference_scale=request.get("reference_scale"),
            extra_references=_tuple(request.get("extra_references")),
            reference_masks=_tuple(request.get("reference_masks")),
            long_prompt=bool(request.get("long_prompt")),
            blend_prompt=request.get("blend_prompt"),
            blend=request.get("blend"),
            control_image=request.get("control_image"),
            control_type=request.get("control_type"),
            control_scale=request.get("control_scale"),
            control_start=request.get("control_start"),
            control_end=request.get("control_end"),
            control_resize=request.get("control_resize"),
            inpaint_padding=request.get("inpaint_padding"),
        )
    except (OSError, SyntaxError, KeyError, ValueError, TypeError, AttributeError):
        return None


@dataclass
class OpenReport:
    """What the store tidied when it opened."""

    adopted: int = 0  # PNGs without a row, recorded again from their own metadata
    dropped: int = 0  # rows whose PNG file is gone, removed
