"""IP-Adapter references on the demo model with a tiny untrained adapter: loading, every mode,
determinism, pixels without a reference, batching, cache keys, provenance, infotext, errors."""

import dataclasses
import hashlib

import numpy as np
import pytest
from PIL import Image

from studio.catalog.store import Store
from studio.core.config import load_settings
from studio.core.errors import ImageInputError, ParameterError, RenderError
from studio.core.hub import SD, SDXL
from studio.core.metadata import parse_parameters
from studio.core.params import RenderRequest
from studio.images.backends.base import Capabilities
from studio.images.backends.diffusers.adapters import resolve_ip_adapter
from studio.images.backends.diffusers.demo import build_demo_ip_adapter, build_demo_sdxl_model
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model
from studio.images.backends.registry import backend_settings, open_image_backend
from studio.images.service import ImageService, ImageTask, request_parameters
from tests.images.test_render_modes import IMAGES, add_input, build_inpainting_model, inputs, pixels
from tests.images.test_render_modes import make_init as gradient


def mask() -> Image.Image:
    white = np.zeros((64, 64), dtype=np.uint8)
    white[16:48, 16:48] = 255  # white = repaint
    return Image.fromarray(white)


INIT = add_input(gradient())
MASK = add_input(mask())
FACE = add_input(Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 40, 3), np.uint8)))
OTHER_FACE = add_input(Image.new("RGB", (40, 48), (200, 30, 30)))
BASE = RenderRequest("a lighthouse keeper", "blurry", "Euler", 2, 7.0, 64, 64, 3)
WITH_FACE = dataclasses.replace(BASE, reference_image=FACE, reference_scale=0.6)
MODES = {
    "img2img": dict(mode="img2img", init_image=INIT, strength=0.6),
    "inpaint": dict(mode="inpaint", init_image=INIT, mask_image=MASK, strength=1.0),
    "outpaint": dict(mode="outpaint", init_image=INIT, outpaint=(0, 32, 0, 0), width=96),
    "variation": dict(prompt="", mode="variation", init_image=INIT, strength=0.5),
}


@pytest.fixture(scope="module")
def adapter_folder(shared_cache):
    return build_demo_ip_adapter(shared_cache / "ip-adapter-demo")


@pytest.fixture(scope="module")
def adapter(adapter_folder):
    return resolve_ip_adapter(str(adapter_folder), SD)


@pytest.fixture(scope="module")
def renderer(shared_cache, adapter):
    return Renderer(resolve_image_model("demo", shared_cache), "cpu", ip_adapter=adapter)


@pytest.fixture(scope="module")
def plain(renderer):
    """The same model without an adapter."""
    return Renderer(renderer.model, "cpu")


def render_one(renderer: Renderer, request: RenderRequest) -> np.ndarray:
    return pixels(renderer.render([request], inputs=inputs)[0])


def test_the_demo_adapter_is_built_identically_in_the_h94_layout(adapter_folder, tmp_path):
    again = build_demo_ip_adapter(tmp_path / "again")
    files = sorted(p.relative_to(again).as_posix() for p in again.rglob("*") if p.is_file())
    assert files == [
        "models/image_encoder/config.json",
        "models/image_encoder/model.safetensors",
        "models/ip-adapter_sd15.safetensors",
    ]
    for name in files:
        digests = {
            hashlib.sha256((f / name).read_bytes()).digest() for f in (again, adapter_folder)
        }
        assert len(digests) == 1, name


def test_resolving_reads_the_layout_and_what_unet_the_adapter_fits(adapter, adapter_folder):
    assert (adapter.subfolder, adapter.weight_name) == ("models", "ip-adapter_sd15.safetensors")
    assert adapter.image_encoder == "models/image_encoder"
    assert (adapter.cross_attention_dim, adapter.layers) == (32, 4)  # the demo unet's
    spelled = resolve_ip_adapter(f"{adapter_folder}:models:ip-adapter_sd15.safetensors", SD)
    assert spelled.identity() | {"ip_adapter": ""} == adapter.identity() | {"ip_adapter": ""}


@pytest.mark.slow
def test_a_reference_renders_deterministically_and_steers_the_pixels(renderer):
    first, again = render_one(renderer, WITH_FACE), render_one(renderer, WITH_FACE)
    assert first.shape == (64, 64, 3)
    assert (first == again).all()
    assert (first != render_one(renderer, BASE)).any()
    other_face = render_one(renderer, dataclasses.replace(WITH_FACE, reference_image=OTHER_FACE))
    assert (first != other_face).any()
    weaker = render_one(renderer, dataclasses.replace(WITH_FACE, reference_scale=0.3))
    assert (first != weaker).any()


@pytest.mark.slow
def test_without_a_reference_the_pixels_are_the_models_without_an_adapter(renderer, plain):
    for request in [BASE, dataclasses.replace(BASE, **MODES["img2img"])]:
        assert (render_one(renderer, request) == render_one(plain, request)).all()
    zero = render_one(renderer, dataclasses.replace(WITH_FACE, reference_scale=0.0))
    assert (zero == render_one(plain, BASE)).all()  # scale 0 ignores the reference


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_takes_a_reference(renderer, mode):
    request = dataclasses.replace(BASE, **MODES[mode])
    without = render_one(renderer, request)
    image = render_one(
        renderer, dataclasses.replace(request, reference_image=FACE, reference_scale=1.0)
    )
    assert image.shape == without.shape
    assert (image != without).any()
    if mode == "inpaint":  # the composite still keeps every black pixel of the mask
        keep = np.asarray(IMAGES[MASK]) <= 127
        assert (image[keep] == pixels(IMAGES[INIT])[keep]).all()


@pytest.mark.slow
def test_a_batch_shares_a_reference_and_never_mixes_two(renderer):
    requests = [
        WITH_FACE,
        dataclasses.replace(WITH_FACE, prompt="a violin", seed=5),
        dataclasses.replace(WITH_FACE, reference_image=OTHER_FACE, seed=6),
        dataclasses.replace(BASE, seed=7),
    ]
    singles = [render_one(renderer, request) for request in requests]
    renderer.batch_size = 4
    try:
        batched = renderer.render(requests, inputs=inputs)
    finally:
        renderer.batch_size = 1
    for one, many in zip(singles, batched, strict=True):
        assert np.abs(one - pixels(many)).max() <= 2


def test_the_service_groups_calls_by_reference_and_scale():
    groups = {
        request.batch_group()
        for request in [
            BASE,
            WITH_FACE,
            dataclasses.replace(WITH_FACE, reference_scale=0.3),
            dataclasses.replace(WITH_FACE, reference_image=OTHER_FACE),
        ]
    }
    assert len(groups) == 4
    assert dataclasses.replace(WITH_FACE, seed=9).batch_group() in groups
    sorted(groups)  # the service sorts its jobs by group


def test_cache_key_and_provenance_name_the_adapter_only_with_a_reference(renderer, plain, adapter):
    assert renderer.cache_key(BASE) == plain.cache_key(BASE)  # existing keys stay the same
    assert "ip_adapter" not in renderer.provenance(BASE)
    keys = {renderer.cache_key(BASE), renderer.cache_key(WITH_FACE)}
    keys.add(renderer.cache_key(dataclasses.replace(WITH_FACE, reference_scale=0.3)))
    keys.add(renderer.cache_key(dataclasses.replace(WITH_FACE, reference_image=OTHER_FACE)))
    other = dataclasses.replace(adapter, weight_name="ip-adapter-plus_sd15.safetensors")
    keys.add(Renderer(renderer.model, "cpu", ip_adapter=other).cache_key(WITH_FACE))
    assert len(keys) == 5
    provenance = renderer.provenance(WITH_FACE)["ip_adapter"]
    assert provenance == adapter.identity()
    assert provenance["weights"] == "models/ip-adapter_sd15.safetensors"


def test_a_reference_needs_a_backend_with_an_adapter(renderer, plain):
    assert renderer.capabilities.ip_adapter and not plain.capabilities.ip_adapter
    fresh = Renderer(renderer.model, "cpu")
    with pytest.raises(ParameterError, match=r"ip_adapter \(STUDIO_IP_ADAPTER\)"):
        fresh.render([WITH_FACE], inputs=inputs)
    with pytest.raises(ParameterError, match="has no IP-Adapter"):
        Capabilities().check(WITH_FACE, "OpenAI Images")
    Capabilities().check(BASE, "OpenAI Images")
    assert fresh._pipe is None  # refused before any model work


def test_a_missing_reference_image_fails_before_model_work(adapter, renderer):
    fresh = Renderer(renderer.model, "cpu", ip_adapter=adapter)
    with pytest.raises(ImageInputError, match="The reference image 000000000000… is not among"):
        fresh.render([dataclasses.replace(WITH_FACE, reference_image="0" * 64)], inputs=inputs)
    with pytest.raises(RenderError, match="The reference image .* was not given"):
        fresh.render([WITH_FACE])
    assert fresh._pipe is None


@pytest.mark.slow
def test_the_service_stores_the_reference_in_the_infotext_and_provenance(renderer, tmp_path):
    store = Store(tmp_path / "data")
    try:
        service = ImageService(store, renderer)
        face = service.add_input(IMAGES[FACE], "reference image")
        request = dataclasses.replace(WITH_FACE, reference_image=face)
        first = service.make_one(ImageTask(request))
        assert not first.cached and service.make_one(ImageTask(request)).cached
        with Image.open(first.path) as png:
            fields = parse_parameters(png.info["parameters"])
        assert fields["IP-Adapter image hash"] == face[:10]
        assert fields["IP-Adapter scale"] == "0.6"
        assert first.record.reference_image == face and first.record.reference_scale == 0.6
        assert first.record.provenance["ip_adapter"]["weights"].endswith("sd15.safetensors")
    finally:
        store.close()
    assert "IP-Adapter" not in request_parameters(BASE, "demo")


@pytest.mark.slow
def test_a_dedicated_inpainting_model_gets_the_adapter_too(plain, adapter, tmp_path):
    folder = build_inpainting_model(plain, tmp_path / "inpainting")  # without an image encoder
    dedicated = Renderer(
        plain.model,
        "cpu",
        inpaint_model=resolve_image_model(str(folder), tmp_path),
        ip_adapter=adapter,
    )
    request = dataclasses.replace(BASE, **MODES["inpaint"])
    without = render_one(dedicated, request)
    with_face = dataclasses.replace(request, reference_image=FACE, reference_scale=1.0)
    assert (render_one(dedicated, with_face) != without).any()
    assert dedicated._inpaint_pipe.image_encoder is not None
    assert dedicated._pipe is None  # the image model's weights were not needed


def test_open_image_backend_passes_the_setting(adapter_folder, shared_cache, tmp_path):
    settings = load_settings(
        {"image_model": "demo", "device": "cpu", "ip_adapter": str(adapter_folder)}
    )
    assert ("ip_adapter", str(adapter_folder)) in backend_settings(settings)
    backend = open_image_backend(settings)
    assert backend.capabilities.ip_adapter
    assert backend.ip_adapter.weights == "models/ip-adapter_sd15.safetensors"
    assert not open_image_backend(load_settings({"image_model": "demo"})).capabilities.ip_adapter
    missing = load_settings({"image_model": "demo", "ip_adapter": str(tmp_path / "nowhere")})
    with pytest.raises(RenderError, match="STUDIO_IP_ADAPTER"):
        open_image_backend(missing)


@pytest.mark.parametrize(
    ("name", "family", "message"),
    [
        ("{tmp}/nowhere", SD, "IP-Adapter folder .*nowhere does not exist; set ip_adapter "),
        ("{adapter}:models:ip-adapter_sd15.bin", SD, "only .safetensors weights are loaded"),
        ("{tmp}", SD, "has no models/ip-adapter_sd15.safetensors"),
        ("{adapter}", SDXL, "has no sdxl_models/ip-adapter_sdxl.safetensors"),
        ("{adapter}:models/image_encoder:model.safetensors", SD, "is no IP-Adapter"),
        ("nobody/no-such-adapter", SD, "not in the Hugging Face cache"),
    ],
)
def test_resolution_errors_name_the_setting_and_what_was_expected(
    adapter_folder, tmp_path, name, family, message
):
    with pytest.raises(RenderError, match=message) as raised:
        resolve_ip_adapter(name.format(tmp=tmp_path, adapter=adapter_folder), family)
    assert "ip_adapter (STUDIO_IP_ADAPTER)" in str(raised.value)
    assert "h94/IP-Adapter layout" in str(raised.value)


def test_an_image_encoder_must_be_safetensors(adapter_folder, tmp_path):
    copy = tmp_path / "adapter"
    for path in adapter_folder.rglob("*.*"):
        if path.name != "model.safetensors":
            (copy / path.relative_to(adapter_folder)).parent.mkdir(parents=True, exist_ok=True)
            (copy / path.relative_to(adapter_folder)).write_bytes(path.read_bytes())
    with pytest.raises(RenderError, match="has no model.safetensors"):
        resolve_ip_adapter(str(copy), SD)


@pytest.mark.slow
def test_an_sd_adapter_on_an_sdxl_model_fails_clearly(adapter, shared_cache):
    folder = build_demo_sdxl_model(shared_cache / "models" / "tiny-sdxl-ip-adapter")
    sdxl = Renderer(resolve_image_model(str(folder), folder.parent), "cpu", ip_adapter=adapter)
    with pytest.raises(RenderError) as raised:
        sdxl.render([WITH_FACE], inputs=inputs)
    message = str(raised.value)
    assert "ip_adapter (STUDIO_IP_ADAPTER)" in message
    assert "fits a unet with 4 cross-attention layers of width 32" in message
    assert "(sdxl) has 8 of width 64" in message
    assert "sdxl_models/ip-adapter_sdxl.safetensors" in message
    assert sdxl._pipe is None


@pytest.mark.slow
def test_the_batch_job_conditions_episode_images_on_their_main_characters_portrait(
    tmp_path, shared_cache, adapter_folder
):
    from studio.core.config import SAMPLE_SERIES
    from studio.core.dataset import load_series
    from studio.workflows.batch import Selection, run_job
    from tests.support.catalogs import small_studio
    from tests.support.fakes import FakeBackend

    series = load_series(SAMPLE_SERIES)[0]
    selection = Selection(episodes={(1, 1)})
    with small_studio(
        tmp_path / "data",
        shared_cache,
        chat=FakeBackend(),
        ip_adapter=str(adapter_folder),
        reference_scale=0.8,
    ) as studio:
        assert studio.backend.capabilities.ip_adapter
        summary = run_job(series, selection, studio.settings, studio.llm, studio.images)
        assert not summary.failed
        (image,) = studio.store.images(target="episode", season=1, episode=1)
        (portrait,) = studio.store.images(target="character", style="Sherlock Holmes")
        assert image.provenance["reference"] == {
            "character": "Sherlock Holmes",
            "portrait": portrait.cache_key,
        }
        assert image.reference_scale == 0.8 and image.reference_image is not None
        assert studio.store.input_path(image.reference_image).is_file()
        again = run_job(series, selection, studio.settings, studio.llm, studio.images)
        assert (again.images_rendered, again.llm_calls) == (0, 0)  # the same key: cached
    with small_studio(tmp_path / "plain", shared_cache, chat=FakeBackend()) as plain:
        run_job(series, selection, plain.settings, plain.llm, plain.images)
        (text_only,) = plain.store.images(target="episode", season=1, episode=1)
        assert text_only.reference_image is None and "reference" not in text_only.provenance
        assert text_only.prompt == image.prompt  # the descriptors do the work without one
