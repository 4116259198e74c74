"""The Studio's comparison grid: one or two parameters varied, everything else fixed, labelled axes.

`parse_axis("cfg", "3, 7.5, 12")` checks the values; `grid_requests` makes one request per cell,
row by row; `compose_grid` pastes the images into one PNG with the values along the axes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from PIL import Image, ImageDraw, ImageFont

from studio.core.errors import ParameterError, RenderError
from studio.core.params import (
    SAMPLER_NAMES,
    RenderRequest,
    check_value,
    resolve_sampler,
    resolve_seed,
)

# Parameter name -> (RenderRequest field, value type).
AXES = {
    "CFG scale": ("cfg", float),
    "Steps": ("steps", int),
    "Sampler": ("sampler", str),
    "Seed": ("seed", int),
}
MAX_CELLS = 36


@dataclass(frozen=True)
class Axis:
    name: str  # a key of AXES
    values: tuple  # typed values, in the order given

    def labels(self) -> list[str]:
        return [
            f"{self.name}: {value:g}" if isinstance(value, float) else f"{self.name}: {value}"
            for value in self.values
        ]


def parse_axis(name: str, text: str) -> Axis:
    """Values for one axis from a comma-separated list; samplers by their A1111 names."""
    if name not in AXES:
        raise RenderError(f"Unknown grid parameter {name!r}; choose one of {', '.join(AXES)}.")
    field, kind = AXES[name]
    raw = [part.strip() for part in text.split(",") if part.strip()]
    if not raw:
        raise RenderError(f"Give at least one value for {name}, separated by commas.")
    values = []
    for item in raw:
        if kind is str:  # A1111's, ComfyUI's and k-diffusion's names too
            try:
                sampler, notes = resolve_sampler(item)
            except ParameterError:
                sampler, notes = "", []
            if notes:  # a schedule we lack would make two cells alike
                raise RenderError(
                    f"Sampler {item!r} on the {name} axis: {'; '.join(notes)}; write {sampler!r}."
                )
            if not sampler:
                raise RenderError(
                    f"Unknown sampler {item!r} on the {name} axis; use one of "
                    f"{', '.join(SAMPLER_NAMES)}."
                )
            values.append(sampler)
            continue
        try:
            value = kind(item)
        except ValueError:
            raise RenderError(
                f"{item!r} is not a valid {name} value; write numbers separated by commas, "
                f"like {'3, 7.5, 12' if kind is float else '10, 20, 30'}."
            ) from None
        if field == "seed":  # -1: a random seed, drawn now (the cell's label shows it)
            value = resolve_seed(value)
        try:
            check_value(field, value)
        except ParameterError as exc:
            raise RenderError(f"{item!r} on the {name} axis: {exc}") from None
        values.append(value)
    return Axis(name, tuple(dict.fromkeys(values)))


def grid_requests(base: RenderRequest, x: Axis, y: Axis | None = None) -> list[RenderRequest]:
    """One request per cell, row by row (y), column by column (x); each checked."""
    if x.name == (y.name if y else None):
        raise RenderError("Choose two different parameters for the grid's axes.")
    rows = y.values if y else (None,)
    cells = len(rows) * len(x.values)
    if cells > MAX_CELLS:
        raise RenderError(f"The grid has {cells} cells; keep it to {MAX_CELLS} or fewer.")
    requests = []
    for y_value in rows:
        for x_value in x.values:
            changes = {AXES[x.name][0]: x_value}
            if y is not None:
                changes[AXES[y.name][0]] = y_value
            request = replace(base, **changes)
            request.check()
            requests.append(request)
    return requests


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def compose_grid(images: list[Image.Image], x: Axis, y: Axis | None = None) -> Image.Image:
    """The cells pasted in a grid with the x values on top and the y values on the left."""
    columns, rows = len(x.values), len(y.values) if y else 1
    if len(images) != columns * rows:
        raise ValueError(f"expected {columns * rows} images, got {len(images)}")
    width, height = images[0].size
    font = _font(max(12, width // 20))
    top = font.size * 2 + 8
    left = max(font.getlength(label) for label in y.labels()) + 16 if y else 0
    left = int(left)
    sheet = Image.new("RGB", (left + columns * width, top + rows * height), "white")
    draw = ImageDraw.Draw(sheet)
    for column, label in enumerate(x.labels()):
        centre = left + column * width + width / 2
        draw.text((centre, top / 2), label, fill="black", font=font, anchor="mm")
    for row, label in enumerate(y.labels() if y else []):
        draw.text((8, top + row * height + height / 2), label, fill="black", font=font, anchor="lm")
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        sheet.paste(image.convert("RGB"), (left + column * width, top + row * height))
    return sheet
