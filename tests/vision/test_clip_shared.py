"""One CLIP model per name per process: the prompt library and the CLIP checks share the copy
`open_clip` loaded, threads opening it at once wait for one load, and a failure is tried again."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from studio.core.errors import ConfigError
from studio.vision import clip as clip_module
from studio.vision.clip import build_demo_clip, open_clip
from tests.support.catalogs import small_studio


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_clip(tmp_path_factory.mktemp("clip") / "demo-clip")


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names `open_clip` really loaded (from disk) during the test."""
    made: list[str] = []
    load = clip_module._load

    def counting(name, folder):
        made.append(name)
        return load(name, folder)

    monkeypatch.setattr(clip_module, "_load", counting)
    return made


def fresh_copy(demo_folder: Path, target: Path) -> Path:
    """The demo model under a name no other test has loaded in this process."""
    shutil.copytree(demo_folder, target)
    return target


@pytest.mark.slow
def test_the_library_and_the_clip_checks_share_one_model(
    demo_folder: Path, tmp_path: Path, loads: list[str]
):
    folder = fresh_copy(demo_folder, tmp_path / "clip")
    with small_studio(tmp_path / "data", tmp_path / "cache", clip_model=str(folder)) as studio:
        library_clip = studio.library.clip
        checks_clip = studio.clip_checks.model
        assert library_clip is not None and checks_clip is library_clip
    assert loads == [str(folder)]
    # another studio in the same process gets the same copy
    with small_studio(tmp_path / "data2", tmp_path / "cache", clip_model=f" {folder} ") as other:
        assert other.library.clip is library_clip
    assert loads == [str(folder)]


def test_threads_opening_one_name_wait_for_one_load(
    demo_folder: Path, tmp_path: Path, loads: list[str]
):
    folder = str(fresh_copy(demo_folder, tmp_path / "clip"))
    start = threading.Barrier(4)
    got = []

    def opener() -> None:
        start.wait()
        got.append(open_clip(folder))

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and all(model is got[0] for model in got)
    assert loads == [folder]


def test_a_model_that_failed_to_load_is_tried_again(
    demo_folder: Path, tmp_path: Path, loads: list[str]
):
    folder = tmp_path / "clip"
    folder.mkdir()
    with pytest.raises(ConfigError, match="has no config.json"):
        open_clip(str(folder))
    shutil.copytree(demo_folder, folder, dirs_exist_ok=True)  # fixed: the next call loads it
    model = open_clip(str(folder))
    assert model.name == str(folder) and open_clip(str(folder)) is model
    assert loads == [str(folder), str(folder)]
