"""Time each step of a Marketing Assistant campaign with the configured LLM and image model.

Run: `python bench/bench_marketing.py [--episode S1E3] [--platforms Instagram,X] [--language es]`.
It works in a fresh temporary catalog (so nothing comes from a cache), runs the chain step by step
and prints the seconds of each step and what the concept and posts came out as.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from studio import open_studio
from studio.core.dataset import load_series
from studio.workflows.marketing.campaign import STEPS, Brief, post_full_text
from studio.workflows.marketing.chain import Chain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episode", default="S1E3")
    parser.add_argument("--platforms", default="Instagram,X")
    parser.add_argument("--language", default="pt-BR")
    args = parser.parse_args()
    season, episode = (int(n) for n in args.episode.upper().lstrip("S").split("E"))
    with tempfile.TemporaryDirectory() as tmp, open_studio(data_dir=Path(tmp)) as studio:
        settings, llm, backend = studio.settings, studio.llm, studio.backend
        series = load_series(settings.series)[0]
        chain = Chain(llm, studio.images, series, settings)
        brief = Brief(source="episode", season=season, episode=episode,
                      platforms=args.platforms.split(","), language=args.language)  # fmt: skip
        campaign = chain.start(brief)
        print(f"LLM: {llm.model}. Image model: {backend.label} on {backend.device}.")
        total = 0.0
        for step in STEPS:
            started = time.perf_counter()
            chain.run_step(campaign, step)
            seconds = time.perf_counter() - started
            total += seconds
            print(f"{step:14} {seconds:7.1f} s")
        print(f"{'total':14} {total:7.1f} s")
        print(f"\nHook: {campaign.steps['concept']['hook']}")
        for post in campaign.steps["posts"]:
            print(f"\n[{post['platform']}, {post['characters']}/{post['limit']}]")
            print(post_full_text(post))


if __name__ == "__main__":
    main()
