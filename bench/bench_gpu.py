"""Time the image core on a GPU: eager versus the fast path, by batch size and dtype.

Run on a CUDA machine: `python bench/bench_gpu.py` (SD 1.5's architecture at full size, random
weights, 512x512, 25 steps, CFG 7.5, fp16 and bf16, batches 1, 4, 8, 16, 32), or `--quick` (bf16,
batches 1 and 16, two timed runs: under 6 minutes on one H100/H200, so a run and a rerun fit a
session's device time). `--compile-mode` and `--compile-scope` choose the fast path's compile
(the product's settings), `--fp8` adds the float8 experiment. On the CPU, for the tests:
`python bench/bench_gpu.py --small --device cpu --dtypes fp32 --batches 1,2 --steps 2 --size 64
--compile-backend eager`.

It builds the pipeline from its configs (the same compute as the real model, nothing downloaded),
saves it as a diffusers folder (safetensors) and loads it through the product's `Renderer`, so
what is timed is the product's own path: eager (`fast_path` off) and optimised (`fast_path` on:
fused QKV, torch.compile of the UNet, whole or its repeated blocks, batches padded to buckets).
For each dtype, path and batch it prints images/s, seconds per image, UNet it/s (denoising steps
per second of the whole batch), the VAE's share of the time (from the last step to the images),
peak GPU memory and the share of 790 TFLOP/s (the H100/H200's dense bf16/fp16 peak) reached, the
FLOPs counted by `torch.utils.flop_counter` on one UNet pass and one VAE decode. Then the first
image of a cold interactive request (a new renderer behind the render worker: load, compile,
render) and of a warm one (the next request, another prompt), and whether the optimised images
equal the eager ones within the tests' tolerance.

Compile time: the seconds each batch's shape took to compile (and run once) in this process,
cold, then again in a second process on the same compile cache (`--cache`), as a restarted
dashboard or batch job would. The fast path's timed rows compile in line (`background` off), so
what they time is the compiled path; the interactive rows use the product's background compile:
the cold request is served eagerly at once, the warm one after the compile is ready.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from studio.catalog.store import Store
from studio.core.config import COMPILE_MODES, COMPILE_SCOPES
from studio.core.params import RenderRequest
from studio.images.backends.diffusers.demo import build_demo_model, sd_pipeline
from studio.images.backends.diffusers.fast_path import FastPath
from studio.images.backends.diffusers.renderer import Renderer
from studio.images.backends.diffusers.weights import resolve_image_model
from studio.images.service import ImageService, ImageTask
from studio.images.worker import RenderWorker

ROOT = Path(__file__).resolve().parent.parent

PEAK_TFLOPS = 790.0  # H100/H200 dense bf16/fp16
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
TOLERANCE = 3  # levels of 255, as in tests/images/test_fast_path.py
PROMPT = "a detective examining a clue by gaslight, oil painting, dramatic lighting"

# Stable Diffusion 1.5's component configs (v1-5's unet, vae and text_encoder config.json).
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768,
    attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)
SD15_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_attention_heads=12,
    num_hidden_layers=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
    vocab_size=49408,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=1,
)


def build_sd15(folder: Path, device: str) -> Path:
    """SD 1.5's architecture with random weights, saved as fp16 safetensors into `folder`."""
    torch.manual_seed(0)
    with torch.device(device if device != "cpu" else "cpu"):  # random init on the GPU is fast
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    pipe = sd_pipeline(unet, vae, text_encoder)
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    return folder


def count_tflop(renderer: Renderer, size: int) -> tuple[float, float]:
    """(UNet pass with CFG, VAE decode) in TFLOP per image, counted on the loaded model."""
    from torch.utils.flop_counter import FlopCounterMode

    pipe, side = renderer.pipe, size // 8
    latents = torch.zeros(2, 4, side, side, device=renderer.device, dtype=renderer.dtype)
    text = torch.zeros(
        2, 77, pipe.unet.config.cross_attention_dim, device=renderer.device, dtype=renderer.dtype
    )
    with torch.no_grad():
        with FlopCounterMode(display=False) as unet_flops:
            pipe.unet(latents, 10, encoder_hidden_states=text)
        with FlopCounterMode(display=False) as vae_flops:
            pipe.vae.decode(latents[:1])
    return unet_flops.get_total_flops() / 1e12, vae_flops.get_total_flops() / 1e12


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def requests(batch: int, args: argparse.Namespace, offset: int = 0) -> list[RenderRequest]:
    return [
        RenderRequest(
            f"{PROMPT}, variant {offset + i}",
            "blurry, lowres",
            "Euler",
            args.steps,
            args.cfg,
            args.size,
            args.size,
            seed=offset + i,
        )
        for i in range(batch)
    ]


def time_batch(renderer: Renderer, batch: int, args: argparse.Namespace) -> dict[str, float]:
    """Warm up once (compiling this shape on the fast path), then time `args.repeats` renders of
    `batch` images."""
    fast = renderer.fast_path
    compiled_before = fast.compile_report()["compile_seconds"] if fast else 0.0
    sync(args.device)
    started = time.perf_counter()
    renderer.render(requests(batch, args, offset=1000))  # compile and warm up at this shape
    sync(args.device)
    warm_up = time.perf_counter() - started
    compile_seconds = fast.compile_report()["compile_seconds"] - compiled_before if fast else 0.0
    last_step = []

    def on_step(step: int, total: int, _latents) -> None:
        if step == total:
            sync(args.device)
            last_step.append(time.perf_counter())

    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, vae = [], []
    for repeat in range(args.repeats):
        sync(args.device)
        start = time.perf_counter()
        renderer.render(requests(batch, args, offset=repeat * batch), on_step=on_step)
        sync(args.device)
        end = time.perf_counter()
        times.append(end - start)
        vae.append((end - last_step[-1]) / (end - start))
    seconds = float(np.median(times))
    peak = torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else 0.0  # CPU: 0
    return {
        "seconds": seconds,
        "images_per_s": batch / seconds,
        "s_per_image": seconds / batch,
        "unet_it_s": args.steps / (seconds * (1 - float(np.median(vae)))),
        "vae_share": float(np.median(vae)),
        "peak_gib": peak,
        "warm_up": warm_up,
        "compile_seconds": compile_seconds,
    }


def fast_path(args: argparse.Namespace, background: bool = False, fp8: bool = False) -> FastPath:
    return FastPath(
        compile_backend=args.compile_backend,
        compile_mode=args.compile_mode,
        compile_scope=args.compile_scope,
        background=background,
        fp8=fp8,
    )


def open_renderer(
    folder: Path, dtype: torch.dtype, path: str, args, background: bool = False
) -> Renderer:
    """`path`: eager, fast (the fast path) or fp8 (the fast path with float8 linear layers)."""
    model = resolve_image_model(str(folder), Path(args.cache))
    renderer = Renderer(
        model,
        args.device,
        max(args.batches),
        batch_on_cpu=True,
        fast_path=None if path == "eager" else fast_path(args, background, path == "fp8"),
        compile_cache=Path(args.cache) / "inductor",
        dtype=dtype,
    )
    return renderer


def interactive(folder: Path, dtype: torch.dtype, args, data: Path) -> dict[str, float]:
    """Seconds to the first image of a one-image request through the render worker and the
    image service, as the dashboard makes it: cold (a new renderer: load, and on the fast path
    the compile starts in the background while this image is served eagerly), the compile's
    wait, and warm (the next request, another prompt, compiled)."""
    start = time.perf_counter()
    path = "eager" if args.eager_only else "fast"
    renderer = open_renderer(folder, dtype, path, args, background=True)
    worker = RenderWorker(renderer)
    service = ImageService(Store(data), worker)
    first = service.make_one(ImageTask(requests(1, args, offset=5000)[0]))
    cold = time.perf_counter() - start
    start = time.perf_counter()
    if renderer.fast_path is not None:
        renderer.fast_path.wait_compiled()
    compiling = time.perf_counter() - start
    start = time.perf_counter()
    second = service.make_one(ImageTask(requests(1, args, offset=6000)[0]))
    warm = time.perf_counter() - start
    worker.close()
    service.store.close()
    return {
        "cold": cold,
        "compiling": compiling,
        "warm": warm,
        "cold_path": first.record.provenance.get("render_path", "eager"),
        "warm_path": second.record.provenance.get("render_path", "eager"),
    }


def compile_only(folder: Path, args: argparse.Namespace) -> None:
    """(The second process of the cache check.) Compile each batch's shape once and print the
    seconds it took, reading the compile cache the first process wrote."""
    for dtype_name in args.dtypes.split(","):
        renderer = open_renderer(folder, DTYPES[dtype_name], "fast", args)
        for batch in args.batches:
            row = time_batch(renderer, batch, argparse.Namespace(**{**vars(args), "repeats": 0}))
            print(f"compile {dtype_name} {batch} {row['compile_seconds']:.2f}", flush=True)
        renderer.close()


def cached_compile_seconds(folder: Path, args: argparse.Namespace) -> dict[tuple[str, int], float]:
    """Run `compile_only` in a second process on this run's compile cache."""
    command = [
        sys.executable, __file__, "--compile-only", str(folder), "--device", args.device,
        "--dtypes", args.dtypes, "--batches", ",".join(map(str, args.batches)),
        "--steps", str(args.steps), "--size", str(args.size), "--cfg", str(args.cfg),
        "--compile-backend", args.compile_backend, "--compile-mode", args.compile_mode,
        "--compile-scope", args.compile_scope, "--cache", args.cache,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"  (the cache check failed: {done.stderr.strip().splitlines()[-1:]})")
        return {}
    seconds = {}
    for line in done.stdout.splitlines():
        if line.startswith("compile "):
            _, dtype_name, batch, value = line.split()
            seconds[(dtype_name, int(batch))] = float(value)
    return seconds


QUICK = {"dtypes": "bf16", "batches": "1,16", "repeats": 2}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the demo model's tiny config")
    parser.add_argument("--quick", action="store_true", help="bf16, batches 1 and 16, 2 runs")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="fp16,bf16")
    parser.add_argument("--batches", default="1,4,8,16,32")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-mode", choices=COMPILE_MODES, default="default")
    parser.add_argument("--compile-scope", choices=COMPILE_SCOPES, default="whole")
    parser.add_argument("--fp8", action="store_true", help="also the fast path in float8")
    parser.add_argument("--eager-only", action="store_true", help="skip the fast path")
    parser.add_argument("--no-cache-check", action="store_true", help="skip the second process")
    parser.add_argument("--cache", default=None, help="compile cache and model folder")
    parser.add_argument("--compile-only", metavar="MODEL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        for name, value in QUICK.items():
            if getattr(args, name) == parser.get_default(name):
                setattr(args, name, value)
    args.batches = [int(b) for b in args.batches.split(",")]
    return args


def main() -> None:
    args = parse_args()
    if args.compile_only:
        compile_only(Path(args.compile_only), args)
        return
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    args.cache = args.cache or str(work / "cache")
    if args.small:
        folder = build_demo_model(work / "model")
        what = "the demo model's tiny config"
    else:
        folder = build_sd15(work / "model", args.device)
        what = "SD 1.5 architecture, random weights"
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"Device: {device_name} ({args.device})")
    print(
        f"Versions: torch {torch.__version__} (CUDA {torch.version.cuda}), diffusers "
        f"{diffusers.__version__}, transformers {transformers.__version__}"
    )
    print(
        f"Model: {what}; {args.size}x{args.size}, {args.steps} steps, CFG {args.cfg}, "
        f"Euler, {args.repeats} timed runs a point (median)"
    )
    print(
        f"Fast path: torch.compile backend {args.compile_backend}, mode {args.compile_mode}, "
        f"scope {args.compile_scope}"
    )
    paths = ["eager"] if args.eager_only else ["eager", "fast"] + (["fp8"] * args.fp8)
    compiled: dict[tuple[str, int], float] = {}
    for dtype_name in args.dtypes.split(","):
        dtype = DTYPES[dtype_name]
        flops = None
        images = {}
        for path in paths:
            renderer = open_renderer(folder, dtype, path, args)
            if flops is None:
                unet_tflop, vae_tflop = count_tflop(renderer, args.size)
                flops = unet_tflop * args.steps + vae_tflop
                print(
                    f"\n{dtype_name}: counted {unet_tflop:.4g} TFLOP per UNet pass with CFG, "
                    f"{vae_tflop:.4g} per VAE decode: {flops:.4g} TFLOP per image"
                )
            for batch in args.batches:
                try:
                    row = time_batch(renderer, batch, args)
                except torch.OutOfMemoryError:
                    print(f"  {dtype_name} {path:5} batch {batch:2}: out of memory")
                    break
                share = 100 * flops * row["images_per_s"] / PEAK_TFLOPS
                compile_note = ""
                if path == "fast":
                    compiled[(dtype_name, batch)] = row["compile_seconds"]
                    compile_note = f", compile {row['compile_seconds']:.1f} s cold"
                print(
                    f"  {dtype_name} {path:5} batch {batch:2}: {row['images_per_s']:.2f} images/s,"
                    f" {row['s_per_image']:.3f} s/image, UNet {row['unet_it_s']:.1f} it/s, "
                    f"VAE {100 * row['vae_share']:.0f}%, peak {row['peak_gib']:.1f} GiB, "
                    f"{share:.3g}% of {PEAK_TFLOPS:.0f} TFLOP/s{compile_note}"
                )
            images[path] = np.stack(
                [np.asarray(i, dtype=np.int16) for i in renderer.render(requests(2, args))]
            )
            renderer.close()
        for path in ("fast", "fp8"):
            if path in images:
                difference = int(np.abs(images[path] - images["eager"]).max())
                mean = float(np.abs(images[path] - images["eager"]).mean())
                verdict = "within" if difference <= TOLERANCE else "OUTSIDE"
                print(
                    f"  {path} vs eager: max difference {difference} levels (mean {mean:.2f}), "
                    f"{verdict} the tolerance of {TOLERANCE}"
                )
        timing = interactive(folder, dtype, args, work / f"data-{dtype_name}")
        print(
            f"  interactive first image: cold {timing['cold']:.2f} s ({timing['cold_path']}), "
            f"warm {timing['warm']:.3f} s ({timing['warm_path']}); the background compile "
            f"finished {timing['compiling']:.1f} s after the cold image"
        )
    if compiled and not args.no_cache_check:
        cached = cached_compile_seconds(folder, args)
        for (dtype_name, batch), cold in compiled.items():
            again = cached.get((dtype_name, batch))
            shown = f"{again:.1f} s" if again is not None else "n/a"
            print(
                f"compile {dtype_name} batch {batch:2}: {cold:.1f} s cold, {shown} in a second "
                f"process with the cache"
            )


if __name__ == "__main__":
    main()
