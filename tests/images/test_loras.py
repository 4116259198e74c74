"""LoRA files from the LoRA folder, as `<lora:name:weight>` tags: pixels, keys by content, A1111's
`Lora hashes` in the PNG, and every file that must be refused."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

from studio import open_studio
from studio.catalog.records import record_from_png
from studio.core.errors import LoraError
from studio.core.metadata import parse_parameters, read_png_metadata
from studio.images.backends.diffusers.demo import build_demo_lora, build_demo_sdxl_model
from studio.images.backends.diffusers.renderer import Renderer, RenderRequest
from studio.images.backends.diffusers.weights import resolve_image_model
from studio.images.loras import LoraFolder

REQUEST = RenderRequest("a detective", "blurry", "Euler", 3, 7.0, 64, 64, 11)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    model = resolve_image_model("demo", tmp_path_factory.mktemp("models"))
    build_demo_lora(model, root / "holmes.safetensors", seed=1)
    build_demo_lora(model, root / "fog.safetensors", seed=2)
    sdxl_folder = build_demo_sdxl_model(tmp_path_factory.mktemp("models") / "tiny-sdxl")
    build_demo_lora(resolve_image_model(str(sdxl_folder), sdxl_folder.parent),
                    root / "lighthouse_xl.safetensors")  # fmt: skip
    save_file({"weight": np.zeros((4, 4), np.float32)}, str(root / "plain.safetensors"))
    (root / "broken.safetensors").write_bytes(b"\x00" * 12)
    return root


@pytest.fixture(scope="module")
def renderer(folder, tmp_path_factory):
    model = resolve_image_model("demo", tmp_path_factory.mktemp("models"))
    return Renderer(model, "cpu", loras=LoraFolder(folder))


def render(renderer, prompt):
    return np.asarray(renderer.render([dataclasses.replace(REQUEST, prompt=prompt)])[0], np.int16)


@pytest.mark.slow
def test_a_lora_changes_the_pixels_and_leaves_the_model_as_it_was(renderer):
    plain = render(renderer, "a detective")
    holmes = render(renderer, "a detective <lora:holmes:0.8>")
    assert (holmes != plain).any()
    assert (render(renderer, "a detective") == plain).all()  # turned off again
    assert (render(renderer, "a detective <lora:holmes:0.8>") == holmes).all()
    assert (render(renderer, "a detective <lora:holmes:0.3>") != holmes).any()  # the weight counts
    both = render(renderer, "a detective <lora:holmes:0.8> <lora:fog:0.6>")
    assert (both != holmes).any()


@pytest.mark.slow
def test_a_loras_pixels_do_not_depend_on_what_was_rendered_before(folder, tmp_path_factory):
    """The key says the pixels are the same whatever ran before: a fresh load, a second render and
    a render after another LoRA give one image (the text encoder's LoRA layers are set before
    the prompt is encoded)."""
    model = resolve_image_model("demo", tmp_path_factory.mktemp("models"))
    fresh = Renderer(model, "cpu", loras=LoraFolder(folder))
    first = render(fresh, "a detective <lora:holmes:0.8>")  # loaded by this render
    assert (render(fresh, "a detective <lora:holmes:0.8>") == first).all()
    render(fresh, "a detective <lora:fog:0.6>")
    assert (render(fresh, "a detective <lora:holmes:0.8>") == first).all()


def test_the_key_holds_each_files_hash_and_weight(renderer, folder, tmp_path):
    tagged = dataclasses.replace(REQUEST, prompt="a detective <lora:holmes:0.8>")
    key = renderer.cache_key(tagged)
    assert key != renderer.cache_key(
        dataclasses.replace(tagged, prompt="a detective <lora:holmes:0.7>")
    )
    [identity] = renderer.provenance(tagged)["loras"]
    assert identity["name"] == "holmes" and identity["weight"] == 0.8
    # the same name with other contents is another LoRA: another key
    other = tmp_path / "loras"
    other.mkdir()
    shutil.copy(folder / "fog.safetensors", other / "holmes.safetensors")
    moved = Renderer(renderer.model, "cpu", loras=LoraFolder(other))
    assert moved.cache_key(tagged) != key


@pytest.mark.slow
def test_lora_hashes_are_in_the_png_and_the_prompt_keeps_its_tags(folder, tmp_path, shared_cache):
    with open_studio(
        data_dir=tmp_path / "out", cache_dir=shared_cache, image_model="demo", steps=2,
        width=64, height=64, device="cpu", lora_dir=str(folder),
    ) as studio:  # fmt: skip
        assert "holmes" in studio.loras() and "plain" in studio.loras()
        prompt = "a (detective:1.2) <lora:holmes:0.8> <lora:fog:0.5>"
        made = studio.generate(prompt, seed=3)
        parameters, provenance = read_png_metadata(made.path.read_bytes())
        values = parse_parameters(parameters)
        assert values["Prompt"] == prompt
        hashes = {lora["name"]: lora["sha256"][:12] for lora in provenance["loras"]}
        assert values["Lora hashes"] == f"holmes: {hashes['holmes']}, fog: {hashes['fog']}"
        assert record_from_png(made.path).request == made.record.request
        assert studio.generate(prompt, seed=3).cached


@pytest.mark.slow
@pytest.mark.parametrize(
    ("tag", "message"),
    [
        ("<lora:moriarty:1>", "No LoRA named 'moriarty' in .*, the LoRA folder that lora_dir "
                              "\\(STUDIO_LORA_DIR\\) sets; there are: "
                              "broken, fog, holmes, lighthouse_xl, plain"),
        ("<lora:plain:1>", "plain.safetensors is not a LoRA: its tensors have no lora_A"),
        ("<lora:broken:1>", "broken.safetensors is not a readable safetensors LoRA"),
        ("<lora:lighthouse_xl:1>", "LoRA 'lighthouse_xl' was made for a model with 64-wide text "
                                   ".* image model 'demo' \\(sd\\) has width 32"),
    ],
)  # fmt: skip
def test_files_that_are_not_there_not_loras_or_for_another_family_are_refused(
    renderer, tag, message
):
    request = dataclasses.replace(REQUEST, prompt=f"a detective {tag}")
    if "lighthouse" not in tag:  # the family is told by the loaded unet, at render time
        with pytest.raises(LoraError, match=message):
            renderer.cache_key(request)  # before any render, as the image service asks first
    with pytest.raises(LoraError, match=message):
        renderer.render([request])
    assert render(renderer, "a detective").shape == (64, 64, 3)  # the model still works


def test_a_lora_without_a_folder_names_the_setting(renderer):
    bare = Renderer(renderer.model, "cpu")
    with pytest.raises(LoraError, match="set lora_dir \\(STUDIO_LORA_DIR\\)"):
        bare.cache_key(dataclasses.replace(REQUEST, prompt="a <lora:holmes:1>"))


@pytest.mark.slow
def test_a_closed_model_loads_its_loras_again(renderer):
    holmes = render(renderer, "a detective <lora:holmes:0.8>")
    renderer.close()
    assert (render(renderer, "a detective <lora:holmes:0.8>") == holmes).all()
