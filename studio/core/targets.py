"""What an image or prompt is for (`Target`: an episode, a season's style, a character, a
campaign's post, the Studio playground...) and what the LLM writes for one (`PromptSpec`): value
types the catalog persists, apart from the render parameters."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# What an image is for. "character": a character's portrait (style = the name); "reality": a
# character (style = the name) or an episode image (season, episode) in an alternate reality;
# "storyboard": an episode's key moments (image_index = the moment, in story order). "revision"
# names prompt records only: a change request's prompt, with the season, episode and style of the
# image it changed (the new image keeps that image's target).
TARGET_KINDS = (
    "episode", "season", "character", "reality", "storyboard", "revision", "studio", "campaign",
    "idea",  # prompts the prompt library's Improve wrote from a person's idea, and their images
    "api",  # images HTTP clients asked for (style: the API, "A1111" or "OpenAI")
)  # fmt: skip


@dataclass(frozen=True)
class Target:
    """What an image is for: an episode, a season's style, a character, a campaign's post
    (`style` holds the platform), or the Studio playground."""

    kind: str = "studio"
    season: int | None = None
    episode: int | None = None
    style: str | None = None

    def label(self, image_index: int | None = None) -> str:
        number = "" if image_index is None else f"#{image_index + 1}"
        if self.kind == "episode":
            return f"S{self.season:02d}E{self.episode:02d}{number}"
        if self.kind == "season":
            return f"S{self.season:02d} {self.style}"
        if self.kind == "storyboard":
            moment = "" if image_index is None else f" moment {image_index + 1}"
            return f"S{self.season:02d}E{self.episode:02d} storyboard{moment}"
        if self.kind == "reality" and self.episode is not None:
            return f"S{self.season:02d}E{self.episode:02d} reality{number}"
        return f"{self.kind} {self.style or ''}{number}".strip()


@dataclass(frozen=True)
class PromptSpec:
    """An image prompt the LLM wrote, with why."""

    prompt: str
    negative_prompt: str
    style: str
    rationale: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


STUDIO_TARGET = Target()  # the Studio playground: no episode, season or campaign
