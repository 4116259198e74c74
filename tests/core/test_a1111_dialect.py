"""AUTOMATIC1111's dialect everywhere: seed -1, `Model hash`, samplers as A1111 1.9 writes them,
every tool's sampler names, and PNG Info for ComfyUI's and InvokeAI's PNGs."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from studio.core.config import load_settings
from studio.core.errors import ConfigError, ParameterError
from studio.core.metadata import infotext_of, parse_parameters, read_png_metadata
from studio.core.params import (
    RANDOM_SEED,
    SAMPLER_NAMES,
    SCHEDULE_TYPES,
    RenderRequest,
    a1111_sampler,
    check_value,
    draw_seed,
    request_from_infotext,
    resolve_sampler,
    resolve_seed,
)
from studio.images.service import request_parameters

SMALL = {"image_model": "demo", "steps": 2, "width": 64, "height": 64, "device": "cpu"}
BASE = RenderRequest("a lighthouse at night")


# Seeds -------------------------------------------------------------------------------------------


def test_seed_minus_one_is_drawn_and_real_seeds_stay():
    assert RANDOM_SEED == -1
    drawn = {draw_seed() for _ in range(20)}
    assert all(0 <= seed < 2**32 for seed in drawn) and len(drawn) > 1
    assert resolve_seed(7) == 7 and resolve_seed(0) == 0
    assert 0 <= resolve_seed(-1) < 2**32


def test_limits_print_as_whole_numbers_and_say_how_to_ask_for_a_random_seed():
    with pytest.raises(ParameterError) as error:
        check_value("seed", 2**32)
    assert "between 0 and 4294967295 (use -1 for a random seed)" in str(error.value)
    assert "e+09" not in str(error.value)
    with pytest.raises(ParameterError, match="has to be drawn before rendering"):
        RenderRequest("x", seed=-1).check()


def test_settings_and_the_cli_take_seed_minus_one(monkeypatch):
    from studio.cli import dataprep

    assert dataprep.build_parser().parse_args(["--seed", "-1"]).seed == -1
    assert load_settings({"seed": -1}).seed == -1
    monkeypatch.setenv("STUDIO_SEED", "-1")
    assert load_settings().seed == -1
    with pytest.raises(ConfigError) as error:
        dataprep.job_settings(dataprep.build_parser().parse_args(["--seed", "-5"]))
    message = str(error.value)
    assert "between 0 and 4294967295 (use -1 for a random seed) but is -5" in message
    assert "Set by --seed" in message


@pytest.fixture
def studio(tmp_path, shared_cache):
    from studio import open_studio

    with open_studio(data_dir=tmp_path / "out", cache_dir=shared_cache, **SMALL) as opened:
        yield opened


def test_seed_minus_one_is_drawn_in_python_and_the_png_records_the_drawn_seed(studio):
    request = studio.request("a lighthouse at night", seed=-1)
    assert 0 <= request.seed < 2**32
    made = studio.generate("a lighthouse at night", seed=-1)
    assert made.record.seed != -1 and not made.cached
    parameters, provenance = read_png_metadata(made.path.read_bytes())
    assert parse_parameters(parameters)["Seed"] == str(made.record.seed)
    assert provenance["request"]["seed"] == made.record.seed
    fixed = studio.generate("a lighthouse at night", seed=made.record.seed)  # the drawn seed
    assert fixed.cached and fixed.key == made.key  # reproduces it, from the catalog
    # the settings' seed -1, and variations: drawn once, then one apart
    variations = studio.variations(made.path, n=2, seed=-1, strength=0.5)
    seeds = [v.record.seed for v in variations]
    assert seeds[1] == (seeds[0] + 1) % 2**32


def test_a_batch_run_with_seed_minus_one_draws_one_base_seed_and_records_it(tmp_path, shared_cache):
    from studio.core.config import SAMPLE_SERIES
    from studio.core.dataset import load_series
    from studio.workflows.batch import Selection, derive_seed, run_job
    from tests.support.catalogs import small_studio

    series = load_series(SAMPLE_SERIES)[0]
    selection = Selection(episodes={(1, 1)}, targets="episodes")
    with small_studio(tmp_path / "a", shared_cache, characters="none", seed=-1) as studio:
        first = run_job(series, selection, studio.settings, studio.llm, studio.images)
        (row,) = studio.store.images(target="episode")
        _, provenance = read_png_metadata(studio.store.image_path(row).read_bytes())
    base = provenance["base_seed"]
    assert f"this run's base seed was {base}" in " ".join(first.notes)
    assert row["seed"] == derive_seed(base, series.episodes[0].id, 0)
    # The drawn seed given back makes the same image: a cache hit, no render
    with small_studio(tmp_path / "a", shared_cache, characters="none", seed=base) as studio:
        again = run_job(series, selection, studio.settings, studio.llm, studio.images)
    assert again.images_rendered == 0 and again.images_cached == 1
    assert derive_seed(42, "S01E01", 0) == derive_seed(42, "S01E01", 0)  # fixed: deterministic


# Model hash --------------------------------------------------------------------------------------


def test_the_model_hash_is_in_the_png_stable_and_not_in_the_cache_key(studio, monkeypatch):
    from studio.images.backends.diffusers import models, renderer

    made = studio.generate("a lighthouse at night", seed=3)
    fields = parse_parameters(read_png_metadata(made.path.read_bytes())[0])
    backend = studio.backend
    unet = Path(backend.model.source) / "unet" / "diffusion_pytorch_model.safetensors"
    sha = hashlib.sha256(unet.read_bytes()).hexdigest()
    assert backend.model_sha256 == sha and backend.model_hash == sha[:10]
    assert fields["Model hash"] == sha[:10] and fields["Model"] == "demo-v2 (placeholder)"
    text = read_png_metadata(made.path.read_bytes())[0]
    assert text.index("Model hash: ") < text.index("Model: ")
    models._FILE_SHA256.clear()  # as a new process: hashed again, the same
    assert backend.model_hash == sha[:10]

    def no_hashing(model):
        raise AssertionError("a cache key hashed the checkpoint")

    monkeypatch.setattr(renderer, "weights_sha256", no_hashing)
    assert backend.cache_key(made.record.request) == made.key


def test_a_single_file_checkpoint_is_hashed_once_per_process(tmp_path, monkeypatch):
    from studio.images.backends.diffusers import models
    from studio.images.backends.diffusers.models import ImageModel, weights_sha256

    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"not really weights" * 1000)
    model = ImageModel("model.safetensors", "file", str(checkpoint), "1:2")
    expected = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert weights_sha256(model) == expected
    opened = []
    real_open = Path.open
    monkeypatch.setattr(
        Path, "open", lambda self, *a, **k: opened.append(self) or real_open(self, *a, **k)
    )
    assert weights_sha256(model) == expected and opened == []  # from the process's cache
    assert (
        weights_sha256(ImageModel("gone", "file", str(tmp_path / "gone.safetensors"), "")) is None
    )
    assert models.hashed_weights(ImageModel("x", "folder", str(tmp_path), "")) is None


def test_request_parameters_write_the_hash_before_the_model_and_openai_has_none():
    from studio.images.backends.openai_images import OpenAIImagesBackend

    text = request_parameters(BASE, "my_model", model_hash="0123456789")
    assert "Model hash: 0123456789, Model: my_model" in text
    assert "Model hash" not in request_parameters(BASE, "my_model")
    assert OpenAIImagesBackend.model_hash.fget(None) is None
    assert OpenAIImagesBackend.model_sha256.fget(None) is None


# Samplers ----------------------------------------------------------------------------------------


def test_our_samplers_as_a1111_1_9_writes_them():
    assert a1111_sampler("DPM++ 2M Karras") == ("DPM++ 2M", "Karras")
    assert a1111_sampler("Euler a") == ("Euler a", "Automatic")
    assert a1111_sampler("DPM++ 2M SDE Karras") == ("DPM++ 2M SDE", "Karras")
    assert a1111_sampler("DPM++ 2M") == ("DPM++ 2M", "Normal")  # A1111's Automatic: Karras
    assert SCHEDULE_TYPES == ("Automatic", "Karras", "Normal")
    for name in SAMPLER_NAMES:  # every one of ours comes back as itself
        sampler, schedule = a1111_sampler(name)
        assert resolve_sampler(sampler, schedule) == (name, [])
    text = request_parameters(RenderRequest("x", sampler="DPM++ 2M Karras"), "m")
    assert "Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7" in text
    text = request_parameters(RenderRequest("x", sampler="Euler a"), "m")
    assert "Sampler: Euler a, Schedule type: Automatic" in text


@pytest.mark.parametrize(
    ("name", "schedule", "ours"),
    [
        ("DPM++ 2M Karras", None, "DPM++ 2M Karras"),
        ("DPM++ 2M", "Karras", "DPM++ 2M Karras"),
        ("DPM++ 2M", "Automatic", "DPM++ 2M Karras"),  # A1111 1.9's default for it
        ("DPM++ 2M", "Normal", "DPM++ 2M"),
        ("Euler a", "Automatic", "Euler a"),
        ("DPM++ 2M", None, "DPM++ 2M"),
        ("dpm++ 2m  karras", None, "DPM++ 2M Karras"),
        ("k_euler_a", None, "Euler a"),
        ("euler_a", None, "Euler a"),
        ("k_euler", None, "Euler"),
        ("k_lms", None, "LMS"),
        ("k_heun", None, "Heun"),
        ("k_dpm_2", None, "DPM2"),
        ("k_dpm_2_a", None, "DPM2 a"),
        ("k_dpmpp_2m", None, "DPM++ 2M"),
        ("dpmpp_2m_karras", None, "DPM++ 2M Karras"),
        ("k_dpmpp_2m_ka", None, "DPM++ 2M Karras"),
        ("k_dpmpp_sde", None, "DPM++ SDE"),
        ("ddim", None, "DDIM"),
        ("pndm", None, "PNDM"),
        ("plms", None, "PNDM"),
        ("unipc", None, "UniPC"),
        ("deis", None, "DEIS"),
        ("euler_ancestral", "normal", "Euler a"),  # ComfyUI
        ("dpmpp_2m", "karras", "DPM++ 2M Karras"),  # ComfyUI
        ("dpmpp_2m_sde_gpu", "karras", "DPM++ 2M SDE Karras"),  # ComfyUI
        ("dpmpp_2m_k", None, "DPM++ 2M Karras"),  # InvokeAI
        ("lms_k", None, "LMS Karras"),  # InvokeAI
    ],
)
def test_sampler_names_from_anywhere(name, schedule, ours):
    assert resolve_sampler(name, schedule) == (ours, [])


def test_a_schedule_we_do_not_have_is_said_not_dropped():
    sampler, notes = resolve_sampler("DPM++ 2M", "Exponential")
    assert sampler == "DPM++ 2M"
    assert notes == [
        "Schedule type 'Exponential' is not one of ours (Automatic, Karras, Normal); using "
        "DPM++ 2M's default"
    ]
    sampler, notes = resolve_sampler("DPM++ 2M SDE Exponential")
    assert sampler == "DPM++ 2M SDE" and "'Exponential' is not one of ours" in notes[0]
    sampler, notes = resolve_sampler("Euler", "SGM Uniform")
    assert sampler == "Euler" and "'SGM Uniform'" in notes[0]
    sampler, notes = resolve_sampler("DPM++ SDE", "Karras")
    assert sampler == "DPM++ SDE" and "no Karras schedule here" in notes[0]


def test_an_unknown_sampler_is_named_with_a_guess_and_the_choices():
    with pytest.raises(ParameterError) as error:
        resolve_sampler("Eulr")
    message = str(error.value)
    assert "Unknown sampler 'Eulr' (did you mean 'Euler'?)" in message
    assert "choose one of: Euler, Euler a" in message


def test_the_cli_and_the_settings_read_other_tools_sampler_names(monkeypatch, capsys):
    from studio.cli import dataprep

    assert dataprep.build_parser().parse_args(["--sampler", "k_euler_a"]).sampler == "Euler a"
    parsed = dataprep.build_parser().parse_args(["--sampler", "DPM++ 2M SDE Exponential"])
    assert parsed.sampler == "DPM++ 2M SDE"
    assert "Note: --sampler 'DPM++ 2M SDE Exponential': Schedule type" in capsys.readouterr().err
    monkeypatch.setenv("STUDIO_SAMPLER", "dpmpp_2m_karras")
    assert load_settings().sampler == "DPM++ 2M Karras"
    monkeypatch.setenv("STUDIO_SAMPLER", "DPM++ 2M Exponential")
    with pytest.raises(ConfigError, match="not one of ours.*Set by STUDIO_SAMPLER"):
        load_settings()


def test_an_imported_schedule_type_is_never_dropped_without_a_note():
    values = parse_parameters(
        "a castle\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Exponential, CFG scale: 7, "
        "Seed: 5, Size: 512x512"
    )
    imported = request_from_infotext(values, BASE)
    assert imported.request.sampler == "DPM++ 2M"
    assert any("Schedule type 'Exponential' is not one of ours" in n for n in imported.notes)
    values["Schedule type"] = "Karras"
    assert request_from_infotext(values, BASE).request.sampler == "DPM++ 2M Karras"
    values["Sampler"] = "Restart"
    imported = request_from_infotext(values, BASE)
    assert imported.request.sampler == BASE.sampler
    assert "Sampler 'Restart' is not one of ours; using DPM++ 2M Karras" in imported.notes


# Other tools' PNGs -------------------------------------------------------------------------------


def png_with(**chunks: str) -> Image.Image:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), "teal").save(buffer, format="PNG", pnginfo=info)
    return Image.open(io.BytesIO(buffer.getvalue()))


# ComfyUI's default workflow, as its SaveImage node writes the API graph into the `prompt` chunk.
COMFY_PROMPT = {
    "3": {
        "inputs": {
            "seed": 156680208,
            "steps": 20,
            "cfg": 8,
            "sampler_name": "dpmpp_2m",
            "scheduler": "karras",
            "denoise": 1,
            "model": ["10", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
        "class_type": "KSampler",
        "_meta": {"title": "KSampler"},
    },
    "4": {
        "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
        "class_type": "CheckpointLoaderSimple",
        "_meta": {"title": "Load Checkpoint"},
    },
    "10": {
        "inputs": {
            "lora_name": "ink.safetensors",
            "strength_model": 0.8,
            "strength_clip": 0.8,
            "model": ["4", 0],
            "clip": ["4", 1],
        },
        "class_type": "LoraLoader",
    },
    "5": {
        "inputs": {"width": 512, "height": 768, "batch_size": 1},
        "class_type": "EmptyLatentImage",
    },
    "6": {
        "inputs": {"text": "a lighthouse at night, oil painting", "clip": ["10", 1]},
        "class_type": "CLIPTextEncode",
    },
    "7": {"inputs": {"text": "text, watermark", "clip": ["10", 1]}, "class_type": "CLIPTextEncode"},
    "8": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode"},
    "9": {"inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}, "class_type": "SaveImage"},
}


def test_png_info_reads_a_comfyui_graph():
    image = png_with(prompt=json.dumps(COMFY_PROMPT), workflow=json.dumps({"nodes": []}))
    text, notes = infotext_of(image)
    values = parse_parameters(text)
    assert values["Prompt"] == "a lighthouse at night, oil painting"
    assert values["Negative prompt"] == "text, watermark"
    assert values["Steps"] == "20" and values["CFG scale"] == "8" and values["Seed"] == "156680208"
    assert (values["Sampler"], values["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert (values["Size-1"], values["Size-2"]) == ("512", "768")
    assert values["Model"] == "v1-5-pruned-emaonly.safetensors"
    assert any("ink.safetensors" in note for note in notes)  # LoRA nodes: said, not imported
    imported = request_from_infotext(values, BASE)
    imported.request.check()
    assert imported.request.sampler == "DPM++ 2M Karras" and imported.request.seed == 156680208


def test_a_comfyui_graph_with_values_we_lack_says_so():
    graph = json.loads(json.dumps(COMFY_PROMPT))
    graph["3"]["inputs"].update(
        sampler_name="euler_ancestral", scheduler="sgm_uniform", denoise=0.6
    )
    graph["3"]["class_type"] = "KSamplerAdvanced"
    graph["3"]["inputs"]["noise_seed"] = graph["3"]["inputs"].pop("seed")
    text, notes = infotext_of(png_with(prompt=json.dumps(graph)))
    values = parse_parameters(text)
    assert values["Sampler"] == "Euler a" and values["Seed"] == "156680208"
    assert values["Denoising strength"] == "0.6"
    assert any("'SGM Uniform' is not one of ours" in note for note in notes)
    graph["3"]["inputs"]["sampler_name"] = "lcm"
    text, notes = infotext_of(png_with(prompt=json.dumps(graph)))
    assert "Sampler" not in parse_parameters(text)
    assert any("'lcm' has no counterpart here" in note for note in notes)


def test_a_comfyui_ui_workflow_alone_is_read_as_a_fallback():
    sampler_inputs = [
        {"name": "positive", "link": 4},
        {"name": "negative", "link": 6},
        {"name": "latent_image", "link": 2},
        {"name": "model", "link": 1},
    ]
    workflow = {
        "nodes": [
            {
                "id": 3,
                "type": "KSampler",
                "widgets_values": [42, "fixed", 12, 6.5, "euler", "normal", 1],
                "inputs": sampler_inputs,
            },
            {"id": 4, "type": "CheckpointLoaderSimple", "widgets_values": ["dreamshaper_8"]},
            {"id": 5, "type": "EmptyLatentImage", "widgets_values": [640, 384, 1]},
            {"id": 6, "type": "CLIPTextEncode", "widgets_values": ["a red fox in snow"]},
            {"id": 7, "type": "CLIPTextEncode", "widgets_values": ["blurry"]},
        ],
        "links": [
            [1, 4, 0, 3, 0, "MODEL"],
            [2, 5, 0, 3, 3, "LATENT"],
            [4, 6, 0, 3, 1, "CONDITIONING"],
            [6, 7, 0, 3, 2, "CONDITIONING"],
        ],
    }
    text, notes = infotext_of(png_with(workflow=json.dumps(workflow)))
    values = parse_parameters(text)
    assert values["Prompt"] == "a red fox in snow" and values["Negative prompt"] == "blurry"
    assert values["Steps"] == "12" and values["CFG scale"] == "6.5" and values["Seed"] == "42"
    assert values["Sampler"] == "Euler" and values["Size-1"] == "640"
    assert values["Model"] == "dreamshaper_8"
    assert "UI workflow" in notes[0]


# InvokeAI 4.x's `invokeai_metadata` chunk, as it writes it.
INVOKEAI = {
    "generation_mode": "txt2img",
    "positive_prompt": "a lighthouse at night, oil painting",
    "negative_prompt": "blurry",
    "width": 768,
    "height": 512,
    "seed": 3371549245,
    "rand_device": "cpu",
    "cfg_scale": 6.5,
    "cfg_rescale_multiplier": 0,
    "steps": 30,
    "scheduler": "dpmpp_2m_k",
    "clip_skip": 0,
    "model": {
        "key": "0a2b1c1e-5c1d-4d8e-9d0f-3f0e6b1f2a3c",
        "hash": "blake3:8c9d7f6e5a4b3c2d1e0f",
        "name": "stable-diffusion-v1-5",
        "base": "sd-1",
        "type": "main",
    },
    "loras": [],
    "app_version": "4.2.4",
}


def test_png_info_reads_invokeai_metadata():
    text, notes = infotext_of(png_with(invokeai_metadata=json.dumps(INVOKEAI)))
    values = parse_parameters(text)
    assert values["Prompt"] == "a lighthouse at night, oil painting"
    assert values["Negative prompt"] == "blurry"
    assert values["Steps"] == "30" and values["CFG scale"] == "6.5"
    assert values["Seed"] == "3371549245" and (values["Size-1"], values["Size-2"]) == ("768", "512")
    assert (values["Sampler"], values["Schedule type"]) == ("DPM++ 2M", "Karras")
    assert values["Model"] == "stable-diffusion-v1-5" and notes == []
    imported = request_from_infotext(values, BASE)
    assert imported.request.sampler == "DPM++ 2M Karras" and imported.request.seed == 3371549245
    odd = {**INVOKEAI, "scheduler": "euler_k", "clip_skip": 2, "generation_mode": "img2img"}
    _, notes = infotext_of(png_with(invokeai_metadata=json.dumps(odd)))
    assert any("Euler has no Karras schedule here" in note for note in notes)
    assert any("CLIP skip 2" in note for note in notes)
    assert any("img2img" in note for note in notes)


def test_our_own_parameters_come_first_and_a_bare_png_has_none():
    ours = "a castle\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512"
    image = png_with(parameters=ours, prompt=json.dumps(COMFY_PROMPT))
    assert infotext_of(image) == (ours, [])
    assert infotext_of(png_with()) == (None, [])
    assert infotext_of(png_with(prompt="not json")) == (None, [])


def test_the_api_reads_the_prompt_of_a_comfyui_png(tmp_path):
    from studio.api import _prompt_inside

    path = tmp_path / "comfy.png"
    png_with(prompt=json.dumps(COMFY_PROMPT)).save(
        path, pnginfo=_info(prompt=json.dumps(COMFY_PROMPT))
    )
    assert _prompt_inside(path) == "a lighthouse at night, oil painting"


def _info(**chunks: str) -> PngInfo:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    return info
