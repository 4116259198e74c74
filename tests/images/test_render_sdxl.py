"""SDXL through the same backend: a tiny SDXL pipeline built from config, loaded by folder path."""

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from studio.core.hub import SD, SDXL
from studio.core.inputs import content_hash, png_bytes
from studio.core.params import CLIP_WINDOW, RenderRequest
from studio.images.backends.diffusers.demo import build_demo_sdxl_model
from studio.images.backends.diffusers.models import count_tokens
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model

REQUEST = RenderRequest("a lighthouse at night", "blurry", "Euler", 2, 7.0, 64, 64, 3)


@pytest.fixture(scope="module")
def sdxl(tmp_path_factory):
    folder = build_demo_sdxl_model(tmp_path_factory.mktemp("models") / "tiny-sdxl")
    model = resolve_image_model(str(folder), folder.parent)
    return Renderer(model, "cpu")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_the_family_is_detected_from_the_folder(sdxl, shared_cache):
    assert sdxl.model.kind == "folder" and sdxl.family == SDXL
    assert resolve_image_model("demo", shared_cache).family == SD
    tokenizer = sdxl.tokenizer  # the first of SDXL's two, before any weights are loaded
    assert sdxl._pipe is None and tokenizer.model_max_length == CLIP_WINDOW
    assert sdxl.count_tokens("a lighthouse at night") == 6  # BOS, 4 words, EOS


@pytest.mark.slow
def test_sdxl_renders_txt2img_deterministically_with_latent_previews(sdxl):
    steps: list[tuple[int, int, tuple]] = []
    first = sdxl.render([REQUEST], on_step=lambda s, t, x: steps.append((s, t, x.shape)))[0]
    assert type(sdxl.pipe).__name__ == "StableDiffusionXLPipeline"
    assert first.size == (64, 64)
    assert steps == [(1, 2, (1, 4, 8, 8)), (2, 2, (1, 4, 8, 8))]
    assert (pixels(first) == pixels(sdxl.render([REQUEST])[0])).all()
    assert (pixels(first) != pixels(sdxl.render([dataclasses.replace(REQUEST, seed=4)])[0])).any()
    assert count_tokens(sdxl.tokenizer, "a lighthouse at night") == 6
    assert sdxl.provenance(REQUEST)["model_family"] == SDXL


def test_sdxl_img2img_and_inpaint_run_on_the_loaded_weights(sdxl):
    init = sdxl.render([REQUEST])[0]
    mask = np.zeros((64, 64), dtype=np.uint8)
    mask[:, 32:] = 255
    images = {content_hash(png_bytes(i)): i for i in (init, Image.fromarray(mask))}
    init_sha, mask_sha = list(images)
    img2img = dataclasses.replace(REQUEST, mode="img2img", init_image=init_sha, strength=0.5)
    inpaint = dataclasses.replace(img2img, mode="inpaint", mask_image=mask_sha, strength=1.0)
    out = sdxl.render([img2img, img2img, inpaint], inputs=lambda sha: images[sha])
    assert (pixels(out[0]) == pixels(out[1])).all() and (pixels(out[0]) != pixels(init)).any()
    assert (pixels(out[2])[:, :32] == pixels(init)[:, :32]).all()
    for mode in ("img2img", "inpaint"):
        pipe = sdxl.mode_pipeline(mode, "Euler")
        assert "XL" in type(pipe).__name__
        assert pipe.unet is sdxl.pipe.unet and pipe.text_encoder_2 is sdxl.pipe.text_encoder_2


def test_single_file_families_come_from_the_tensor_names(tmp_path):
    tiny = torch.zeros(1)
    save_file({"conditioner.embedders.1.model.ln_final.weight": tiny}, tmp_path / "xl.safetensors")
    save_file(
        {"cond_stage_model.transformer.final_layer_norm.weight": tiny}, tmp_path / "sd.safetensors"
    )
    assert resolve_image_model(str(tmp_path / "xl.safetensors"), tmp_path).family == SDXL
    assert resolve_image_model(str(tmp_path / "sd.safetensors"), tmp_path).family == SD
