"""The fast path on the CPU with the demo model: its output equals the eager path's within a
tolerance; compiled graphs are not recompiled for a second batch of the same bucket (counted by a
compile backend that counts); batches are padded to buckets and the padding's images dropped; a
shape past the budget runs eager; the compile runs in the background while the render worker
serves eagerly, and the PNG says which path made each image; a failed compile stays eager;
regional compilation compiles the repeated blocks only; a second process reuses the compile
cache; the settings and their errors; the TAESD preview; a LoRA loaded or reweighted, or another
IP-Adapter scale, is served eager and compiled in the background, never in line, even when the
weight changed again before its compile ran."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch
from diffusers import AutoencoderTiny
from PIL import Image

from studio.catalog.store import Store
from studio.core.config import load_settings
from studio.core.errors import ConfigError, RenderError
from studio.core.params import RenderRequest
from studio.images.backends.diffusers.fast_path import FastPath, fast_path_for
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model, resolve_preview_vae
from studio.images.backends.registry import open_image_backend
from studio.images.service import ImageService, ImageTask
from studio.images.worker import RenderWorker

pytestmark = pytest.mark.compile

TOLERANCE = 3  # levels of 255: the fast path's kernels round differently, nothing more


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them as traced."""

    __name__ = "counting"

    def __init__(self):
        self.compilations = 0
        self.nodes = 0  # operations in the graphs compiled: what inductor would have to compile
        self.threads: set[str] = set()
        self.dynamic = 0  # graphs with symbolic (dynamic) sizes

    def __call__(self, graph, example_inputs):
        self.compilations += 1
        self.nodes += len(graph.graph.nodes)
        self.threads.add(threading.current_thread().name)
        sizes = [s for x in example_inputs if isinstance(x, torch.Tensor) for s in x.shape]
        sizes += [x for x in example_inputs if isinstance(x, torch.SymInt)]
        self.dynamic += any(isinstance(size, torch.SymInt) for size in sizes)
        return graph.forward


class HeldBackend(CountingBackend):
    """A compile backend that holds every compile until `release` is set (a slow compiler);
    `entered` says a compile has reached it (its graph is traced by then)."""

    __name__ = "held"

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def __call__(self, graph, example_inputs):
        self.entered.set()
        assert self.release.wait(60), "the test never released the compile"
        return super().__call__(graph, example_inputs)


class FailingBackend:
    __name__ = "failing"

    def __call__(self, graph, example_inputs):
        raise RuntimeError("out of resource: Required 262144, Hardware limit 232448")


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
    path = FastPath(compile_backend=counting, background=False)  # compiled in line
    return Renderer(
        model, "cpu", 4, batch_on_cpu=True, fast_path=path, compile_cache=tmp_path / "inductor"
    )


def test_fast_path_equals_eager_within_tolerance(model, fast):
    eager = Renderer(model, "cpu", 4, batch_on_cpu=True)
    batch = requests(3)
    quick, slow = pixels(fast.render(batch)), pixels(eager.render(batch))
    assert np.abs(quick - slow).max() <= TOLERANCE
    assert fast.fast_info["fused_qkv"] and "channels_last" not in fast.fast_info
    assert fast.fast_info["compiled"]["unet"] == "whole"
    assert fast.fast_info["compiled"]["mode"] == "default"
    assert fast.cache_key(batch[0]) == eager.cache_key(batch[0])  # same keys
    assert fast.provenance(batch[0])["fast_path"]["compiled"]["backend"] == "counting"


def test_no_recompile_for_a_second_batch_of_the_same_bucket(fast, counting):
    fast.render(requests(3))  # padded to 4
    compiled = counting.compilations
    assert compiled > 0
    with torch.compiler.set_stance("fail_on_recompile"):  # would raise on any recompile
        fast.render(requests(4)[::-1])  # the same bucket, other prompts and seeds
    assert counting.compilations == compiled


def test_the_whole_unet_gets_a_static_graph_per_bucket(fast, counting):
    for count in (1, 2, 4):  # torch alone would make the second bucket's graph dynamic
        fast.render(requests(count))
    assert (counting.compilations, counting.dynamic) == (3, 0)
    assert fast.fast_info["compiled"]["shapes"] == "static"


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
    path = FastPath(compile_backend=counting, max_shapes=1, background=False)
    fast = Renderer(model, "cpu", 1, fast_path=path, compile_cache=tmp_path)
    assert fast.render(requests(1, size=64))[0].info["render_path"] == "compiled"
    compiled = counting.compilations
    with torch.compiler.set_stance("fail_on_recompile"):
        second = fast.render(requests(1, size=128))  # a second size: eager, no compile
    assert second[0].info["render_path"] == "eager"
    assert counting.compilations == compiled
    assert path.compile_report()["compiled_shapes"] == 1


def test_the_worker_serves_eagerly_while_the_compile_runs_in_the_background(model, tmp_path):
    held = HeldBackend()
    path = FastPath(compile_backend=held)  # background, the product's default
    renderer = Renderer(model, "cpu", 1, fast_path=path, compile_cache=tmp_path / "inductor")
    eager = Renderer(model, "cpu", 1)
    worker = RenderWorker(renderer)
    service = ImageService(Store(tmp_path / "data"), worker)
    try:
        first = service.make_one(ImageTask(requests(1)[0]))  # served while the compile is held
        assert first.record.provenance["render_path"] == "eager"
        assert held.compilations == 0 and path.compile_report()["pending"] == 1
        held.release.set()
        assert path.wait_compiled(60)
        assert held.threads == {"studio-compiler"}  # never the worker's thread
        second = service.make_one(ImageTask(requests(2)[1]))
        assert second.record.provenance["render_path"] == "compiled"
        reference = eager.render(requests(2))
        made = pixels([Image.open(first.path), Image.open(second.path)])
        assert np.abs(made[0] - pixels(reference[:1])[0]).max() == 0  # the eager path exactly
        assert np.abs(made[1] - pixels(reference[1:])[0]).max() <= TOLERANCE
    finally:
        held.release.set()
        worker.close()
        service.store.close()


def test_a_shape_whose_compile_fails_stays_eager_and_renders(model, tmp_path):
    path = FastPath(compile_backend=FailingBackend())
    renderer = Renderer(model, "cpu", 1, fast_path=path, compile_cache=tmp_path)
    assert renderer.render(requests(1))[0].info["render_path"] == "eager"
    assert path.wait_compiled(60)
    again = renderer.render(requests(1))  # no second try, no error
    assert again[0].info["render_path"] == "eager"
    report = path.compile_report()
    assert report["compiled_shapes"] == 0 and "out of resource" in report["failed"][0]


def test_regional_compilation_compiles_only_the_repeated_blocks(model, tmp_path):
    whole, regional = CountingBackend(), CountingBackend()
    for backend, scope in ((whole, "whole"), (regional, "regional")):
        torch.compiler.reset()
        path = FastPath(compile_backend=backend, compile_scope=scope, background=False)
        renderer = Renderer(model, "cpu", 1, fast_path=path, compile_cache=tmp_path)
        renderer.render(requests(1))
        gated = {gate.name for gate in path.gates}
        assert gated == ({"UNet2DConditionModel"} if scope == "whole"
                         else {"BasicTransformerBlock"})  # fmt: skip
        assert renderer.fast_info["compiled"]["unet"] == scope
    assert 0 < regional.nodes < whole.nodes / 3  # a fraction of the graph to compile


CACHE_PROBE = """
import sys, time
from pathlib import Path
from studio.core.params import RenderRequest
from studio.images.backends.diffusers.fast_path import FastPath
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model
model = resolve_image_model("demo", Path(sys.argv[1]))
path = FastPath(compile_scope="regional", background=False)
renderer = Renderer(model, "cpu", 1, fast_path=path, compile_cache=Path(sys.argv[2]))
image = renderer.render([RenderRequest("a lighthouse", steps=2, seed=1, width=64, height=64)])[0]
print(image.info["render_path"], renderer.fast_info["compile_cache"])
"""


@pytest.mark.slow
def test_a_second_process_reuses_the_compile_cache(shared_cache, tmp_path):
    """Inductor for real, in two processes: the first compiles and writes its kernels to the
    studio's compile cache; the second finds every graph there and writes none."""
    cache = tmp_path / "inductor"
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}

    def run() -> tuple[str, set]:
        done = subprocess.run(
            [sys.executable, "-c", CACHE_PROBE, str(shared_cache), str(cache)],
            capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout, {p for p in (cache / "fxgraph").rglob("*") if p.is_file()}

    first_out, first = run()
    assert first_out.split() == ["compiled", str(cache)]
    assert first  # compiled graphs written to the studio's cache, not /tmp
    second_out, second = run()
    assert second_out.split()[0] == "compiled"
    assert second == first  # nothing compiled again: every graph came from the cache


def test_the_settings_turn_it_on_off_and_auto_is_cuda_only(shared_cache, monkeypatch):
    def fast_path(**values):
        return fast_path_for(load_settings(values), values.pop("device", "cpu"))

    assert fast_path_for(load_settings({"fast_path": "auto"}), "cpu") is None
    assert fast_path_for(load_settings({"fast_path": "auto"}), "cuda") is not None
    assert fast_path_for(load_settings({"fast_path": "off"}), "cuda") is None
    on = fast_path_for(load_settings({"fast_path": "on"}), "cpu")
    assert on is not None and on.compile_mode == "default" and on.compile_scope == "whole"
    assert on.background and not on.fp8 and not on.channels_last
    chosen = fast_path_for(
        load_settings({"compile_mode": "max-autotune", "compile_scope": "regional"}), "cuda"
    )
    assert chosen.compile_mode == "max-autotune" and chosen.compile_scope == "regional"
    monkeypatch.setenv("STUDIO_IMAGE_MODEL", "demo")
    monkeypatch.setenv("STUDIO_FAST_PATH", "on")
    backend = open_image_backend(load_settings({"device": "cpu"}))
    assert backend.fast_path is not None and backend.compile_cache == shared_cache / "inductor"
    monkeypatch.setenv("STUDIO_FAST_PATH", "fast")
    with pytest.raises(ConfigError, match="fast_path.*auto, on, off.*STUDIO_FAST_PATH"):
        load_settings()
    monkeypatch.setenv("STUDIO_FAST_PATH", "on")
    monkeypatch.setenv("STUDIO_COMPILE_MODE", "turbo")
    with pytest.raises(ConfigError, match="compile_mode.*default, reduce-overhead.*"
                       "STUDIO_COMPILE_MODE"):  # fmt: skip
        load_settings()
    monkeypatch.delenv("STUDIO_COMPILE_MODE")
    monkeypatch.setenv("STUDIO_COMPILE_SCOPE", "blocks")
    with pytest.raises(ConfigError, match="compile_scope.*whole, regional.*STUDIO_COMPILE_SCOPE"):
        load_settings()
    monkeypatch.delenv("STUDIO_COMPILE_SCOPE")
    monkeypatch.setenv("STUDIO_FP8", "yes")
    with pytest.raises(ConfigError, match="fp8.*off, on.*STUDIO_FP8"):
        load_settings()


def test_fp8_on_a_machine_without_float8_says_why(model, monkeypatch, tmp_path):
    monkeypatch.setenv("STUDIO_IMAGE_MODEL", "demo")
    monkeypatch.setenv("STUDIO_FAST_PATH", "on")
    monkeypatch.setenv("STUDIO_FP8", "on")
    backend = open_image_backend(load_settings({"device": "cpu", "cache_dir": tmp_path}))
    assert backend.fast_path.fp8
    with pytest.raises(ConfigError, match=r"fp8 \(STUDIO_FP8\) is on.*8\.9.*CPU.*off"):
        backend.render(requests(1))


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


def with_a_lora(model, tmp_path) -> tuple[HeldBackend, FastPath, Renderer, Renderer]:
    """A held compile backend, and a fast and an eager renderer with the demo LoRA `fog`."""
    from studio.images.backends.diffusers.demo import build_demo_lora
    from studio.images.loras import LoraFolder

    build_demo_lora(model, tmp_path / "loras" / "fog.safetensors", seed=2)
    loras = LoraFolder(tmp_path / "loras")
    held = HeldBackend()
    path = FastPath(compile_backend=held)
    fast = Renderer(model, "cpu", 1, fast_path=path, compile_cache=tmp_path / "inductor",
                    loras=loras)  # fmt: skip
    return held, path, fast, Renderer(model, "cpu", 1, loras=loras)


def test_a_lora_loaded_or_reweighted_is_served_eager_then_compiled_with_its_layers(model, tmp_path):
    held, path, fast, eager = with_a_lora(model, tmp_path)
    plain = requests(1)[0]
    fogged = RenderRequest(f"{plain.prompt} <lora:fog:0.9>", steps=3, seed=0, width=64, height=64)
    held.release.set()
    fast.render([plain])
    assert path.wait_compiled(60)
    assert fast.render([plain])[0].info["render_path"] == "compiled"

    held.release = threading.Event()  # the next compile is slow
    try:
        first = fast.render([fogged])[0]  # new layers: the old graph is not used
        assert first.info["render_path"] == "eager"
        assert "fused_qkv" not in fast.fast_info  # fused projections would bypass its layers
        reference = pixels(eager.render([fogged]))
        assert np.abs(pixels([first]) - reference).max() <= TOLERANCE  # the LoRA is applied
        assert np.abs(reference - pixels(eager.render([plain]))).max() > 10 * TOLERANCE
        held.release.set()
        assert path.wait_compiled(60)
        second = fast.render([fogged])[0]
        assert second.info["render_path"] == "compiled"
        assert np.abs(pixels([second]) - reference).max() <= TOLERANCE

        held.release = threading.Event()  # another weight: compiled beside, never in line
        lighter = dataclasses.replace(fogged, prompt=f"{plain.prompt} <lora:fog:0.4>")
        assert fast.render([lighter])[0].info["render_path"] == "eager"
        held.release.set()
        assert path.wait_compiled(60)
        third = fast.render([lighter])[0]
        assert third.info["render_path"] == "compiled"
        assert np.abs(pixels([third]) - pixels(eager.render([lighter]))).max() <= TOLERANCE
        assert fast.render([fogged])[0].info["render_path"] == "compiled"  # both kept
        assert held.threads == {"studio-compiler"}
    finally:
        held.release.set()


def test_another_reference_scale_is_compiled_beside_never_in_line(model, shared_cache, tmp_path):
    from studio.core.hub import SD
    from studio.images.backends.diffusers.adapters import resolve_ip_adapter
    from studio.images.backends.diffusers.demo import build_demo_ip_adapter
    from tests.images.test_ip_adapter import WITH_FACE, inputs

    adapter = resolve_ip_adapter(str(build_demo_ip_adapter(shared_cache / "ip-adapter-demo")), SD)
    held = HeldBackend()
    path = FastPath(compile_backend=held)
    fast = Renderer(model, "cpu", 1, fast_path=path, compile_cache=tmp_path, ip_adapter=adapter)
    eager = Renderer(model, "cpu", 1, ip_adapter=adapter)
    held.release.set()
    fast.render([WITH_FACE], inputs=inputs)
    assert path.wait_compiled(60)
    assert fast.render([WITH_FACE], inputs=inputs)[0].info["render_path"] == "compiled"
    held.release = threading.Event()
    try:
        weaker = dataclasses.replace(WITH_FACE, reference_scale=0.3)
        assert fast.render([weaker], inputs=inputs)[0].info["render_path"] == "eager"
        held.release.set()
        assert path.wait_compiled(60)
        made = fast.render([weaker], inputs=inputs)[0]
        assert made.info["render_path"] == "compiled"
        assert np.abs(pixels([made]) - pixels(eager.render([weaker], inputs=inputs))).max() <= 3
        assert held.threads == {"studio-compiler"}
    finally:
        held.release.set()


def test_a_weight_changed_before_its_compile_starts_is_compiled_again_never_in_line(
    model, tmp_path
):
    """A background compile traces the module as it is when the compile runs. A compile queued
    for one LoRA weight while the worker has since moved to another would trace the other one
    and mark its own weight ready; that weight's next call would recompile in the worker's
    thread. The compile is dropped instead and asked for again by the next call."""
    traced, path, fast, eager = with_a_lora(model, tmp_path)
    plain = requests(1)[0]
    heavy = RenderRequest(f"{plain.prompt} <lora:fog:0.9>", steps=3, seed=0, width=64, height=64)
    light = dataclasses.replace(heavy, prompt=f"{plain.prompt} <lora:fog:0.4>")
    try:
        assert fast.render([heavy])[0].info["render_path"] == "eager"  # 0.9 compiles...
        assert traced.entered.wait(60)  # ...traced at 0.9, held in the backend
        assert fast.render([light])[0].info["render_path"] == "eager"  # 0.4 queued behind it
        assert fast.render([heavy])[0].info["render_path"] == "eager"  # the module is at 0.9
        traced.release.set()
        assert path.wait_compiled(60)  # 0.4's compile found the module at 0.9: dropped
        assert fast.render([heavy])[0].info["render_path"] == "compiled"
        again = fast.render([light])[0].info["render_path"]
        assert again in ("eager", "eager, then compiled")  # asked for again, in the background
        assert path.wait_compiled(60)
        made = fast.render([light])[0]
        assert made.info["render_path"] == "compiled"
        assert np.abs(pixels([made]) - pixels(eager.render([light]))).max() <= TOLERANCE
        assert traced.threads == {"studio-compiler"}  # never the worker's thread
    finally:
        traced.release.set()
