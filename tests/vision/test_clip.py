"""CLIP embeddings (studio.clip) on the tiny demo model, loaded through the real loading code."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.core.errors import ConfigError
from studio.vision.clip import ClipModel, build_demo_clip, open_clip


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_clip(tmp_path_factory.mktemp("clip") / "demo-clip")


@pytest.fixture(scope="module")
def clip(demo_folder: Path) -> ClipModel:
    return open_clip(str(demo_folder))


def gradient(size: int = 64) -> Image.Image:
    ramp = np.linspace(0, 255, size)
    red, blue = np.tile(ramp, (size, 1)), np.tile(ramp[::-1], (size, 1))
    return Image.fromarray(np.stack([red, np.zeros_like(red), blue], -1).astype(np.uint8))


def checkerboard_noise(size: int = 64) -> Image.Image:
    cells = np.random.default_rng(0).integers(0, 2, (8, 8, 3)) * 255
    block = size // 8
    return Image.fromarray(cells.astype(np.uint8).repeat(block, 0).repeat(block, 1))


def test_texts_and_images_are_unit_rows_in_one_space(clip: ClipModel, demo_folder: Path):
    texts = clip.texts(["a lighthouse at dusk", "two cats", ""])
    images = clip.images([gradient(), checkerboard_noise()])
    assert clip.name == str(demo_folder)
    assert clip.dim == 16
    assert texts.shape == (3, 16) and images.shape == (2, 16)
    assert texts.dtype == images.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    assert clip.texts([]).shape == clip.images([]).shape == (0, 16)


def test_same_input_gives_the_same_vectors(clip: ClipModel, demo_folder: Path):
    again = open_clip(str(demo_folder))
    np.testing.assert_array_equal(clip.texts(["a red door"]), again.texts(["a red door"]))
    np.testing.assert_array_equal(clip.images([gradient()]), again.images([gradient()]))
    # a row does not depend on the batch it is in (padding is masked)
    alone = clip.texts(["a red door"])
    batched = clip.texts(["a red door", "a much longer prompt about a lighthouse at dusk"])
    np.testing.assert_allclose(batched[:1], alone, atol=1e-5)


def test_a_resized_copy_is_closer_than_another_image(clip: ClipModel):
    original, resized, other = clip.images(
        [gradient(64), gradient(64).resize((48, 48)), checkerboard_noise(64)]
    )
    assert original @ resized > 0.999
    assert original @ resized > original @ other + 0.05


def test_images_of_any_mode_are_read_as_rgb(clip: ClipModel):
    rgb = gradient()
    rgba, grey = rgb.convert("RGBA"), rgb.convert("L")
    grey16 = Image.fromarray(np.asarray(grey).astype(np.uint16) * 257)  # 16-bit, same picture
    vectors = clip.images([rgb, rgba, grey, grey16])
    np.testing.assert_allclose(vectors[1], vectors[0], atol=1e-6)
    np.testing.assert_allclose(vectors[2], clip.images([grey.convert("RGB")])[0], atol=1e-6)
    np.testing.assert_allclose(vectors[3], vectors[2], atol=1e-4)


def test_texts_past_77_tokens_are_cut(clip: ClipModel):
    # 75 words + start and end tokens fill CLIP's window; what comes after is dropped
    window = "word " * 75
    long, longer, full = clip.texts([window + "a lighthouse " * 40, window * 3, window])
    np.testing.assert_allclose(long, full, atol=1e-5)
    np.testing.assert_allclose(longer, full, atol=1e-5)
    assert clip.texts([window[:-20]])[0] @ full < 0.9999  # the last words do count


def test_a_string_is_not_a_list_of_texts(clip: ClipModel):
    with pytest.raises(TypeError):
        clip.texts("a lighthouse")


def test_threads_share_one_model_one_call_at_a_time(
    clip: ClipModel, monkeypatch: pytest.MonkeyPatch
):
    prompts = [f"prompt number {index}" for index in range(8)]
    expected = clip.texts(prompts)
    forward = clip._model.get_text_features
    running, overlaps = [], []

    def get_text_features(**inputs):
        running.append(1)
        overlaps.append(len(running))
        time.sleep(0.01)  # long enough for another thread to come in if nothing stops it
        try:
            return forward(**inputs)
        finally:
            running.pop()

    monkeypatch.setattr(clip._model, "get_text_features", get_text_features)
    results: dict[int, np.ndarray] = {}

    def embed(index: int) -> None:
        results[index] = clip.texts(prompts)

    threads = [threading.Thread(target=embed, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and max(overlaps) == 1
    for vectors in results.values():
        np.testing.assert_allclose(vectors, expected, atol=1e-6)


def break_folder(demo_folder: Path, target: Path, how: str) -> Path:
    shutil.copytree(demo_folder, target)
    config = json.loads((target / "config.json").read_text())
    if how == "garbage config":
        (target / "config.json").write_text("{not json")
    elif how == "other model":
        (target / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    elif how == "pickled weights only":
        (target / "model.safetensors").rename(target / "pytorch_model.bin")
    elif how == "missing weights":
        from safetensors.torch import load_file, save_file

        tensors = load_file(target / "model.safetensors")
        del tensors["text_projection.weight"]
        save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.mark.parametrize(
    ("how", "cause"),
    [
        ("empty folder", "has no config.json"),
        ("garbage config", "is not a JSON object"),
        ("other model", "'bert' model"),
        ("pickled weights only", "could not be loaded (OSError"),
        ("missing weights", "text_projection.weight"),
    ],
)
def test_a_folder_that_is_no_clip_model_is_refused(
    demo_folder: Path, tmp_path: Path, how: str, cause: str
):
    folder = tmp_path / "not-clip"
    if how == "empty folder":
        folder.mkdir()
    else:
        break_folder(demo_folder, folder, how)
    with pytest.raises(ConfigError) as error:
        open_clip(str(folder))
    message = str(error.value)
    assert "clip_model (STUDIO_CLIP_MODEL)" in message
    assert repr(str(folder)) in message
    assert cause in message


@pytest.mark.parametrize("name", ["", "  ", "./no/such/folder", "no-such-thing"])
def test_a_name_that_is_neither_folder_nor_hub_id_is_refused(name: str):
    with pytest.raises(ConfigError, match=r"STUDIO_CLIP_MODEL"):
        open_clip(name)


def no_network(*args, **kwargs):
    raise AssertionError("open_clip tried to reach the network")


def test_an_unknown_hub_id_offline_fails_fast_without_network(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        open_clip("studio-tests/no-such-clip")
    assert time.monotonic() - started < 10
    message = str(error.value)
    assert "clip_model (STUDIO_CLIP_MODEL)" in message
    assert "'studio-tests/no-such-clip'" in message
    assert "not in the Hugging Face cache" in message


def test_a_cached_hub_id_loads_offline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, demo_folder: Path, clip: ClipModel
):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--studio-tests--tiny-clip"
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(demo_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", no_network)

    hub = open_clip("studio-tests/tiny-clip")
    assert hub.name == "studio-tests/tiny-clip"
    np.testing.assert_array_equal(hub.texts(["a red door"]), clip.texts(["a red door"]))
