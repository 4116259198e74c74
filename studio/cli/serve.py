"""`python serve.py`: the studio as an HTTP image server, AUTOMATIC1111's and OpenAI's APIs and the
series' own, on one port (FastAPI on uvicorn).

    python serve.py                                   # http://127.0.0.1:7860, this machine only
    python serve.py --host 0.0.0.0 --api-auth alice:s3cret --out my_show_data

Settings come through the one lookup (flags, STUDIO_* environment variables, studio.toml,
defaults), as for `dataprep.py` and the dashboard. A host other than loopback needs credentials:
without `--api-auth` (or STUDIO_API_AUTH) the server refuses to start (exit 2).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from studio.cli.dataprep import parse_sampler, parse_size
from studio.cli.flags import OneLineParser, cli_message, flag_of
from studio.core.config import COMPILE_MODES, COMPILE_SCOPES, Settings, load_settings
from studio.core.errors import ConfigError, StudioError
from studio.core.remote import is_loopback

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860  # as AUTOMATIC1111, so its clients find the studio where they look first
AUTH_ENV = "STUDIO_API_AUTH"  # --api-auth from the environment: kept out of `ps` listings


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="serve.py",
        description=(
            "Serve the studio over HTTP: AUTOMATIC1111's API (/sdapi/v1: webuiapi, Open WebUI, "
            "painting plugins), OpenAI's Images API (/v1: the openai client, Open WebUI) and the "
            "series' own endpoints (/studio/v1); OpenAPI docs at /docs. Every image lands in the "
            "catalog, cached like the dashboard's."
        ),
        epilog=(
            f"Credentials can come from {AUTH_ENV} instead of --api-auth (kept out of process "
            "listings). Other settings: flag, STUDIO_* environment variable, studio.toml, default."
        ),
    )
    net = parser.add_argument_group("network")
    net.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on ({DEFAULT_HOST}: this machine only; another address needs "
        "--api-auth)",
    )
    net.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"({DEFAULT_PORT})")
    net.add_argument(
        "--api-auth",
        metavar="USER:PASS[,USER:PASS]",
        help="require these credentials on every endpoint: HTTP Basic, or `Authorization: Bearer "
        "PASS` (the openai client's API key)",
    )
    net.add_argument(
        "--max-body-mb",
        type=float,
        default=50,
        metavar="MB",
        help="largest request body accepted (50); bigger ones get 413",
    )
    studio = parser.add_argument_group("studio settings")
    studio.add_argument("--out", dest="data_dir", type=Path, metavar="DIR",
                        help="the catalog and images (default: data/)")  # fmt: skip
    studio.add_argument("--data", dest="series", type=Path, metavar="PATH",
                        help="the series data (default: the bundled sample)")  # fmt: skip
    studio.add_argument("--image-model", help="hub id, diffusers folder, .safetensors, 'demo' or "
                        "'auto'")  # fmt: skip
    studio.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    studio.add_argument("--sampler", type=parse_sampler, metavar="NAME",
                        help="the default sampler")  # fmt: skip
    studio.add_argument("--steps", type=int, help="default sampling steps (25)")
    studio.add_argument("--cfg", type=float, help="default guidance scale (7)")
    studio.add_argument("--size", type=parse_size, metavar="WxH", help="default size (512x512)")
    studio.add_argument("--batch-size", type=int, help="images per pipeline call (4)")
    studio.add_argument("--fast-path", choices=["auto", "on", "off"])
    studio.add_argument("--compile-mode", choices=COMPILE_MODES)
    studio.add_argument("--compile-scope", choices=COMPILE_SCOPES)
    studio.add_argument("--ip-adapter", metavar="PATH", help="IP-Adapter weights")
    studio.add_argument("--clip-model", metavar="PATH", help="CLIP model for scores")
    studio.add_argument("--llm-model", help="model name on the LLM server")
    studio.add_argument("--llm-base-url", help="OpenAI-compatible LLM server URL")
    return parser


SETTING_FLAGS = ("data_dir", "series", "image_model", "device", "sampler", "steps", "cfg",
                 "batch_size", "fast_path", "compile_mode", "compile_scope", "ip_adapter",
                 "clip_model", "llm_model", "llm_base_url")  # fmt: skip


def server_settings(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name) for name in SETTING_FLAGS}
    overrides = {name: value for name, value in overrides.items() if value is not None}
    if args.size:
        overrides["width"], overrides["height"] = args.size
    overrides["_sources"] = {name: flag_of(name) for name in overrides}
    return load_settings(overrides)


def check_binding(host: str, auth: str | None) -> None:
    """A server reachable from other machines must ask for credentials."""
    if not is_loopback(host) and not auth:
        raise ConfigError(
            f"--host {host} would let anyone who can reach this machine make images and read "
            f"the catalog; give --api-auth USER:PASS (or {AUTH_ENV}) too, or keep the default "
            f"--host {DEFAULT_HOST} (this machine only)."
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    try:
        from studio.server.auth import parse_accounts

        auth = args.api_auth or os.environ.get(AUTH_ENV) or None
        check_binding(args.host, auth)
        accounts = parse_accounts(auth) if auth else ()
        if not 0 < args.port < 65536:
            raise ConfigError(f"--port {args.port}: not a port; give 1-65535.")
        if not args.max_body_mb > 0:
            raise ConfigError(f"--max-body-mb {args.max_body_mb:g}: give a size above 0.")
        settings = server_settings(args)
        return serve(settings, args.host, args.port, accounts, int(args.max_body_mb * 1024**2))
    except StudioError as exc:
        print(f"Error: {cli_message(str(exc), args.data_dir)}", file=sys.stderr)
        return 2


def serve(settings: Settings, host: str, port: int, accounts, max_body: int) -> int:
    import uvicorn

    from studio.server.app import create_app
    from studio.server.state import ServerState

    state = ServerState(settings, on_status=lambda line: print(line, file=sys.stderr))
    app = create_app(state, accounts, max_body)
    shown = f"[{host}]" if ":" in host else host
    print(
        f"Serving {settings.image_model!r} from {settings.data_dir.resolve()} on "
        f"http://{shown}:{port}: AUTOMATIC1111 /sdapi/v1, OpenAI /v1, series /studio/v1, docs "
        f"/docs; {'credentials required' if accounts else 'no credentials (this machine only)'}.",
        file=sys.stderr,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        state.close()
    return 0
