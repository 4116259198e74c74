"""Time the dashboard's pages on a small and a large catalog: browsing must stay fast as it grows.

Run: `python bench/bench_dashboard.py [--repeat 5]`.
It writes two synthetic series and catalogs in a temporary folder, 20 episodes with 1 image each and
1,000 episodes (10 seasons of 100) with 5 images each (5,000 images; 512x512 PNGs, 100 distinct
files shared by content address), then runs the Episodes page (a season's card grid), an episode's
page and the Gallery with Streamlit's AppTest and prints the median seconds of each.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from studio.catalog.records import ImageRecord
from studio.catalog.store import Store
from studio.core.metadata import encode_png

ROOT = Path(__file__).resolve().parent.parent

DISTINCT_FILES = 100


def write_series(folder: Path, seasons: int, per_season: int) -> Path:
    series = folder / "series"
    series.mkdir(parents=True)
    with (series / "episodes.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["season", "episode", "title", "summary", "characters"])
        for s in range(1, seasons + 1):
            for e in range(1, per_season + 1):
                writer.writerow(
                    [s, e, f"Case {s}-{e}", f"Holmes solves case {e} of {s}.", "Holmes"]
                )
    return series


def fill_catalog(data: Path, seasons: int, per_season: int, images_each: int) -> int:
    from PIL import Image

    rng = np.random.default_rng(0)
    pngs = [
        encode_png(
            Image.fromarray(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8)), "bench", {}
        )
        for _ in range(min(DISTINCT_FILES, seasons * per_season * images_each))
    ]
    store = Store(data)
    count = 0
    for s in range(1, seasons + 1):
        for e in range(1, per_season + 1):
            for index in range(images_each):
                record = ImageRecord(
                    cache_key=f"{s}-{e}-{index}", target="episode", season=s, episode=e,
                    style=None, image_index=index, prompt=f"case {s}-{e}", negative_prompt="",
                    model="bench", sampler="Euler", steps=20, cfg=7.0, width=512, height=512,
                    seed=index, placeholder=True, provenance={},
                )  # fmt: skip
                store.add_image(record, pngs[count % len(pngs)])
                count += 1
    store.close()
    return count


def time_page(page: str, repeat: int, **query: str) -> float:
    from streamlit.testing.v1 import AppTest

    timings = []
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=300)
    at.query_params.update(query)
    at.run()
    if page != "pages/episodes.py":
        at.switch_page(page).run()
    if at.exception:
        sys.exit(f"{page} raised: {at.exception[0].value}")
    for _ in range(repeat):  # reruns, as when a widget changes
        started = time.perf_counter()
        at.run()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.update(STUDIO_IMAGE_MODEL="demo", HF_HUB_OFFLINE="1")
    cases = {"20 episodes, 20 images": (1, 20, 1), "1,000 episodes, 5,000 images": (10, 100, 5)}
    print(f"{'catalog':32} {'episode grid':>13} {'episode page':>13} {'gallery':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, (seasons, per_season, images_each) in cases.items():
            folder = Path(tmp) / label.split(",")[0].replace(" ", "_")
            os.environ["STUDIO_SERIES"] = str(write_series(folder, seasons, per_season))
            os.environ["STUDIO_DATA_DIR"] = str(folder / "data")
            fill_catalog(folder / "data", seasons, per_season, images_each)
            import streamlit as st

            st.cache_resource.clear()
            st.cache_data.clear()
            grid = time_page("pages/episodes.py", args.repeat)
            episode = time_page("pages/episodes.py", args.repeat, episode="S01E07")
            gallery = time_page("pages/gallery.py", args.repeat)
            print(f"{label:32} {grid:12.3f}s {episode:12.3f}s {gallery:8.3f}s")
    print("Median of the reruns after the first; AppTest runs the page scripts in process.")


if __name__ == "__main__":
    main()
