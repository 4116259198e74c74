"""The Ray executor on a local Ray cluster (`ray.init(num_cpus=2)`) with the demo model: the same
catalog as the local executor, a killed worker that loses nothing, and clear errors."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studio.catalog.store import Store
from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import load_series
from studio.core.errors import ConfigError
from studio.images.backends.registry import open_image_backend
from studio.workflows.batch import Selection, run_job
from tests.support.catalogs import small_studio

pytestmark = pytest.mark.ray

TESTS = Path(__file__).resolve().parents[1]
FIRST_EPISODES = Selection(episodes={(1, 1), (1, 2), (1, 3)}, targets="episodes")


def ray_or_skip():
    if os.environ.get("STUDIO_REQUIRE_RAY"):
        import ray  # noqa: F401 - CI installs requirements-ray.txt: fail, don't skip
    return pytest.importorskip("ray", reason="Ray is optional: pip install -r requirements-ray.txt")


@pytest.fixture(scope="module")
def ray_cluster():
    ray = ray_or_skip()
    from studio.images.ray_executor import STUDIO_PACKAGE

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "py_modules": [str(STUDIO_PACKAGE), str(TESTS)],
            "env_vars": {"HF_HUB_OFFLINE": "1"},
        },
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def series():
    return load_series(SAMPLE_SERIES)[0]


def catalog(folder: Path) -> dict[str, np.ndarray]:
    """cache key -> pixels, for every image of a catalog (and no key twice)."""
    store = Store(folder)
    try:
        rows = store.images()
        keys = [row.cache_key for row in rows]
        assert len(keys) == len(set(keys))
        found = {}
        for row in rows:
            with Image.open(store.image_path(row)) as image:
                found[row.cache_key] = np.asarray(image.convert("RGB"))
        return found
    finally:
        store.close()


def run(folder, cache, series, selection=FIRST_EPISODES, executor=None, **overrides):
    with small_studio(folder, cache, characters="none", **overrides) as studio:
        return run_job(
            series, selection, studio.settings, studio.llm, studio.images, executor=executor
        )


def test_the_ray_catalog_equals_the_local_one(tmp_path, shared_cache, series, ray_cluster):
    from studio.images.ray_executor import RayExecutor

    local = run(tmp_path / "local", shared_cache, series)
    with small_studio(tmp_path / "ray", shared_cache, executor="ray") as studio:
        executor = RayExecutor(studio.settings, num_cpus=2)
        assert executor.concurrency == 1 and "Ray" in executor.describe()
        on_ray = run(tmp_path / "ray", shared_cache, series, executor=executor)
    assert local.images_rendered == on_ray.images_rendered == 3 and not on_ray.failed
    assert on_ray.stages["render"] > 0 and on_ray.stages["write"] > 0
    ours, theirs = catalog(tmp_path / "local"), catalog(tmp_path / "ray")
    assert ours.keys() == theirs.keys()
    for key, pixels in ours.items():
        assert np.array_equal(pixels, theirs[key])
    store = Store(tmp_path / "ray")
    (job,) = store.jobs()
    store.close()
    assert job["executor"] == "ray" and job["status"] == "finished"
    assert job["images_done"] == job["images_total"] == 3
    assert job["prompts_done"] == job["prompts_total"] > 0


class DiesOnce:
    """The demo backend, except that its process dies in the first render anywhere."""

    def __init__(self, backend, flag: Path):
        self.backend, self.flag = backend, flag

    def render(self, requests, on_step=None, inputs=None):
        if not self.flag.exists():
            self.flag.write_text(str(os.getpid()))
            os._exit(1)  # a worker killed mid-task: no answer, no cleanup
        return self.backend.render(requests, on_step=on_step, inputs=inputs)


def dies_once(settings, flag):
    return DiesOnce(open_image_backend(settings), flag)


def test_a_killed_worker_is_replaced_and_its_batch_rendered_once(
    tmp_path, shared_cache, series, ray_cluster
):
    from studio.images.ray_executor import RayExecutor

    flag = tmp_path / "killed"
    with small_studio(tmp_path / "ray", shared_cache, executor="ray") as studio:
        factory = functools.partial(dies_once, flag=flag)
        executor = RayExecutor(studio.settings, factory=factory)
        summary = run(tmp_path / "ray", shared_cache, series, executor=executor)
    assert flag.exists()  # a worker did die
    assert summary.images_rendered == 3 and not summary.failed
    run(tmp_path / "local", shared_cache, series)
    ours, theirs = catalog(tmp_path / "local"), catalog(tmp_path / "ray")
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[key], theirs[key]) for key in ours)


def test_a_ray_address_that_does_not_answer_is_an_error_before_anything_is_written(
    tmp_path, shared_cache, capsys
):
    ray_or_skip()
    from studio.cli import dataprep

    out = tmp_path / "out"
    code = dataprep.main(
        [
            "--out",
            str(out),
            "--image-model",
            "demo",
            "--executor",
            "ray",
            "--ray-address",
            "127.0.0.1:9",
            "--episodes",
            "S1E1",
        ]  # fmt: skip
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "No Ray cluster answered at 127.0.0.1:9" in err
    assert "--ray-address (STUDIO_RAY_ADDRESS)" in err  # the CLI names its flag
    store = Store(out)
    assert store.prompts() == [] and store.images() == [] and store.jobs() == []
    store.close()


def test_a_bad_address_and_a_missing_ray_are_explained(monkeypatch):
    from studio.images.ray_executor import RayExecutor, check_address

    with pytest.raises(ConfigError, match="not host:port"):
        check_address("ray://:x")
    from studio.core.config import load_settings

    monkeypatch.setitem(sys.modules, "ray", None)  # as if it were not installed
    with pytest.raises(ConfigError, match="requirements-ray.txt"):
        RayExecutor(load_settings({"executor": "ray"}))
