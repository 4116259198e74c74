"""A cheap look at an image while it denoises: SD 1.x latents mapped to RGB by fixed factors,
without running the VAE each step (torch is imported on the first call)."""

from __future__ import annotations

from PIL import Image

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
