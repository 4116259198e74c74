"""The catalog's value types: what one image, prompt, character or strip row holds, and the
safety verdict stored with an image (the checker itself lives in `studio.images.safety`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

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
