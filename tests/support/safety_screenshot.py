"""The README's safety-filter screenshot: the Gallery, a flagged image blurred beside a clear one.

    python -m tests.support.safety_screenshot assets/screenshots

Images from the fake OpenAI Images server (img2img on a drawn scene), one checked by a tiny
StableDiffusionSafetyChecker that flags everything (built as in
tests/images/test_safety.py), one made with no filter; needs /usr/bin/chromium and playwright,
as tests/support/browser.py does.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import torch
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from transformers import CLIPImageProcessor

from studio.catalog.store import Store
from studio.core.params import RenderRequest
from studio.images.backends.openai_images import OpenAIImagesBackend
from studio.images.safety import SafetyFilter
from studio.images.service import ImageService, ImageTask
from tests.images.test_safety import build_checkers
from tests.support.browser import capture_pages, dashboard_server, scene_png
from tests.support.fakes import FakeOpenAIServer


def flag_everything(root: Path) -> Path:
    """A tiny checker folder whose every concept threshold is -1: every image is flagged."""
    folder = build_checkers(root / "checkers")["discerning"]
    model = StableDiffusionSafetyChecker.from_pretrained(folder, use_safetensors=True)
    with torch.no_grad():
        model.concept_embeds_weights.fill_(-1.0)
    model.save_pretrained(root / "flag_all", safe_serialization=True)
    CLIPImageProcessor.from_pretrained(folder).save_pretrained(root / "flag_all")
    return root / "flag_all"


def main(out: Path) -> Path:
    os.environ["HF_HUB_OFFLINE"] = "1"
    root = Path(tempfile.mkdtemp())
    checker, data = flag_everything(root), root / "data"
    with FakeOpenAIServer() as server:
        backend = OpenAIImagesBackend("gpt-image-1", server.url, api_key="sk-x", timeout=10)
        store = Store(data)
        plain = ImageService(store, backend)
        scene = plain.add_input(str(scene_png(root / "scene.png", 1024)))
        for seed, service in (
            (1, plain),
            (2, ImageService(store, backend, SafetyFilter(str(checker)))),
        ):
            service.make_one(ImageTask(RenderRequest(
                "a lighthouse on a cliff at dusk", width=1024, height=1024, seed=seed,
                mode="img2img", strength=0.5, init_image=scene,
            )))  # fmt: skip
        store.close()
        env = {
            "STUDIO_DATA_DIR": str(data),
            "STUDIO_IMAGE_MODEL": "openai:gpt-image-1",
            "STUDIO_IMAGES_BASE_URL": server.url,
            "OPENAI_API_KEY": "sk-x",
            "STUDIO_SAFETY_CHECKER": str(checker),
            "STUDIO_CACHE_DIR": str(root / "cache"),
        }
        with dashboard_server(env, root / "streamlit.log") as url:
            return capture_pages(url, out, {"safety": "gallery"}, only=True)["safety"]


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "assets/screenshots")))
