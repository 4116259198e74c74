"""Time the batch job scaled out: concurrent LLM calls, the embedded defaults' first run by stage,
and the Ray executor versus the local one.

Run: `python bench/bench_scale.py` (all three parts, about 35 minutes on 2 CPU cores), or pick
with `--parts server,ray,embedded`. The parts:

- server: the sample's prompts (`--characters none`: 24 episodes and 2 seasons of 6 calls, 36
  LLM calls) from a fake OpenAI-compatible server on localhost that takes `--latency` seconds
  (1) per answer, asked by `dataprep.py --dry-run` at each of `--llm-concurrency` (1,8) calls at
  once.
- ray: `--images` (24) sample episodes rendered with the demo model at `--size`/`--steps`, by the
  local executor and by the Ray executor on a local cluster (`ray.init(num_cpus=2)`), with the
  LLM faked (its time is the server part's); images/s of the render stage and of the whole job,
  and whether the two catalogs hold the same keys and pixels. Needs `requirements-ray.txt`.
- embedded: the sample's first run (`--characters none` unless `--characters` says otherwise)
  by `dataprep.py` in fresh folders with the embedded LLM and `--image-model` (auto), once per
  `--embedded-concurrency` value (1) and `--embedded-runs` (2) times each; wall time by stage
  (LLM, render, write), LLM calls, and whether the runs' prompts and pixels are identical.
  `--episodes S1E1,S1E2` narrows it (the test does).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from studio.catalog.store import Store

ROOT = Path(__file__).resolve().parent.parent
# The fake LLM server and backend come from the tests (not part of the package).
sys.path.insert(0, str(ROOT))

TIME_LINE = re.compile(
    r"Time: ([0-9.]+) s \(llm ([0-9.]+) s(?:, render ([0-9.]+) s, write ([0-9.]+) s)?\)"
)
CALLS = re.compile(r"\((\d+) LLM calls?\)")


def dataprep(args: list[str], env: dict[str, str]) -> tuple[float, dict[str, float], int, str]:
    """Run dataprep.py; wall seconds, its own time by stage, its LLM calls and its log."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "dataprep.py"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"dataprep.py {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    found = TIME_LINE.search(done.stderr)
    calls = CALLS.search(done.stderr)
    if not found or not calls:
        sys.exit(f"dataprep.py printed no summary:\n{done.stderr[-3000:]}")
    values = [float(value or 0) for value in found.groups()]
    stages = dict(zip(("total", "llm", "render", "write"), values, strict=True))
    return wall, stages, int(calls.group(1)), done.stderr


def catalog(folder: Path) -> tuple[list, dict[str, bytes]]:
    """A catalog's prompts (key, text) and its images' pixels by cache key."""
    store = Store(folder)
    try:
        prompts = sorted((p.key, p.spec.prompt, p.spec.negative_prompt) for p in store.prompts())
        pixels = {}
        for row in store.images():
            with Image.open(store.image_path(row)) as image:
                pixels[row.cache_key] = image.convert("RGB").tobytes()
        return prompts, pixels
    finally:
        store.close()


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any STUDIO_ or OPENAI_ setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "OPENAI_"))}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def server_part(args: argparse.Namespace) -> None:
    from tests.support.fakes import FakeOpenAIServer

    print(f"\n== LLM calls to an OpenAI-compatible server ({args.latency:g} s per answer) ==")
    for concurrency in args.llm_concurrency:
        with FakeOpenAIServer(latency=args.latency) as server, tempfile.TemporaryDirectory() as out:
            env = clean_env(
                OPENAI_BASE_URL=server.url, OPENAI_API_KEY="bench", STUDIO_LLM_MODEL="fake-llm"
            )
            command = ["--out", out, "--dry-run", "--characters", args.characters]
            command += ["--llm-concurrency", str(concurrency)]
            _, stages, calls, _ = dataprep(command, env)
            peak = server.max_in_flight
        print(
            f"concurrency {concurrency:>2}: {calls} LLM calls in {stages['llm']:.1f} s "
            f"(at most {peak} in flight at once)"
        )


def ray_part(args: argparse.Namespace) -> None:
    try:
        import ray
    except ImportError:
        sys.exit("The ray part needs Ray: pip install -r requirements-ray.txt")
    from studio.api import Studio
    from studio.core.config import SAMPLE_SERIES, load_settings
    from studio.core.dataset import load_series
    from studio.images.ray_executor import STUDIO_PACKAGE, RayExecutor
    from studio.workflows.batch import Selection, run_job
    from tests.support.fakes import FakeBackend

    series = load_series(SAMPLE_SERIES)[0]
    episodes = [(e.season, e.episode) for e in series.episodes][: args.images]
    selection = Selection(episodes=set(episodes), targets="episodes")
    width, height = args.size
    print(
        f"\n== Ray executor vs local: {len(episodes)} episode images, demo model, "
        f"{width}x{height}, {args.steps} steps =="
    )
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"py_modules": [str(STUDIO_PACKAGE)], "env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    try:
        with tempfile.TemporaryDirectory() as tmp:
            folders = {}
            for name in ("local", "ray"):
                folder = folders[name] = Path(tmp) / name
                settings = load_settings(
                    {
                        "data_dir": folder,
                        "image_model": "demo",
                        "device": "cpu",
                        "width": width,
                        "height": height,
                        "steps": args.steps,
                        "characters": "none",
                        "executor": name,
                    }
                )
                with Studio(settings, chat_backend=FakeBackend()) as studio:
                    executor = RayExecutor(settings, num_cpus=2) if name == "ray" else None
                    started = time.perf_counter()
                    try:
                        summary = run_job(
                            series,
                            selection,
                            settings,
                            studio.llm,
                            studio.images,
                            executor=executor,
                        )
                    finally:
                        if executor is not None:
                            executor.close()
                    wall = time.perf_counter() - started
                rendered = summary.images_rendered
                render = summary.stages["render"]
                print(
                    f"{name:>5}: {rendered} images, render stage {render:.1f} s = "
                    f"{rendered / render:.2f} images/s; whole job {wall:.1f} s = "
                    f"{rendered / wall:.2f} images/s"
                )
            (_, ours), (_, theirs) = catalog(folders["local"]), catalog(folders["ray"])
            same = ours.keys() == theirs.keys() and all(ours[k] == theirs[k] for k in ours)
            print(f"ray catalog equals local: {'yes' if same else 'NO'} ({len(ours)} images)")
    finally:
        ray.shutdown()


def embedded_part(args: argparse.Namespace) -> None:
    what = f"episodes {args.episodes}" if args.episodes else "the whole sample"
    print(
        f"\n== First run on the embedded defaults: {what}, characters {args.characters}, "
        f"image model {args.image_model}, {os.cpu_count()} CPU cores =="
    )
    common = ["--characters", args.characters, "--image-model", args.image_model]
    if args.episodes:
        common += ["--episodes", args.episodes]
    env = clean_env()
    if args.cache_dir:
        env["STUDIO_CACHE_DIR"] = args.cache_dir
    for concurrency in args.embedded_concurrency:
        catalogs = []
        for run in range(1, args.embedded_runs + 1):
            with tempfile.TemporaryDirectory() as out:
                command = ["--out", out, *common, "--llm-concurrency", str(concurrency)]
                wall, stages, calls, _ = dataprep(command, env)
                catalogs.append(catalog(Path(out)))
            per_call = stages["llm"] / max(calls, 1)
            print(
                f"concurrency {concurrency}, run {run}: {wall:.0f} s wall ({wall / 60:.1f} min); "
                f"llm {stages['llm']:.0f} s for {calls} calls ({per_call:.1f} s each), "
                f"render {stages['render']:.0f} s, write {stages['write']:.1f} s"
            )
        if len(catalogs) > 1:
            prompts, pixels = catalogs[0]
            same_prompts = all(c[0] == prompts for c in catalogs[1:])
            same_pixels = all(c[1] == pixels for c in catalogs[1:])
            print(
                f"concurrency {concurrency}: prompts identical across runs: "
                f"{'yes' if same_prompts else 'NO'} ({len(prompts)}); pixels identical: "
                f"{'yes' if same_pixels else 'NO'} ({len(pixels)} images)"
            )


def numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height or width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="server,ray,embedded")
    parser.add_argument("--characters", default="none", choices=["cast", "all", "none"])
    parser.add_argument("--latency", type=float, default=1.0)
    parser.add_argument("--llm-concurrency", type=numbers, default=[1, 8])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=size, default=(256, 256))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--episodes", default="", help="e.g. S1E1,S1E2 (default: all)")
    parser.add_argument("--image-model", default="auto")
    parser.add_argument("--embedded-concurrency", type=numbers, default=[1])
    parser.add_argument("--embedded-runs", type=int, default=2)
    parser.add_argument("--cache-dir", default="", help="model cache (default: the setting's)")
    args = parser.parse_args()
    parts = {part.strip() for part in args.parts.split(",")}
    unknown = parts - {"server", "ray", "embedded"}
    if unknown:
        parser.error(f"unknown parts: {', '.join(sorted(unknown))}")
    if "server" in parts:
        server_part(args)
    if "ray" in parts:
        ray_part(args)
    if "embedded" in parts:
        embedded_part(args)


if __name__ == "__main__":
    main()
