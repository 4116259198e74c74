"""Time the writer: what each kind of LLM call of the batch job and the dashboard costs with the
embedded model, from llama.cpp's own timings.

Run: `python bench/bench_writer.py [--kinds look,episode,season,storyboard,revision]
[--episode S1E1]`. Over the bundled sample, in a fresh temporary catalog (nothing cached), with
the embedded Qwen2.5-Coder-1.5B on this machine's CPU (or GPU, where its llama.cpp build has one)
and the demo image model, it makes one call of each kind and prints a table: calls (repairs and
re-asks included), prompt tokens (and how many llama.cpp reused from the slot's cache), generated
tokens, prompt-eval and decode tokens/s, and wall seconds; then the sum, and the prompt quality
check of what was written. Time it with nothing else running: on 2 cores a second heavy process
doubles every figure.

The kinds: `look` (a character's look: Sherlock Holmes), `episode` (an episode's meta-prompt),
`season` (the season's self-ask follow-ups, then its five styles, and any style asked again),
`storyboard` (an episode's key moments), `revision` (a change request on an episode image).
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS = ("look", "episode", "season", "storyboard", "revision")


def parse_kinds(text: str) -> list[str]:
    kinds = [kind.strip() for kind in text.split(",") if kind.strip()]
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown or not kinds:
        raise argparse.ArgumentTypeError(f"{text!r}: choose from {', '.join(KINDS)}")
    return kinds


def parse_episode(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"[sS](\d+)[eE](\d+)", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: not an episode like S1E1")
    return int(match.group(1)), int(match.group(2))


def measure(backend: Any, work: Callable[[], Any]) -> dict[str, float]:
    """Run `work`; llama.cpp's timings of the calls it made, summed, and its wall seconds."""
    before = len(backend.timings)
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    timings = list(backend.timings)[before:]
    total = {"calls": len(timings), "wall": wall}
    for key in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms", "cache_n"):
        total[key] = sum(float(t.get(key) or 0) for t in timings)
    return total


def row(kind: str, t: dict[str, float]) -> str:
    prompt_rate = t["prompt_n"] / (t["prompt_ms"] / 1000) if t["prompt_ms"] else 0.0
    decode_rate = t["predicted_n"] / (t["predicted_ms"] / 1000) if t["predicted_ms"] else 0.0
    return (
        f"| {kind} | {t['calls']:.0f} | {t['prompt_n']:.0f} (+{t['cache_n']:.0f} cached) | "
        f"{t['predicted_n']:.0f} | {prompt_rate:.0f} | {decode_rate:.1f} | {t['wall']:.1f} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", type=parse_kinds, default=list(KINDS))
    parser.add_argument("--episode", type=parse_episode, default=(1, 1))
    parser.add_argument("--cache-dir", type=Path, help="model cache (STUDIO_CACHE_DIR)")
    args = parser.parse_args(argv)

    from studio import open_studio
    from studio.llm.embedded import embedded_placement
    from studio.workflows.batch import Selection, run_job
    from studio.writing.prompting import ask_episode, ask_season
    from studio.writing.storyboards import write_storyboard

    with tempfile.TemporaryDirectory(prefix="bench-writer-") as folder:
        values: dict[str, Any] = {"image_model": "demo", "steps": 2, "width": 64, "height": 64,
                                  "device": "cpu", "llm_base_url": ""}  # fmt: skip
        if args.cache_dir:
            values["cache_dir"] = args.cache_dir
        with open_studio(data_dir=Path(folder) / "data", **values) as studio:
            series, llm = studio.series, studio.llm
            backend = llm.backend
            if not hasattr(backend, "timings"):
                sys.exit("This bench needs the embedded LLM: unset OPENAI_BASE_URL/OPENAI_API_KEY.")
            season, number = args.episode
            episode = next(
                (e for e in series.episodes if (e.season, e.episode) == (season, number)), None
            )
            if episode is None:
                sys.exit(f"No episode S{season}E{number} in the sample.")
            count = studio.backend.count_tokens
            import xllamacpp

            print(f"Writer bench: embedded {backend.identity()} {embedded_placement()}, "
                  f"{backend.threads} threads; sample {episode.id}.")  # fmt: skip
            print(f"llama.cpp build: {xllamacpp.get_system_info().strip()}")
            loaded = measure(backend, lambda: llm.generate_json(
                [{"role": "user", "content": 'Answer with the JSON object {"ok": "yes"}.'}],
                {"type": "object", "properties": {"ok": {"type": "string"}}, "required": ["ok"]},
                max_tokens=32,
            ))  # fmt: skip
            print(f"Model load and a first tiny call: {loaded['wall']:.1f} s.")
            work: dict[str, Callable[[], Any]] = {
                "look": lambda: studio.character_look("Sherlock Holmes", refresh=True),
                "episode": lambda: ask_episode(llm, series, episode),
                "season": lambda: ask_season(llm, series, season),
                "storyboard": lambda: write_storyboard(llm, series, episode, count),
            }

            def image_key() -> str:
                chosen = Selection(episodes={(season, number)}, targets="episodes")
                summary = run_job(series, chosen, studio.settings, llm, studio.images)
                return summary.results[0].key

            print("| call | calls | prompt tokens | generated tokens | prompt-eval tok/s | "
                  "decode tok/s | wall s |")  # fmt: skip
            print("| --- | --- | --- | --- | --- | --- | --- |")
            totals: dict[str, float] = {}
            for kind in args.kinds:
                if kind == "revision":  # the episode image it revises is made first, untimed
                    key = image_key()
                    figures = measure(
                        backend, lambda key=key: studio.revise(key, "at night instead of by day")
                    )
                else:
                    figures = measure(backend, work[kind])
                print(row(kind, figures))
                for name, value in figures.items():
                    totals[name] = totals.get(name, 0.0) + value
            print(row("all", totals))
            for line in studio.prompt_quality().lines(limit=10):
                print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
