"""Time torch's renders and the embedded LLM in one process on the CPU, as the dashboard and the
batch job run them: renders before the LLM is loaded, the LLM's speed after renders, renders
while the LLM is loaded and idle, and renders after it is freed (`LLM.release`).

Run: `python bench/bench_cpu_sharing.py [--images 4] [--keep-threads]`. In a fresh temporary
catalog, with the demo model (512x512, 25 steps) and the embedded Qwen2.5-Coder-1.5B; each render
figure is the mean of `--images` images, each LLM figure llama.cpp's own timings of one answer of
up to 128 tokens. `--keep-threads` leaves torch's OpenMP workers alive after each render (as the
renderer did before it handed them back; studio/images/backends/diffusers/openmp.py), to compare.
Time it with nothing else running: on 2 cores a second heavy process doubles every figure.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from studio.api import Studio
from studio.core.config import Settings
from studio.llm.base import ChatRequest

STORY = ChatRequest(
    (("user", "Write a long story about a lighthouse keeper and the sea. " * 20),),
    {"type": "object", "properties": {"story": {"type": "string"}}, "required": ["story"]},
    max_tokens=128,
    seed=1,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4, help="images per render figure (4)")
    parser.add_argument(
        "--keep-threads", action="store_true", help="keep torch's OpenMP workers after renders"
    )
    parser.add_argument("--cache-dir", type=Path, help="model cache (STUDIO_CACHE_DIR)")
    args = parser.parse_args()
    if args.keep_threads:
        from studio.images.backends.diffusers import renderer

        renderer.release_openmp_threads = lambda: False
    cache = {"cache_dir": args.cache_dir} if args.cache_dir else {}
    with (
        tempfile.TemporaryDirectory() as folder,
        Studio(Settings(data_dir=Path(folder), image_model="demo", **cache)) as studio,
    ):
        studio.generate("a lighthouse, warm-up", seed=1)
        rounds = iter(range(1, 1000))

        def renders(what: str) -> None:
            start, first = time.perf_counter(), next(rounds) * 100
            for i in range(args.images):
                studio.generate(f"a lighthouse at night, {what}", seed=first + i)
            each = (time.perf_counter() - start) / args.images
            print(f"{what:<36} {each:6.2f} s an image", flush=True)

        def llm(what: str) -> None:
            backend = studio.llm.backend
            backend.complete(STORY)
            timings = backend.timings[-1]
            print(
                f"{what:<36} prompt {timings['prompt_per_second']:5.1f} tok/s, "
                f"generated {timings['predicted_per_second']:5.1f} tok/s",
                flush=True,
            )

        renders("renders, no LLM loaded yet")
        llm("the LLM after renders")
        llm("the LLM again")
        renders("renders, the LLM loaded and idle")
        studio.llm.release()
        renders("renders, the LLM released")
        llm("the LLM loaded again, after renders")


if __name__ == "__main__":
    main()
