"""A PostgreSQL server with pgvector on this machine, for trying the shared prompt library.

    python -m studio.library.local_server ~/library-server   # prints the URL; Ctrl-C stops it
    export STUDIO_LIBRARY_DB='postgresql://...'               # the URL it printed

It runs PostgreSQL through pgserver in FOLDER (made if missing, reused after), enables pgvector,
makes the library's tables, prints the URL for library_db (STUDIO_LIBRARY_DB) and waits for Ctrl-C
or a kill, which stop the server. A team runs one server for everyone instead (see
`studio.library.backends.postgres`).
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from studio.core.errors import LibraryServerError
from studio.library.backends.postgres import connect


def main(argv: Sequence[str] | None = None) -> int:
    """Start PostgreSQL with pgvector (pgserver) in a folder, print the URL, wait for Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m studio.library.local_server",
        description="Run a PostgreSQL server with pgvector on this machine for the prompt "
        "library (library_db, STUDIO_LIBRARY_DB) until Ctrl-C. A team runs one server for "
        "everyone instead, e.g. the pgvector/pgvector Docker image.",
    )
    parser.add_argument(
        "folder", type=Path, help="where the server keeps its data; made if missing, reused after"
    )
    folder = parser.parse_args(argv).folder.expanduser().resolve()
    try:
        import pgserver
    except ImportError:
        print("Error: pgserver is not installed; run `pip install pgserver==0.1.4`.",
              file=sys.stderr)  # fmt: skip
        return 1
    if not folder.parent.is_dir():
        print(f"Error: {folder.parent} does not exist; give a folder in one that does.",
              file=sys.stderr)  # fmt: skip
        return 1
    # Ctrl-C (even when started in the background, which ignores it) and a kill stop the server.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        server = pgserver.get_server(folder, cleanup_mode="stop")
    except Exception as exc:  # pgserver's own failures: initdb, pg_ctl, permissions
        print(f"Error: PostgreSQL could not start in {folder} ({exc}); see {folder / 'log'}.",
              file=sys.stderr)  # fmt: skip
        return 1
    try:
        url = server.get_uri()
        try:
            connect(url).close()  # pgvector enabled, the tables made
        except LibraryServerError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
        print(f"The prompt library's server is running, its data in {folder}.")
        print("For the studio on this machine, set:")
        print(f"    export STUDIO_LIBRARY_DB='{url}'")
        print("Ctrl-C stops it; start it again with the same folder to go on.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("Stopping the server.")
        return 0
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
