"""One image on demand, for the dashboard: the catalog's copy when there is one, else a render.

Uses the batch job's render, metadata and catalog code (`batch.store_image`), so an image made in
the dashboard carries the same parameters and provenance as one made by `dataprep.py`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from PIL import Image

from studio.batch import Job, store_image
from studio.llm import LLM
from studio.prompting import PromptSpec
from studio.render import Renderer, RenderRequest, StepCallback
from studio.store import Store

# Latent-to-RGB factors for SD 1.x latents (as in A1111's fast previews): a cheap look at the image
# while it denoises, without running the VAE each step.
_LATENT_RGB = (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
)


def latent_preview(latents) -> Image.Image | None:
    """A rough RGB picture of the first latent of a batch; None if it has no 4 channels."""
    import torch

    if latents is None or latents.ndim != 4 or latents.shape[1] != len(_LATENT_RGB):
        return None
    factors = torch.tensor(_LATENT_RGB, dtype=torch.float32)
    rgb = torch.einsum("chw,cr->hwr", latents[0].detach().float().cpu(), factors)
    rgb = ((rgb + 1) / 2).clamp(0, 1).mul(255).byte().numpy()
    return Image.fromarray(rgb).resize((rgb.shape[1] * 8, rgb.shape[0] * 8), Image.NEAREST)


@dataclass(frozen=True)
class Target:
    """What an image is for: an episode, a season's style, or the Studio playground."""

    kind: str = "studio"  # episode, season or studio
    season: int | None = None
    episode: int | None = None
    style: str | None = None


STUDIO_TARGET = Target()


@dataclass(frozen=True)
class Generated:
    row: sqlite3.Row
    image: Image.Image
    cached: bool


def generate_image(
    renderer: Renderer,
    store: Store,
    llm: LLM | None,
    request: RenderRequest,
    target: Target = STUDIO_TARGET,
    spec: PromptSpec | None = None,
    on_step: StepCallback | None = None,
) -> Generated:
    """The image for `request`: from the catalog if it was made before, else rendered and stored.

    A new image joins its target's images with the next free index.
    """
    request.check()
    key = renderer.cache_key(request)
    row = store.find_image(key)
    if row is not None:
        return Generated(row, Image.open(store.image_path(row)), cached=True)
    image = renderer.render([request], on_step=on_step)[0]
    job = Job(
        target=target.kind,
        season=target.season,
        episode=target.episode,
        style=target.style,
        image_index=store.next_image_index(target.kind, target.season, target.episode),
        spec=PromptSpec(
            request.prompt,
            request.negative_prompt,
            spec.style if spec else "",
            spec.rationale if spec else "",
        ),
        request=request,
        provenance={"made_in": "dashboard"},
    )
    store_image(store, renderer, llm.model if llm else "", job, key, image)
    return Generated(store.find_image(key), image, cached=False)
