"""Time the HTTP API (`python serve.py`): latency and throughput for concurrent A1111 clients, a
cache hit's latency, and the HTTP layer's overhead against calling `open_studio` directly.

Run: `python bench/bench_api.py [--concurrency 1,4,16] [--rounds 2] [--size 128] [--steps 4]
[--hits 50]`; a quick check: `--concurrency 1,2 --rounds 1 --size 64 --steps 2 --hits 10`.

It starts `serve.py` (the demo model on the CPU unless `--image-model`/`--device` say otherwise)
in a child process on a free localhost port, over a fresh catalog in a temporary folder, and
drives it with `requests` from threads of this process, one keep-alive session per client:

1. for each concurrency C: C clients each send `--rounds` txt2img requests with new prompts (every
   one a cache miss), back to back; prints p50/p95 latency and images/s over the wall time
   (concurrent requests share pipeline calls in the render worker);
2. a cache hit: the same request `--hits` times, one at a time: p50/p95;
3. the same cache hit through `open_studio(...).generate(...)` in this process (the catalog look-up
   and record only): p50/p95, and the HTTP layer's overhead (HTTP p50 minus direct p50), against
   the goal of under 10 ms.

Both processes share the machine's cores: say what else was running when you report a figure.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
GOAL_OVERHEAD_MS = 10.0


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not a list of whole numbers like 1,4,16"
        ) from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give counts of 1 or more, like 1,4,16")
    return counts


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(out: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [
        sys.executable, str(ROOT / "serve.py"), "--port", str(port), "--out", str(out),
        "--image-model", args.image_model, "--device", args.device,
    ]  # fmt: skip
    env = {**os.environ, "STUDIO_CACHE_DIR": str(args.cache_dir)} if args.cache_dir else None
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            requests.get(f"{url}/sdapi/v1/sd-models", timeout=2)
            return process, url
        except requests.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("serve.py did not start; run it by hand to see why.") from None
            time.sleep(0.2)


def body(args: argparse.Namespace, prompt: str, seed: int) -> dict:
    return {"prompt": prompt, "seed": seed, "steps": args.steps, "width": args.size,
            "height": args.size, "sampler_name": "Euler a"}  # fmt: skip


def timed_post(session: requests.Session, url: str, payload: dict) -> float:
    started = time.perf_counter()
    response = session.post(f"{url}/sdapi/v1/txt2img", json=payload, timeout=600)
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise SystemExit(f"txt2img failed: {response.status_code} {response.text[:300]}")
    return elapsed


def concurrent(url: str, args: argparse.Namespace, clients: int, tag: str) -> None:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(number: int) -> None:
        with requests.Session() as session:
            for round_ in range(args.rounds):
                prompt = f"a lighthouse on a cliff, {tag} client {number} round {round_}"
                elapsed = timed_post(session, url, body(args, prompt, number * 1000 + round_))
                with lock:
                    latencies.append(elapsed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    images = clients * args.rounds
    print(
        f"  {clients:>3} clients: {images} images in {wall:.2f} s = {images / wall:.2f} images/s; "
        f"latency p50 {percentile(latencies, 0.5):.2f} s, p95 {percentile(latencies, 0.95):.2f} s"
    )


def cache_hits(url: str, args: argparse.Namespace) -> list[float]:
    payload = body(args, "a cached harbour at dawn", 7)
    with requests.Session() as session:
        timed_post(session, url, payload)  # made once
        return [timed_post(session, url, payload) for _ in range(args.hits)]


def direct_hits(out: Path, args: argparse.Namespace) -> list[float]:
    from studio import open_studio

    values = {"image_model": args.image_model, "device": args.device, "steps": args.steps,
              "width": args.size, "height": args.size, "sampler": "Euler a"}  # fmt: skip
    if args.cache_dir:
        values["cache_dir"] = args.cache_dir
    times = []
    with open_studio(data_dir=out, **values) as studio:
        first = studio.generate("a cached harbour at dawn", seed=7)
        if not first.cached:
            raise SystemExit("The direct call did not find the server's image: not the same key.")
        for _ in range(args.hits):
            started = time.perf_counter()
            studio.generate("a cached harbour at dawn", seed=7)
            times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=parse_counts, default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=2, help="requests per client (2)")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels (128)")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps (4)")
    parser.add_argument("--hits", type=int, default=50, help="cache-hit requests timed (50)")
    parser.add_argument("--image-model", default="demo")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache-dir", type=Path, help="model cache (STUDIO_CACHE_DIR)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.hits < 1:
        parser.error("--rounds and --hits have to be 1 or more")
    import diffusers
    import fastapi
    import torch
    import uvicorn

    print(
        f"HTTP API bench: {args.image_model} on {args.device}, {args.size}x{args.size}, "
        f"{args.steps} steps, Euler a; torch {torch.__version__}, diffusers "
        f"{diffusers.__version__}, fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}; "
        f"{os.cpu_count()} CPUs; server in a child process, clients in threads here."
    )
    with tempfile.TemporaryDirectory(prefix="bench-api-") as folder:
        out = Path(folder) / "data"
        process, url = start_server(out, args)
        try:
            timed_post(requests.Session(), url, body(args, "warm-up", 0))  # load the model
            print("Cache misses (new prompt each request):")
            for clients in args.concurrency:
                concurrent(url, args, clients, f"c{clients}")
            hits = cache_hits(url, args)
        finally:
            process.terminate()
            process.wait(timeout=60)
        direct = direct_hits(out, args)
    http_p50, direct_p50 = percentile(hits, 0.5) * 1000, percentile(direct, 0.5) * 1000
    print(
        f"Cache hit over HTTP ({args.hits}x, one {args.size}px PNG base64 in the reply): "
        f"p50 {http_p50:.1f} ms, p95 {percentile(hits, 0.95) * 1000:.1f} ms"
    )
    print(
        f"Cache hit through open_studio().generate(): p50 {direct_p50:.1f} ms, p95 "
        f"{percentile(direct, 0.95) * 1000:.1f} ms (mean {statistics.mean(direct) * 1000:.1f} ms)"
    )
    overhead = http_p50 - direct_p50
    verdict = "met" if overhead < GOAL_OVERHEAD_MS else "NOT met"
    print(
        f"HTTP layer overhead on a cache hit: {overhead:.1f} ms at p50 (goal < "
        f"{GOAL_OVERHEAD_MS:g} ms: {verdict})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
