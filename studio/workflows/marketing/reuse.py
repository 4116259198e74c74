"""What a campaign can reuse instead of rendering: an episode's images, the panels of its newest
storyboard (in story order) and the portraits of its characters (`reusable_images`), each with a
label that says where it came from (`describe`).

A reused image renders nothing: the images step points the post at the stored image, and the
export cuts it to the platform's aspect ratio.
"""

from __future__ import annotations

from dataclasses import dataclass

from studio.catalog.records import StoredImage
from studio.catalog.store import Store
from studio.core.dataset import Series
from studio.writing.cast import portrait_of
from studio.writing.storyboards import stored_storyboard

KINDS = ("episode", "storyboard", "portrait")


@dataclass(frozen=True)
class ReusableImage:
    cache_key: str
    kind: str  # one of KINDS
    label: str  # where it came from, for a person: "Storyboard panel 2 of 5", "Portrait of …"


def describe(image: StoredImage) -> str:
    """Where a catalog image came from, in words."""
    if image.target == "storyboard":
        moment = image.provenance.get("moment")
        number = f" {moment + 1}" if isinstance(moment, int) else ""
        return f"Storyboard panel{number} of S{image.season:02d}E{image.episode:02d}"
    if image.target == "character":
        return f"Portrait of {image.style}"
    if image.target == "episode":
        return (
            f"Episode image #{image.image_index + 1} of S{image.season:02d}E{image.episode:02d} "
            f"(seed {image.seed})"
        )
    return f"Catalog image ({image.target})"


def reusable_images(store: Store, series: Series, season: int, episode: int) -> list[ReusableImage]:
    """The episode's images, then its newest storyboard's panels in story order, then the
    portraits of its characters (each one's newest), as options to reuse."""
    found = [
        ReusableImage(row.cache_key, "episode", describe(row))
        for row in store.images(target="episode", season=season, episode=episode)
    ]
    board = stored_storyboard(store, season, episode)
    if board is not None:
        total = len(board.images)
        found += [
            ReusableImage(image.cache_key, "storyboard", f"Storyboard panel {n} of {total}")
            for n, image in enumerate(board.images, start=1)
            if image is not None
        ]
    matches = [e for e in series.episodes if (e.season, e.episode) == (season, episode)]
    names = dict.fromkeys(c.name for e in matches for c in series.characters_of(e))
    for name in names:
        portrait = portrait_of(store, name)
        if portrait is not None:
            found.append(ReusableImage(portrait.cache_key, "portrait", f"Portrait of {name}"))
    return found
