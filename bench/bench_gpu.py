"""Time the image core on a GPU: eager versus the fast path, by batch size and dtype.

Run on a CUDA machine: `python bench/bench_gpu.py` (SD 1.5's architecture at full size, random
weights, 512x512, 25 steps, CFG 7.5, fp16 and bf16, batches 1, 4, 8, 16, 32). On the CPU, for the
tests: `python bench/bench_gpu.py --small --device cpu --dtypes fp32 --batches 1,2 --steps 2
--size 64 --compile-backend eager`.

It builds the pipeline from its configs (the same compute as the real model, nothing downloaded),
saves it as a diffusers folder (safetensors) and loads it through the product's `Renderer`, so
what is timed is the product's own path: eager (`fast_path` off) and optimised (`fast_path` on:
channels_last, fused QKV, torch.compile of the UNet and VAE decoder, batches padded to buckets).
For each dtype, path and batch it prints images/s, seconds per image, UNet it/s (denoising steps
per second of the whole batch), the VAE's share of the time (from the last step to the images),
peak GPU memory and the share of 790 TFLOP/s (the H100/H200's dense bf16/fp16 peak) reached, the
FLOPs counted by `torch.utils.flop_counter` on one UNet pass and one VAE decode. Then the first
image of a cold interactive request (a new renderer behind the render worker: load, compile,
render) and of a warm one (the next request, another prompt), and whether the optimised images
equal the eager ones within the tests' tolerance.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from studio.catalog.store import Store
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
    """Warm up once, then time `args.repeats` renders of `batch` images."""
    renderer.render(requests(batch, args, offset=1000))  # compile and warm up at this shape
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
    }


def open_renderer(folder: Path, dtype: torch.dtype, fast: bool, args) -> Renderer:
    model = resolve_image_model(str(folder), Path(args.cache))
    renderer = Renderer(
        model,
        args.device,
        max(args.batches),
        batch_on_cpu=True,
        fast_path=FastPath(compile_backend=args.compile_backend) if fast else None,
        compile_cache=Path(args.cache) / "inductor",
        dtype=dtype,
    )
    return renderer


def interactive(folder: Path, dtype: torch.dtype, args, data: Path) -> tuple[float, float]:
    """(cold, warm) seconds to the first image of a one-image request through the render worker
    and the image service, as the dashboard makes it."""
    start = time.perf_counter()
    worker = RenderWorker(open_renderer(folder, dtype, not args.eager_only, args))
    service = ImageService(Store(data), worker)
    service.make_one(ImageTask(requests(1, args, offset=5000)[0]))
    cold = time.perf_counter() - start
    start = time.perf_counter()
    service.make_one(ImageTask(requests(1, args, offset=6000)[0]))
    warm = time.perf_counter() - start
    worker.close()
    service.store.close()
    return cold, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="the demo model's tiny config")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="fp16,bf16")
    parser.add_argument("--batches", default="1,4,8,16,32")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--cfg", type=float, default=7.5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--eager-only", action="store_true", help="skip the fast path")
    parser.add_argument("--cache", default=None, help="compile cache and model folder")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    args.cache = args.cache or str(work / "cache")
    if args.small:
        folder = build_demo_model(work / "model")
        what = "the demo model's tiny config"
    else:
        folder = build_sd15(work / "model", args.device)
        what = "SD 1.5 architecture, random weights"
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"Device: {device_name} ({args.device}); torch {torch.__version__}")
    print(
        f"Model: {what}; {args.size}x{args.size}, {args.steps} steps, CFG {args.cfg}, "
        f"Euler, {args.repeats} timed runs a point (median)"
    )
    paths = ["eager"] if args.eager_only else ["eager", "fast"]
    for dtype_name in args.dtypes.split(","):
        dtype = DTYPES[dtype_name]
        flops = None
        images = {}
        for path in paths:
            renderer = open_renderer(folder, dtype, path == "fast", args)
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
                print(
                    f"  {dtype_name} {path:5} batch {batch:2}: {row['images_per_s']:.2f} images/s,"
                    f" {row['s_per_image']:.3f} s/image, UNet {row['unet_it_s']:.1f} it/s, "
                    f"VAE {100 * row['vae_share']:.0f}%, peak {row['peak_gib']:.1f} GiB, "
                    f"{share:.3g}% of {PEAK_TFLOPS:.0f} TFLOP/s"
                )
            images[path] = np.stack(
                [np.asarray(i, dtype=np.int16) for i in renderer.render(requests(2, args))]
            )
            renderer.close()
        if "fast" in images:
            difference = int(np.abs(images["fast"] - images["eager"]).max())
            verdict = "within" if difference <= TOLERANCE else "OUTSIDE"
            print(
                f"  fast vs eager: max difference {difference} levels, {verdict} the tolerance "
                f"of {TOLERANCE}"
            )
        cold, warm = interactive(folder, dtype, args, work / f"data-{dtype_name}")
        print(f"  interactive first image: cold {cold:.2f} s, warm {warm:.3f} s")


if __name__ == "__main__":
    main()
