"""The fast path on the CPU with the demo model: its output equals the eager path's within a
tolerance; compiled graphs are not recompiled for a second batch of the same bucket (counted by a
compile backend that counts); batches are padded to buckets and the padding's images dropped; a
size outside the buckets runs eager; the setting and its errors; the TAESD preview."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny

from studio.core.config import load_settings
from studio.core.errors import ConfigError, RenderError
from studio.core.params import RenderRequest
from studio.images.backends.diffusers.fast_path import FastPath, fast_path_for
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model, resolve_preview_vae
from studio.images.backends.registry import open_image_backend

pytestmark = pytest.mark.compile

TOLERANCE = 3  # levels of 255: the fast path's kernels round differently, nothing more


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them as traced."""

    __name__ = "counting"

    def __init__(self):
        self.compilations = 0

    def __call__(self, graph, example_inputs):
        self.compilations += 1
        return graph.forward


def requests(count: int, size: int = 64, steps: int = 3) -> list[RenderRequest]:
    return [
        RenderRequest(f"a lighthouse {i}", steps=steps, seed=i, width=size, height=size)
        for i in range(count)
    ]


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in images])


@pytest.fixture(autouse=True)
def fresh_compiler():
    """Each test compiles from scratch: dynamo's caches are per process."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


@pytest.fixture
def model(shared_cache):
    return resolve_image_model("demo", shared_cache)


@pytest.fixture
def counting() -> CountingBackend:
    return CountingBackend()


@pytest.fixture
def fast(model, counting, tmp_path) -> Renderer:
    path = FastPath(compile_backend=counting)
    return Renderer(
        model, "cpu", 4, batch_on_cpu=True, fast_path=path, compile_cache=tmp_path / "inductor"
    )


def test_fast_path_equals_eager_within_tolerance(model, fast):
    eager = Renderer(model, "cpu", 4, batch_on_cpu=True)
    batch = requests(3)
    quick, slow = pixels(fast.render(batch)), pixels(eager.render(batch))
    assert np.abs(quick - slow).max() <= TOLERANCE
    assert fast.fast_info["channels_last"] and fast.fast_info["fused_qkv"]
    assert fast.fast_info["compiled"]["unet"]
    assert fast.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert fast.cache_key(batch[0]) == eager.cache_key(batch[0])  # same keys
    assert fast.provenance(batch[0])["fast_path"]["compiled"]["backend"] == "counting"


def test_no_recompile_for_a_second_batch_of_the_same_bucket(fast, counting):
    fast.render(requests(3))  # padded to 4
    compiled = counting.compilations
    assert compiled > 0
    with torch.compiler.set_stance("fail_on_recompile"):  # would raise on any recompile
        fast.render(requests(4)[::-1])  # the same bucket, other prompts and seeds
    assert counting.compilations == compiled


def test_batches_are_padded_to_buckets_and_the_padding_dropped(fast, monkeypatch):
    pipe_sizes = []
    real = fast.mode_pipeline

    def spy(mode, sampler, *control):
        pipe = real(mode, sampler, *control)
        call = pipe.__call__

        class Spy:
            def __getattr__(self, name):
                return getattr(pipe, name)

            def __call__(self, **arguments):
                pipe_sizes.append(len(arguments["prompt"]))
                return call(**arguments)

        return Spy()

    monkeypatch.setattr(fast, "mode_pipeline", spy)
    assert len(fast.render(requests(3))) == 3
    assert pipe_sizes == [4]
    assert [fast.fast_path.padded(n) for n in (1, 2, 3, 5, 9, 17, 33)] == [1, 2, 4, 8, 16, 32, 33]


def test_a_shape_past_the_budget_runs_eager_without_compiling(model, counting, tmp_path):
    path = FastPath(compile_backend=counting, max_shapes=1)
    fast = Renderer(model, "cpu", 1, fast_path=path, compile_cache=tmp_path)
    fast.render(requests(1, size=64))
    compiled = counting.compilations
    with torch.compiler.set_stance("fail_on_recompile"):
        fast.render(requests(1, size=128))  # a second size: eager, no compile
    assert counting.compilations == compiled
    assert path.compiled_shapes == [(1, 64, 64)]


def test_the_setting_turns_it_on_off_and_auto_is_cuda_only(shared_cache, monkeypatch):
    assert fast_path_for("auto", "cpu") is None
    assert fast_path_for("auto", "cuda") is not None
    assert fast_path_for("off", "cuda") is None
    assert fast_path_for("on", "cpu") is not None
    monkeypatch.setenv("STUDIO_IMAGE_MODEL", "demo")
    monkeypatch.setenv("STUDIO_FAST_PATH", "on")
    backend = open_image_backend(load_settings({"device": "cpu"}))
    assert backend.fast_path is not None and backend.compile_cache == shared_cache / "inductor"
    monkeypatch.setenv("STUDIO_FAST_PATH", "fast")
    with pytest.raises(ConfigError, match="fast_path.*auto, on, off.*STUDIO_FAST_PATH"):
        load_settings()


def build_tiny_taesd(folder):
    """A tiny untrained AutoencoderTiny (TAESD's architecture) with 4 latent channels."""
    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        num_encoder_blocks=(1, 1, 1, 1),
        num_decoder_blocks=(1, 1, 1, 1),
        latent_channels=4,
    ).save_pretrained(folder, safe_serialization=True)
    return folder


def test_the_preview_vae_decodes_the_live_preview(model, tmp_path):
    folder = build_tiny_taesd(tmp_path / "taesd")
    renderer = Renderer(model, "cpu", preview_vae=resolve_preview_vae(str(folder), tmp_path))
    previews = []

    def on_step(step, total, latents):
        previews.append(renderer.preview_image(latents))

    renderer.render(requests(1, size=64, steps=2), on_step=on_step)
    assert [p.size for p in previews] == [(64, 64), (64, 64)]  # full size, not 8x8 blown up
    plain = Renderer(model, "cpu")
    assert plain.preview_image(torch.zeros(1, 4, 8, 8)).size == (64, 64)  # latent-to-RGB


def test_a_preview_vae_that_is_not_one_is_refused(tmp_path):
    with pytest.raises(RenderError, match="STUDIO_PREVIEW_VAE.*does not exist"):
        resolve_preview_vae(str(tmp_path / "nowhere"), tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RenderError, match="no config.json"):
        resolve_preview_vae(str(tmp_path / "empty"), tmp_path)
