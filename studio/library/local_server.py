"""A PostgreSQL server with pgvector on this machine, for trying the shared prompt library.

    python -m studio.library.local_server ~/library-server   # prints the URL; Ctrl-C stops it
    export STUDIO_LIBRARY_DB='postgresql://...'               # the URL it printed

It runs PostgreSQL through pgserver in FOLDER (made if missing, reused after), enables pgvector,
makes the library's tables, prints the URL for library_db (STUDIO_LIBRARY_DB) and waits for Ctrl-C
or a kill, which stop the server. A team runs one server for everyone instead (see
`studio.library.backends.postgres` and docs/prompt-library.md).

Only the folder's owner gets in, with a password: pgserver makes its clusters with `trust`
authentication (any local user would be a superuser, and a superuser can run programs as the
server's user), so every start locks the server down before anything else uses it: a generated
password in FOLDER/pgpass (libpq's password file, 0600; the URL names the file and never holds
the password), scram-sha-256 for every connection in pg_hba.conf, and in postgresql.conf no TCP
port and a socket only its owner can open. The very first start of a folder runs for a moment
with pgserver's `trust`, on a socket in the folder, which initdb makes 0700 (a folder whose path
is too long for a socket there is refused, as pgserver would put it in a shared folder instead).
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql

from studio.core.errors import LibraryServerError
from studio.library.backends.postgres import CONNECT_TIMEOUT, connect

SOCKET_PATH_MAX = 103  # bytes in a unix socket's path (macOS; Linux allows 107)
ROLE = "postgres"  # the superuser pgserver makes; the library's tables belong to it
PASSWORD_FILE = "pgpass"  # in the folder: libpq's password file format, owner-only (0600)
HBA = """\
# Written by studio.library.local_server at every start: a password for every connection.
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 scram-sha-256
host    all       all   127.0.0.1/32  scram-sha-256
host    all       all   ::1/128       scram-sha-256
"""
BEGIN = "# BEGIN studio.library.local_server (written at every start)"
END = "# END studio.library.local_server"
SETTINGS = f"""\
{BEGIN}
listen_addresses = ''                   # no TCP port: the unix socket only
unix_socket_permissions = 0700          # only the server's owner opens the socket
password_encryption = 'scram-sha-256'
{END}
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Start PostgreSQL with pgvector (pgserver) in a folder, print the URL, wait for Ctrl-C."""
    parser = argparse.ArgumentParser(
        prog="python -m studio.library.local_server",
        description="Run a PostgreSQL server with pgvector on this machine for the prompt "
        "library (library_db, STUDIO_LIBRARY_DB) until Ctrl-C; only you can connect, with the "
        "password it keeps in FOLDER/pgpass. A team runs one server for everyone instead, e.g. "
        "the pgvector/pgvector Docker image (see docs/prompt-library.md).",
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
    socket = folder / ".s.PGSQL.5432"
    if len(os.fsencode(socket)) > SOCKET_PATH_MAX and not (folder / PASSWORD_FILE).exists():
        # pgserver would put the socket of a cluster still open to all (trust) in a shared folder
        print(f"Error: {folder} is too long a path for PostgreSQL's socket ({socket}, at most "
              f"{SOCKET_PATH_MAX} bytes); give a shorter one.", file=sys.stderr)  # fmt: skip
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
        try:
            url = lock_down(server.get_postmaster_info(), folder)
            connect(url).close()  # pgvector enabled, the tables made
        except LibraryServerError as exc:
            print(f"Error: {exc}", file=sys.stderr)
            return 1
        print(f"The prompt library's server is running, its data in {folder}.")
        print(f"Only you can connect: its password is in {folder / PASSWORD_FILE} (readable by "
              "you alone), which the URL names.")  # fmt: skip
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


def lock_down(info: Any, folder: Path) -> str:
    """Give the running server (pgserver's `PostmasterInfo`) a password kept in the folder,
    scram-sha-256 for every connection and an owner-only socket; the URL to connect with."""
    passfile = folder / PASSWORD_FILE
    password = _password(passfile)
    if info.socket_dir is not None:
        where = f"host={quote(str(info.socket_dir), safe='/')}"
    else:  # Windows: pgserver listens on 127.0.0.1 there
        where = f"host={info.hostname}&port={info.port}"
    url = f"postgresql://{ROLE}@/{ROLE}?{where}&passfile={quote(str(passfile), safe='/')}"
    try:
        # The first start of a folder still runs with pgserver's trust; later ones ask for the
        # password, which libpq reads from the passfile.
        with psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT) as pg:
            # The SCRAM verifier is made here: the password itself never reaches the server.
            verifier = pg.pgconn.encrypt_password(
                password.encode(), ROLE.encode(), b"scram-sha-256"
            )
            pg.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(ROLE), sql.Literal(verifier.decode())
                )
            )
            hba_file = Path(pg.execute("SHOW hba_file").fetchone()[0])
            config_file = Path(pg.execute("SHOW config_file").fetchone()[0])
            changed = _rewrite(hba_file, HBA)
            changed |= _rewrite(config_file, with_settings(config_file.read_text()))
            if changed:  # the log says unix_socket_permissions waits for a restart: see below
                pg.execute("SELECT pg_reload_conf()")
    except psycopg.Error as exc:
        cause = " ".join(str(exc).split())
        raise LibraryServerError(
            f"The server in {folder} cannot be given its password ({cause}). When it refuses "
            f"the one in {passfile}, put back the file it was first started with."
        ) from None
    if info.socket_path is not None:
        # unix_socket_permissions takes effect at the next start; this one's socket now
        os.chmod(info.socket_path, 0o700)
    return url


def with_settings(config: str) -> str:
    """postgresql.conf's text with this module's settings as its last word."""
    pattern = re.compile(rf"\n*{re.escape(BEGIN)}\n.*?{re.escape(END)}\n?", re.DOTALL)
    kept = pattern.sub("\n", config).rstrip("\n")
    return f"{kept}\n\n{SETTINGS}"


def _password(passfile: Path) -> str:
    """The server's password from the passfile (`*:*:*:postgres:password`), made the first time;
    the file kept readable by its owner only, as libpq requires."""
    try:
        line = passfile.read_text().strip()
    except FileNotFoundError:
        password = secrets.token_urlsafe(32)  # letters, digits, - and _: nothing to escape
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"*:*:*:{ROLE}:{password}\n")
        return password
    if passfile.stat().st_mode & 0o077:
        passfile.chmod(0o600)
    fields = line.split(":")
    if len(fields) != 5 or fields[3] != ROLE or not fields[4]:
        raise LibraryServerError(
            f"{passfile} is not the password file this server wrote (`*:*:*:{ROLE}:password`); "
            "put back the one it was first started with."
        )
    return fields[4]


def _rewrite(path: Path, text: str) -> bool:
    """Replace `path`'s text atomically, keeping its owner and mode; whether it changed."""
    if path.read_text() == text:
        return False
    before = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        if (before.st_uid, before.st_gid) != (os.getuid(), os.getgid()):
            os.chown(tmp, before.st_uid, before.st_gid)  # root, for pgserver's own OS user
        os.chmod(tmp, stat.S_IMODE(before.st_mode))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


if __name__ == "__main__":
    sys.exit(main())
