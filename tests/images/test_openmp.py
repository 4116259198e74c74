"""torch's OpenMP workers are handed back after a render on the CPU, so that an LLM in the same
process (llama.cpp shares the OpenMP runtime) does not find more workers than cores
(studio/images/backends/diffusers/openmp.py). Each check runs in a fresh process: it counts the
process's threads, which nothing else may start or stop meanwhile."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from studio.core.config import PROJECT_ROOT

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/task").is_dir(), reason="counts threads in Linux's /proc"
)

COUNT = """
import os, time
def threads():
    time.sleep(0.3)  # the workers that were told to stop are gone by then
    return len(os.listdir("/proc/self/task"))
"""


def run(script: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", COUNT + textwrap.dedent(script)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_releasing_hands_back_the_threads_a_parallel_region_started():
    before, during, after, released, idle = run(
        """
        import torch
        from studio.images.backends.diffusers.openmp import release_openmp_threads
        torch.set_num_threads(2)
        before = threads()
        torch.randn(4_000_000).exp().sum()  # runs in OpenMP's parallel region: a worker starts
        during = threads()
        released = release_openmp_threads()
        print(before, during, threads(), released, release_openmp_threads())
        """
    )
    assert int(during) > int(before), "the parallel region started no worker thread"
    assert int(after) == int(before) and released == "True"
    assert idle == "True"  # a thread that holds no workers: nothing to do, no error


def test_a_render_on_the_cpu_hands_its_threads_back(shared_cache):
    after_render, after_release = run(
        f"""
        import torch
        from studio.core.params import RenderRequest
        from studio.images.backends.diffusers.openmp import release_openmp_threads
        from studio.images.backends.diffusers.renderer import Renderer
        from studio.images.backends.diffusers.weights import resolve_image_model
        torch.set_num_threads(2)
        from pathlib import Path
        renderer = Renderer(resolve_image_model("demo", Path({str(shared_cache)!r})), "cpu")
        request = RenderRequest("a lighthouse", "blurry", "Euler", 2, 7.0, 64, 64, 3)
        renderer.render([request])
        after_render = threads()
        release_openmp_threads()  # had the render kept its workers, this would end them
        print(after_render, threads())
        """
    )
    assert after_render == after_release


def test_without_libgomp_loaded_nothing_is_released():
    (released,) = run(
        """
        from studio.images.backends.diffusers import openmp
        openmp.LIBGOMP = "libgomp-that-is-not-loaded.so.1"
        print(openmp.release_openmp_threads())
        """
    )
    assert released == "False"
