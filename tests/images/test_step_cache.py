"""DeepCache-style step caching on the demo model: the deep blocks are reused between full steps
(counted), the images are deterministic and differ from uncached ones, which never share a cache
key; bad settings are refused."""

from __future__ import annotations

import numpy as np
import pytest

from studio.core.config import load_settings
from studio.core.errors import ConfigError
from studio.core.params import RenderRequest
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model


def request(seed: int = 1) -> RenderRequest:
    return RenderRequest("a lighthouse", sampler="Euler", steps=6, seed=seed, width=64, height=64)


@pytest.fixture
def model(shared_cache):
    return resolve_image_model("demo", shared_cache)


@pytest.mark.slow
def test_deep_blocks_run_every_nth_step_only(model):
    cached = Renderer(model, "cpu", step_cache=3)
    deep_calls = []
    block = cached.pipe.unet.mid_block.resnets[0]  # inside the mid block: runs only when it does
    block.register_forward_hook(lambda *_: deep_calls.append(1))  # runs when it really runs
    first = np.asarray(cached.render([request()])[0], dtype=np.int16)
    (state,) = cached._step_caches
    assert (state.calls, state.reused) == (6, 4)  # steps 1 and 4 full, the others reused
    assert len(deep_calls) == 2
    again = np.asarray(cached.render([request()])[0], dtype=np.int16)
    assert np.array_equal(first, again)  # nothing of the last call leaks into the next
    plain = Renderer(model, "cpu")
    uncached = np.asarray(plain.render([request()])[0], dtype=np.int16)
    assert not np.array_equal(first, uncached)  # it does change the pixels: a quality cost
    assert cached.cache_key(request()) != plain.cache_key(request())
    assert cached.provenance(request())["step_cache"]["interval"] == 3


def test_step_cache_settings(monkeypatch):
    monkeypatch.setenv("STUDIO_STEP_CACHE", "3")
    assert load_settings().step_cache == 3
    monkeypatch.setenv("STUDIO_STEP_CACHE", "50")
    with pytest.raises(ConfigError, match="step_cache.*2 to 10.*STUDIO_STEP_CACHE"):
        load_settings()
