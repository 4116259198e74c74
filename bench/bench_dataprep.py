"""Time the batch job: seconds per episode prompt, per image, and the cached rerun's fraction.

Run: `python bench/bench_dataprep.py [--episodes 3] [--image-model demo] [--steps 25]`.
It runs dataprep.py three times in a fresh temporary folder on the first N sample episodes:
prompts only (the configured LLM, the embedded one by default), then the images, then the rerun
with nothing changed, and prints the figures, then the prompt quality check of the run's prompts
(`studio.writing.quality`, as dataprep.py prints it). `--data` runs another series (its first
season's first N episodes).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "dataprep.py"), *args], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"dataprep.py failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started, done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=3, help="sample episodes to run (3)")
    parser.add_argument("--image-model", default="demo")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--size", default="512x512")
    parser.add_argument("--data", help="another series (default: the bundled sample)")
    args = parser.parse_args()
    ids = ",".join(f"S1E{n}" for n in range(1, args.episodes + 1))
    with tempfile.TemporaryDirectory() as out:
        common = [
            "--out",
            out,
            "--episodes",
            ids,
            "--image-model",
            args.image_model,
            "--steps",
            str(args.steps),
            "--size",
            args.size,
            *(["--data", args.data] if args.data else []),
        ]
        prompts_s, _ = run([*common, "--dry-run"])  # the LLM's share of a first run
        images_s, images_log = run(common)  # the renders' share (prompts now cached)
        second_s, second_log = run(common)  # the rerun with nothing changed
    lines = images_log.splitlines()
    start = next((n for n, line in enumerate(lines) if line.startswith("Prompt quality")), None)
    quality = [] if start is None else lines[start:]
    first_s = prompts_s + images_s
    rendered = int(re.search(r"Images:\s+(\d+) rendered", images_log).group(1))
    assert "0 LLM calls" in second_log and "Images:  0 rendered" in second_log, second_log
    print(
        f"episodes: {args.episodes}, image model: {args.image_model}, steps: {args.steps}, "
        f"size: {args.size}"
    )
    print(f"seconds per episode prompt (incl. start-up): {prompts_s / args.episodes:.1f}")
    print(f"seconds per image (incl. model load): {images_s / max(rendered, 1):.1f}")
    print(
        f"full first run: {first_s:.1f} s; cached rerun: {second_s:.1f} s "
        f"= {second_s / first_s:.1%} of the first"
    )
    for line in quality:
        print(line)


if __name__ == "__main__":
    main()
