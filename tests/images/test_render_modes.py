"""Every diffusers mode on the demo model: determinism, seeds, masks, sizes, weights, keys."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
from PIL import Image

from studio.core.errors import ImageInputError, ParameterError, RenderError
from studio.core.inputs import content_hash, png_bytes
from studio.core.params import MODES, SAMPLER_NAMES, RenderRequest, outpaint_size
from studio.images.backends.base import Capabilities
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.schedulers import scheduler_config_of
from studio.images.backends.diffusers.weights import resolve_image_model
from studio.images.outpaint import OUTPAINT_BLUR, OUTPAINT_SEAM, outpaint_canvas

IMAGES: dict[str, Image.Image] = {}


def inputs(sha: str) -> Image.Image:
    return IMAGES[sha]


def add_input(image: Image.Image) -> str:
    sha = content_hash(png_bytes(image))
    IMAGES[sha] = image
    return sha


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def make_init(width: int = 64, height: int = 64) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def make_mask(width: int = 64, height: int = 64) -> Image.Image:
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[16:48, 16:48] = 255  # white = repaint
    return Image.fromarray(mask)


INIT = add_input(make_init())
MASK = add_input(make_mask())
BASE = RenderRequest("a lighthouse at night", "blurry", "Euler", 2, 7.0, 64, 64, 3)
MODE_REQUESTS = {
    "img2img": dataclasses.replace(BASE, mode="img2img", init_image=INIT, strength=0.6),
    "inpaint": dataclasses.replace(
        BASE, mode="inpaint", init_image=INIT, mask_image=MASK, strength=1.0
    ),
    "outpaint": dataclasses.replace(
        BASE, mode="outpaint", init_image=INIT, outpaint=(0, 32, 0, 0), width=96
    ),
    "variation": dataclasses.replace(
        BASE, prompt="", mode="variation", init_image=INIT, strength=0.5
    ),
}


@pytest.fixture(scope="module")
def renderer(shared_cache):
    return Renderer(resolve_image_model("demo", shared_cache), "cpu")


@pytest.fixture
def fresh(renderer):
    """A renderer on the same model whose weights are not loaded: errors must come first."""
    return Renderer(renderer.model, "cpu")


def render_one(renderer, request, **options):
    return renderer.render([request], inputs=inputs, **options)[0]


@pytest.mark.parametrize("mode", list(MODE_REQUESTS))
def test_every_mode_is_deterministic_and_seeded(renderer, mode):
    request = MODE_REQUESTS[mode]
    first, again = render_one(renderer, request), render_one(renderer, request)
    assert first.size == (request.width, request.height) and first.mode == "RGB"
    assert (pixels(first) == pixels(again)).all()
    other = render_one(renderer, dataclasses.replace(request, seed=4))
    assert (pixels(first) != pixels(other)).any()


def test_inpaint_keeps_unmasked_pixels_exactly(renderer):
    image = pixels(render_one(renderer, MODE_REQUESTS["inpaint"]))
    original, mask = pixels(IMAGES[INIT]), np.asarray(IMAGES[MASK]) > 127
    assert (image[~mask] == original[~mask]).all()
    assert (image[mask] != original[mask]).any()  # and the white part was repainted


def test_outpaint_extends_by_the_amounts_and_keeps_the_original_away_from_the_seam(renderer):
    request = dataclasses.replace(MODE_REQUESTS["outpaint"], outpaint=(16, 0, 8, 24), width=80)
    request = dataclasses.replace(request, height=96)
    assert outpaint_size((64, 64), (16, 0, 8, 24)) == (80, 96)
    image = pixels(render_one(renderer, request))
    assert image.shape == (96, 80, 3)
    keep = OUTPAINT_SEAM + 3 * OUTPAINT_BLUR  # the seam's reach into the original
    original = pixels(IMAGES[INIT])
    # left edge extended by 16: columns past the seam are the original's; up by 8, down by 24
    inner = image[8 + keep : 8 + 64 - keep, 16 + keep : 16 + 64]
    assert (inner == original[keep : 64 - keep, keep:]).all()
    assert (image[:, :16] != pixels(make_init())[0, 0]).any()  # the new area was painted


def test_outpaint_canvas_masks_the_new_area_and_a_soft_seam():
    canvas, mask, blend = outpaint_canvas(make_init(), (0, 32, 0, 0))
    assert canvas.size == mask.size == blend.size == (96, 64)
    assert (pixels(canvas)[:, :64] == pixels(make_init())).all()
    assert (pixels(canvas)[:, 64:] == pixels(make_init())[:, 63:64]).all()  # edge extended
    mask, blend = np.asarray(mask), np.asarray(blend)
    seam = 64 - OUTPAINT_SEAM
    assert (mask[:, seam:] == 255).all() and (mask[:, :seam] == 0).all()
    assert (blend[:, 64:] == 255).all() and (blend[:, :32] == 0).all()
    assert 0 < blend[10, 64 - OUTPAINT_SEAM] < 255  # soft across the seam


def test_every_mode_runs_on_the_loaded_weights(renderer):
    base = renderer.pipe
    for mode in MODES:
        pipe = renderer.mode_pipeline(mode, "DDIM")
        assert pipe.unet is base.unet and pipe.vae is base.vae
        assert pipe.text_encoder is base.text_encoder
        assert type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert renderer.capabilities.modes == MODES
    assert renderer.capabilities.samplers == SAMPLER_NAMES and renderer.capabilities.sizes == ()


def test_txt2img_cache_key_is_the_one_before_modes(renderer):
    payload = {  # the key's formula before modes existed
        "model": renderer.model.identity(),
        "dtype": "torch.float32",
        "pipeline": "txt2img",
        "request": {
            name: getattr(BASE, name)
            for name in ("prompt", "negative_prompt", "sampler", "steps", "cfg", "width")
            + ("height", "seed")
        },
        "scheduler": scheduler_config_of(BASE.sampler, renderer.model.scheduler_base_config()),
    }
    expected = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    assert renderer.cache_key(BASE) == expected
    assert "pipeline" in renderer.provenance(BASE)


def test_cache_key_covers_the_mode_and_its_inputs(renderer):
    keys = {renderer.cache_key(BASE)} | {renderer.cache_key(r) for r in MODE_REQUESTS.values()}
    img2img, inpaint, outpaint = (MODE_REQUESTS[m] for m in ("img2img", "inpaint", "outpaint"))
    other = add_input(make_init().transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    keys |= {
        renderer.cache_key(dataclasses.replace(img2img, strength=0.5)),
        renderer.cache_key(dataclasses.replace(img2img, init_image=other)),
        renderer.cache_key(dataclasses.replace(img2img, mode="variation")),
        renderer.cache_key(dataclasses.replace(inpaint, mask_image=other)),
        renderer.cache_key(dataclasses.replace(outpaint, outpaint=(8, 24, 0, 0))),
    }
    assert len(keys) == 10


def test_progress_is_reported_with_latents_in_every_mode(renderer):
    for mode, request in MODE_REQUESTS.items():
        steps: list[tuple[int, int, tuple]] = []
        request = dataclasses.replace(request, steps=4)
        renderer.render(
            [request],
            on_step=lambda s, t, latents, seen=steps: seen.append((s, t, latents.shape)),
            inputs=inputs,
        )
        total = steps[-1][1]
        assert [s for s, _, _ in steps] == list(range(1, total + 1)), mode
        assert total == (int(4 * request.strength) if mode in {"img2img", "variation"} else 4)
        assert steps[0][2] == (1, 4, request.height // 8, request.width // 8)


def test_a_batch_of_img2img_matches_single_renders(renderer):
    requests = [
        MODE_REQUESTS["img2img"],
        dataclasses.replace(MODE_REQUESTS["img2img"], prompt="a violin", seed=8),
    ]
    singles = [render_one(renderer, r) for r in requests]
    renderer.batch_size = 2
    try:
        batched = renderer.render(requests, inputs=inputs)
    finally:
        renderer.batch_size = 1
    for one, many in zip(singles, batched, strict=True):
        assert np.abs(pixels(one) - pixels(many)).max() <= 2


@pytest.mark.parametrize(
    ("request_", "error", "message"),
    [
        (
            dataclasses.replace(MODE_REQUESTS["inpaint"], mask_image=add_input(make_mask(64, 72))),
            ImageInputError,
            "The mask is 64x72 but the image is 64x64",
        ),
        (
            dataclasses.replace(MODE_REQUESTS["img2img"], width=72),
            ParameterError,
            "The init image is 64x64 but the img2img request is 72x64; for img2img the width and "
            "height have to be the init image's: set them to 64x64",
        ),
        (
            dataclasses.replace(MODE_REQUESTS["outpaint"], width=64),
            ParameterError,
            "set them to 96x64",
        ),
        (
            dataclasses.replace(MODE_REQUESTS["outpaint"], outpaint=(1024, 1024, 0, 0), width=2112),
            ParameterError,
            "would make 2112x64, over the 2048x2048 limit",
        ),
        (dataclasses.replace(BASE, mode="sketch"), ParameterError, "Unknown mode 'sketch'"),
        (
            dataclasses.replace(MODE_REQUESTS["img2img"], init_image="0" * 64),
            ImageInputError,
            "is not among the input images",
        ),
        (dataclasses.replace(MODE_REQUESTS["img2img"], strength=0), ParameterError, "strength"),
        (
            dataclasses.replace(MODE_REQUESTS["variation"], strength=0.3),
            ParameterError,
            "2 x 0.3 makes none; raise steps to 4 or strength to 0.5",
        ),
    ],
)
def test_bad_inputs_fail_clearly_before_model_work(fresh, request_, error, message):
    with pytest.raises(error) as raised:
        fresh.render([request_], inputs=inputs)
    assert message in str(raised.value)
    assert fresh._pipe is None


def test_inputs_are_needed_and_a_backend_refuses_modes_it_lacks(fresh):
    with pytest.raises(RenderError, match="pass `inputs`"):
        fresh.render([MODE_REQUESTS["img2img"]])
    with pytest.raises(ParameterError, match="cannot do img2img; it does txt2img"):
        Capabilities(modes=("txt2img",)).check(MODE_REQUESTS["img2img"], fresh.label)
    assert fresh._pipe is None


def build_inpainting_model(renderer: Renderer, folder):
    """A tiny inpainting checkpoint: the demo's parts with a 9-channel unet (latents, mask,
    masked image), as SD's inpainting models have."""
    torch.manual_seed(0)
    config = {**renderer.pipe.unet.config, "in_channels": 9}
    unet = UNet2DConditionModel.from_config(config)
    parts = {k: v for k, v in renderer.pipe.components.items() if k != "unet"}
    StableDiffusionInpaintPipeline(**parts, unet=unet).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_a_dedicated_inpainting_model_is_used_for_inpaint_and_outpaint(renderer, tmp_path):
    folder = build_inpainting_model(renderer, tmp_path / "inpainting")
    model = resolve_image_model(str(folder), tmp_path)
    dedicated = Renderer(renderer.model, "cpu", inpaint_model=model)
    inpaint = MODE_REQUESTS["inpaint"]
    assert dedicated.cache_key(BASE) == renderer.cache_key(BASE)
    assert dedicated.cache_key(MODE_REQUESTS["img2img"]) == renderer.cache_key(
        MODE_REQUESTS["img2img"]
    )
    assert dedicated.cache_key(inpaint) != renderer.cache_key(inpaint)
    assert dedicated.provenance(inpaint)["inpaint_model"] == model.identity()
    assert dedicated._inpaint_pipe is None  # loaded on first use
    image = pixels(render_one(dedicated, inpaint))
    mask = np.asarray(IMAGES[MASK]) > 127
    assert (image[~mask] == pixels(IMAGES[INIT])[~mask]).all()
    assert (image != pixels(render_one(renderer, inpaint))).any()
    assert render_one(dedicated, MODE_REQUESTS["outpaint"]).size == (96, 64)
    assert dedicated.mode_pipeline("outpaint", "Euler").unet.config.in_channels == 9
    assert dedicated._pipe is None  # the image model's weights were not needed
