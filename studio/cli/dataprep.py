"""Turn a series' summaries into image prompts with an LLM and render them with Stable Diffusion.

Run: `python dataprep.py` (the bundled sample series, embedded LLM, image model `auto`), or e.g.
`python dataprep.py --data my_show/ --map summary=resumo --seasons 1 --images-per-episode 2`.
Everything is cached under the data folder: a second run with nothing changed does no model work.

The prompt library: `python dataprep.py library import FILE.csv`, `... library search TEXT`,
`... library index` (embed what is waiting), `... library status`.

`dataprep.py` at the project's top is the entry point; `main(argv)` returns the exit code."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from studio.cli.flags import OneLineParser, cli_message, flag_of
from studio.cli.library import (
    build_library_parser,
    library_arguments,
    library_command,
    library_progress,
    library_settings,
)
from studio.core.config import (
    COMPILE_MODES,
    COMPILE_SCOPES,
    ENV_VARS,
    FP8_CHOICES,
    Settings,
    load_settings,
)
from studio.core.errors import StudioError

EPISODE_ID = re.compile(r"^\s*[sS]?(\d+)\s*[xXeE:]\s*(\d+)\s*$")


def parse_episode_ids(text: str) -> set[tuple[int, int]]:
    """`S1E3,2x05` -> {(1, 3), (2, 5)}."""
    ids = set()
    for item in filter(None, (t.strip() for t in text.split(","))):
        match = EPISODE_ID.match(item)
        if not match:
            raise argparse.ArgumentTypeError(f"{item!r}: not an episode id like S1E3 or 1x03")
        ids.add((int(match.group(1)), int(match.group(2))))
    return ids


def parse_seasons(text: str) -> set[int]:
    try:
        return {int(t) for t in text.split(",") if t.strip()}
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: not a list of season numbers like 1,2"
        ) from None


def parse_size(text: str) -> tuple[int, int]:
    match = re.match(r"^(\d+)[xX](\d+)$", text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r}: not a size like 512x512 (WxH)")
    return int(match.group(1)), int(match.group(2))


def parse_sampler(text: str) -> str:
    """A sampler's name as the studio spells it, from any spelling (`euler a` -> `Euler a`),
    AUTOMATIC1111's, ComfyUI's and k-diffusion's ids (`k_dpmpp_2m_ka` -> `DPM++ 2M Karras`); a
    schedule we do not have ("DPM++ 2M SDE Exponential") is said on stderr, not dropped silently."""
    from studio.core.errors import ParameterError
    from studio.core.samplers import SAMPLER_NAMES, close_sampler, resolve_sampler

    try:
        sampler, notes = resolve_sampler(text)
    except ParameterError:
        close = close_sampler(text)
        guess = f" (did you mean {close!r}?)" if close else ""
        raise argparse.ArgumentTypeError(
            f"{text!r}: no such sampler{guess}; choose one of {', '.join(SAMPLER_NAMES)}"
        ) from None
    for note in notes:
        print(f"Note: --sampler {text!r}: {note}.", file=sys.stderr)
    return sampler


def build_parser() -> argparse.ArgumentParser:
    from studio.core.params import SAMPLER_NAMES as SCHEDULERS

    parser = OneLineParser(
        prog="dataprep.py",
        description=(
            "Write Stable Diffusion prompts for every episode (meta-prompting) and season "
            "(self-ask, 5 styles) of a series with an LLM, render them, and keep prompts and "
            "images in the catalog under the data folder. Nothing is redone that is already "
            "there. The prompt library has its own command: `dataprep.py library "
            "import|search|index|status` (`dataprep.py library --help` for its flags)."
        ),
        epilog=(
            "LLM: an OpenAI-compatible server when OPENAI_API_KEY or OPENAI_BASE_URL is set "
            "(OpenAI, Ollama, vLLM, llama.cpp server, LM Studio), else the embedded "
            "Qwen2.5-Coder-1.5B model on the CPU. Settings are looked up in this order: flag, "
            f"environment variable ({', '.join(sorted(set(ENV_VARS.values())))}), studio.toml, "
            "default."
        ),
    )
    data = parser.add_argument_group("series data")
    data.add_argument(
        "--data",
        dest="series",
        type=Path,
        metavar="PATH",
        help="folder with episodes.csv [seasons.csv characters.csv], a JSON file, or "
        "an episodes CSV (default: the bundled Sherlock Holmes sample)",
    )
    data.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="read schema field FIELD from column COLUMN, in every table "
        "(repeatable), e.g. --map summary=resumo --map episode=episodio",
    )
    pick = parser.add_argument_group("what to make")
    pick.add_argument(
        "--seasons",
        type=parse_seasons,
        metavar="N[,N]",
        help="only these seasons (their episodes and season posters)",
    )
    pick.add_argument(
        "--episodes", type=parse_episode_ids, metavar="S1E3[,2x05]", help="only these episodes"
    )
    pick.add_argument(
        "--only",
        choices=["all", "episodes", "seasons", "characters"],
        default="all",
        help="episode images, season posters, character looks and portraits, or all (default)",
    )
    pick.add_argument(
        "--characters",
        choices=["cast", "all", "none"],
        help="whose looks and portraits to make: cast = the characters table and everyone in 2 "
        "or more episodes (default), all, or none",
    )
    pick.add_argument("--images-per-episode", type=int, metavar="N", help="images per episode (1)")
    pick.add_argument(
        "--candidates",
        type=int,
        metavar="N",
        help="render N seeds per episode and make the one with the best CLIP score against its "
        "prompt the cover; all are kept (needs --clip-model; 1)",
    )
    pick.add_argument("--dry-run", action="store_true", help="write and print the prompts only")
    pick.add_argument(
        "--force", action="store_true", help="ignore the caches: ask the LLM and render again"
    )
    models = parser.add_argument_group("models")
    models.add_argument("--llm-model", help="model name on the LLM server")
    models.add_argument(
        "--llm-base-url",
        help="OpenAI-compatible server URL, e.g. http://localhost:11434/v1 for Ollama",
    )
    models.add_argument("--llm-seed", type=int, help="LLM sampling seed (1234)")
    models.add_argument(
        "--llm-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds to wait for one LLM answer; a server that never answers is given up on "
        "after 3 tries (120)",
    )
    models.add_argument(
        "--image-model",
        help="hub id, diffusers folder, .safetensors file, "
        "'demo' or 'auto' (default: SD 1.5 if available, else the demo model)",
    )
    models.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    models.add_argument(
        "--clip-model",
        metavar="PATH",
        help="CLIP model (hub id or folder): every new image gets a CLIP score against its "
        "prompt and a failure-mode check; ranks --candidates",
    )
    models.add_argument(
        "--ip-adapter",
        metavar="PATH",
        help="IP-Adapter weights (hub id or folder, optionally :subfolder:weight_name): each "
        "character's portrait then conditions the episode images they are in",
    )
    models.add_argument(
        "--reference-scale",
        type=float,
        metavar="S",
        help="how strongly a portrait conditions an image with --ip-adapter, 0-1.5 (0.6)",
    )
    models.add_argument(
        "--scene-references",
        type=int,
        metavar="N",
        help="with --ip-adapter, how many of an image's characters (the most important first) "
        "condition it with their portraits, each on its side of the image, 1-3 (1)",
    )
    render = parser.add_argument_group("rendering")
    render.add_argument(
        "--sampler",
        type=parse_sampler,
        metavar="NAME",
        help=f"one of: {', '.join(SCHEDULERS)} (DPM++ 2M Karras); AUTOMATIC1111's and "
        "ComfyUI's names and ids (k_euler_a, dpmpp_2m_karras) are read as these",
    )
    render.add_argument("--steps", type=int, help="sampling steps (25)")
    render.add_argument("--cfg", type=float, help="guidance scale (7)")
    render.add_argument("--size", type=parse_size, metavar="WxH", help="image size (512x512)")
    render.add_argument(
        "--seed",
        type=int,
        help="base seed; each image's seed derives from it (42); -1: a random one, drawn once "
        "per run and printed",
    )
    render.add_argument("--batch-size", type=int, help="prompts per pipeline call on a GPU (4)")
    render.add_argument(
        "--fast-path",
        choices=["auto", "on", "off"],
        help="the fast CUDA path: compiled UNet, fused QKV, batch buckets (auto: on CUDA)",
    )
    render.add_argument(
        "--compile-mode",
        choices=COMPILE_MODES,
        help="torch.compile's mode for the fast path (default)",
    )
    render.add_argument(
        "--compile-scope",
        choices=COMPILE_SCOPES,
        help="the whole UNet, or its repeated blocks only (regional: quicker to compile)",
    )
    render.add_argument(
        "--fp8", choices=FP8_CHOICES, help="experiment: the UNet's linear layers in float8 (off)"
    )
    render.add_argument(
        "--step-cache",
        type=int,
        metavar="N",
        help="DeepCache-style: the UNet's deep blocks every Nth step only; faster, some quality "
        "lost (0: off)",
    )
    scale = parser.add_argument_group("scaling out")
    scale.add_argument(
        "--llm-concurrency",
        type=int,
        metavar="N",
        help="LLM calls at once (0: as many as the server sustains, 1 for the embedded model)",
    )
    scale.add_argument(
        "--executor",
        choices=["local", "ray"],
        help="render here (local, the default) or on Ray workers (needs requirements-ray.txt)",
    )
    scale.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the Ray cluster: host:port, ray://host:port or auto (default: start one here)",
    )
    scale.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="Ray render workers (0: one per GPU of the cluster, 1 without GPUs)",
    )
    parser.add_argument(
        "--recover",
        action="store_true",
        help="rebuild a damaged or lost catalog from the images' own metadata (the old file is "
        "kept aside), then exit",
    )
    parser.add_argument(
        "--out",
        dest="data_dir",
        type=Path,
        metavar="DIR",
        help="where the catalog and images go (default: data/)",
    )
    return parser


def _print_summary(summary, settings, issues: list) -> None:
    def say(line: str = "") -> None:
        print(line, file=sys.stderr)

    say()
    if summary.dry_run:
        for label, spec in summary.prompts:
            say(f"{label}: {spec.prompt}\n    negative: {spec.negative_prompt}")
    say(
        f"Prompts: {summary.prompts_written} written, {summary.prompts_cached} from the cache "
        f"({summary.llm_calls} LLM calls)."
    )
    if not summary.dry_run:
        placeholder = " (PLACEHOLDERS from the demo model)" if summary.placeholder else ""
        say(
            f"Images:  {summary.images_rendered} rendered, {summary.images_cached} from the "
            f"catalog{placeholder}."
        )
    for note in summary.notes:
        say(f"Note: {note}")
    if summary.repairs:
        say(f"Repaired LLM answers: {len(summary.repairs)}.")
        for repair in summary.repairs[:10]:
            say(f"  - {repair}")
    skipped = sum(issue.skipped for issue in issues)
    if skipped:
        say(f"Skipped rows in the series data: {skipped} (listed above).")
    if len(issues) > skipped:
        say(f"Shortened texts in the series data: {len(issues) - skipped} (kept; listed above).")
    if summary.failed:
        say(f"Failed: {len(summary.failed)}")
        for failure in summary.failed:
            say(f"  - {failure}")
    if summary.nothing_done:
        say("Nothing to do: everything was already in the catalog (0 LLM calls, 0 renders).")
    stages = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in summary.stages.items())
    if summary.alongside and summary.llm_calls and summary.stages.get("render"):
        stages += "; the images were drawn while the LLM wrote, so these overlap"
    say(
        f"Time: {summary.seconds:.1f} s{f' ({stages})' if stages else ''}. Catalog and images: "
        f"{settings.data_dir.resolve()}"
    )


def os_error_message(exc: OSError, data_dir: Path | None) -> str:
    """An OSError no library call turned into a StudioError, naming its file, else the data
    folder; a full disk (or a file-size limit) says what to do."""
    from studio.workflows.batch import WRITE_ADVICE, write_failure

    data_dir = data_dir or Path("data")
    if exc.errno in WRITE_ADVICE:
        return write_failure(exc, data_dir)
    return f"cannot use {exc.filename or data_dir.resolve()}: {exc.strerror or exc}."


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    started = time.perf_counter()
    out = data_dir = None  # the --out given, and the data folder once the settings are known
    try:
        library_argv = library_arguments(argv)
        if library_argv is not None:
            args = build_library_parser().parse_args(library_argv)
            out = data_dir = args.data_dir
            settings = library_settings(args)
            data_dir = settings.data_dir
            return library_command(args, settings)
        args = build_parser().parse_args(argv)
        out = data_dir = args.data_dir
        settings = job_settings(args)
        data_dir = settings.data_dir
        return run(args, settings)
    except StudioError as exc:
        print(f"Error: {cli_message(str(exc), out)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder that cannot be used, a full disk
        print(f"Error: {cli_message(os_error_message(exc, data_dir), out)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\nStopped after {time.perf_counter() - started:.0f} s; what was finished is kept "
            "and the next run resumes from there.",
            file=sys.stderr,
        )
        return 130


def recover(data_dir: Path) -> int:
    from studio.catalog.recovery import recover_catalog

    print(f"Rebuilding the catalog in {data_dir.resolve()} from its images…", file=sys.stderr)
    report = recover_catalog(data_dir)
    for line in report.lines():
        print(line, file=sys.stderr)
    for path in report.unreadable[:10]:
        print(f"  not recovered (no studio metadata): {path}", file=sys.stderr)
    return 0


def index_library(studio, summary) -> None:
    """Make the job's new prompts and images searchable in the prompt library; a library that
    cannot be reached is a note, never a failed job."""
    progress, close = library_progress()
    try:
        added = studio.library.sync(on_progress=progress)
    except StudioError as exc:
        summary.notes.append(f"The prompt library was not updated: {cli_message(str(exc))}")
        return
    finally:
        close()
    if added:
        summary.notes.append(f"Prompt library: {added} new prompts and images are searchable.")


def job_settings(args: argparse.Namespace) -> Settings:
    """The settings, with the flags given first (and each setting's flag, for messages)."""
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    if args.size:
        overrides["width"], overrides["height"] = args.size
    overrides["_sources"] = {name: flag_of(name) for name in overrides}
    return load_settings(overrides)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from studio.core.dataset import load_series, parse_mapping
    from studio.llm.choice import backend_description
    from studio.workflows.batch import Selection, run_job

    if args.recover:
        return recover(settings.data_dir)
    series, issues = load_series(settings.series, parse_mapping(args.map))
    for issue in issues:
        print(issue, file=sys.stderr)
    print(
        f"Series {series.title!r}: {len(series.seasons)} seasons, {len(series.episodes)} "
        f"episodes, {len(series.characters)} characters.",
        file=sys.stderr,
    )
    # Before the image model is loaded and the catalog created: is there anything to make?
    selection = Selection(args.seasons, args.episodes, args.only)
    for note in selection.unknown(series):
        print(f"WARNING: {note}", file=sys.stderr)

    from studio.api import Studio
    from studio.images.executors import open_executor
    from studio.llm.choice import choose_backend, default_concurrency
    from studio.llm.embedded import embedded_build_tip
    from studio.workflows.estimate import estimate_work
    from studio.writing.quality import check_catalog

    with Studio(settings, on_status=lambda line: tqdm.write(line, file=sys.stderr)) as studio:
        backend = studio.backend
        for note in backend.notes:  # once, here, before the work: the summary says PLACEHOLDERS
            print(f"WARNING: {cli_message(note)}", file=sys.stderr)
        # Before any LLM call: a Ray cluster that does not answer leaves the catalog untouched.
        executor = None if args.dry_run else open_executor(settings, backend)
        where = executor.describe() if hasattr(executor, "describe") else "here"
        print(
            f"Image model: {backend.label} on {backend.device}, rendering {where}. "
            f"LLM: {backend_description(settings)}, {default_concurrency(settings)} at once.",
            file=sys.stderr,
        )
        if choose_backend(settings).kind == "embedded" and (tip := embedded_build_tip()):
            print(f"Tip: {tip}", file=sys.stderr)

        def print_estimate() -> None:
            estimate = estimate_work(
                series,
                selection,
                settings,
                studio.llm,
                studio.images,
                args.force,
                args.dry_run,
                executor,
            )
            if not estimate.nothing:
                print(estimate.line(), file=sys.stderr)

        try:
            summary = run_job(
                series,
                selection,
                settings,
                studio.llm,
                studio.images,
                dry_run=args.dry_run,
                force=args.force,
                progress=tqdm,
                executor=executor,
                on_start=print_estimate,
            )
        finally:
            if executor is not None:
                executor.close()
        if not args.dry_run:
            index_library(studio, summary)
        quality = check_catalog(studio.store, series, backend.count_tokens)  # the mapped series
    _print_summary(summary, settings, issues)
    for line in quality.lines(limit=10):
        print(line, file=sys.stderr)
    return 1 if summary.failed else 0
