"""The prompt library on a PostgreSQL server with pgvector (library_db): search by meaning in any
language, filters, CSV import and reverse image search through the same API as the catalog's
library, one library shared by two catalogs, the HNSW index in use, and clear connection errors."""

from __future__ import annotations

import csv
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from studio.core.errors import LibraryServerError, StudioError
from studio.core.remote import mask_password
from studio.core.targets import Target
from studio.library.backends import postgres
from studio.library.backends.postgres import ServerLibrary, connect, index_name, nearest_query
from tests.support.catalogs import small_studio

pytestmark = pytest.mark.postgres

PROMPTS = {
    "castle": "a dark castle on a hill at night, oil painting",
    "detective": "portrait of a detective in a rainy street, film noir",
    "fruit": "a bowl of fruit on a wooden table, still life",
}
TARGETS = {
    "castle": Target(),  # the Studio's
    "detective": Target("episode", 2, 1),
    "fruit": Target("season", 2, None, "noir"),
}
LIGHTHOUSE = "a lighthouse on a cliff at dawn, seagulls"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    pgserver = pytest.importorskip("pgserver", reason="pgserver runs the test server")
    folder = tmp_path_factory.mktemp("library-server") / "pg"
    try:
        server = pgserver.get_server(folder, cleanup_mode="stop")
    except Exception as exc:  # any reason it cannot run here: no shared memory, no user...
        pytest.skip(f"pgserver cannot start PostgreSQL here: {exc}")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="module")
def studio(server_url, tmp_path_factory, shared_cache):
    folder = tmp_path_factory.mktemp("member-a")
    with small_studio(folder, shared_cache, library_db=server_url) as made:
        for seed, (name, prompt) in enumerate(PROMPTS.items()):
            made.generate(prompt, seed=seed, target=TARGETS[name])
        yield made


def top(hits) -> str:
    return hits[0].text if hits else ""


@pytest.mark.parametrize(
    ("query", "expected"),
    [("a castle at night", "castle"), ("detetive na chuva", "detective")],  # English, Portuguese
)
def test_search_by_meaning_finds_the_right_prompt_on_the_server(studio, query, expected):
    hits = studio.library.search(query, k=3)
    assert isinstance(studio.library.db, ServerLibrary)
    assert top(hits) == PROMPTS[expected]
    assert hits[0].score > hits[1].score
    assert studio.store.find_image(hits[0].image_key).prompt == PROMPTS[expected]
    assert studio.library.stats()["waiting"] == 0


def test_filters_narrow_the_results(studio):
    assert [hit.text for hit in studio.library.search("noir", k=10, target="studio")] == [
        PROMPTS["castle"]
    ]
    hits = studio.library.search("castle at night", k=10, target="episode", season=2)
    assert [hit.text for hit in hits] == [PROMPTS["detective"]]
    assert top(studio.library.search("castle", k=5, season="2", style="noir")) == PROMPTS["fruit"]
    assert studio.library.search("castle", k=5, placeholder=False) == []  # demo images only
    assert top(studio.library.search("castle", k=1, placeholder=True)) == PROMPTS["castle"]
    assert studio.library.search("castle", k=5, until="2000-01-01") == []
    with pytest.raises(StudioError, match="season filter 'two' is not a number"):
        studio.library.search("castle", season="two")


def test_an_import_adds_its_rows_once(studio, tmp_path):
    path = tmp_path / "prompts.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "prompt", "url", "width", "height", "source_site"])
        writer.writerow(["1", "a red fox in the snow, winter forest", "https://x.test/1.png",
                         "512", "768", "lexica.art"])  # fmt: skip
        writer.writerow(["2", "a glass of orange juice on a breakfast table", "", "", "", ""])
    report = studio.library.import_csv(path)
    assert (report.rows, report.added, report.embedded, report.stopped) == (2, 2, 2, False)
    hit = studio.library.search("raposa vermelha na neve", k=1)[0]
    assert hit.text == "a red fox in the snow, winter forest"
    assert (hit.item.kind, hit.item.source_site, hit.item.width) == ("import", "lexica.art", 512)
    again = studio.library.import_csv(path)
    assert (again.added, again.duplicates) == (0, 2)
    assert studio.library.stats()["import"] == 2
    found = studio.library.search("fox", k=5, source_site="lexica.art")
    assert [hit.text for hit in found] == ["a red fox in the snow, winter forest"]


def test_a_catalog_image_finds_itself_and_its_prompt(studio):
    stored = next(i for i in studio.store.images() if i.prompt == PROMPTS["fruit"])
    found = studio.library.search_image(studio.store.image_path(stored))
    assert found.images[0].image_key == stored.cache_key
    assert found.images[0].how == "file"
    assert found.prompts[0].text == PROMPTS["fruit"]


def test_two_catalogs_share_one_library_and_each_hashes_its_own_images(
    studio, server_url, tmp_path, shared_cache
):
    with small_studio(tmp_path / "data", shared_cache, library_db=server_url) as other:
        hit = other.library.search("um detetive na chuva", k=1)[0]
        assert hit.text == PROMPTS["detective"]  # the first member's prompt and image
        assert hit.image_key and other.store.find_image(hit.image_key) is None

        made = other.generate(LIGHTHOUSE, seed=7)
        assert other.library.db.sync_catalog() == 1  # pushed, not hashed yet
        assert other.library.db.sync_catalog() == 0
        assert studio.library.db.unhashed_images() == []  # not this catalog's file
        pending = other.library.db.unhashed_images()
        assert [key for _, key in pending] == [made.key]
        assert [key for _, key in other.library.db.pending_images("clip-image:test")] == [made.key]

        hit = studio.library.search("lighthouse on a cliff", k=1)[0]  # the second member's
        assert hit.text == LIGHTHOUSE and hit.image_key == made.key
        assert [key for _, key in other.library.db.unhashed_images()] == [made.key]
        other.library.sync()
        assert other.library.db.unhashed_images() == []
        copy = other.store.image_path(other.store.find_image(made.key)).read_bytes()
    found = studio.library.search_image(copy)  # by its hash and metadata: the file is not here
    assert found.prompts[0].text == LIGHTHOUSE
    assert made.key in {hit.image_key for hit in found.images}


def test_searches_use_the_spaces_hnsw_index(studio, monkeypatch):
    db = studio.library.db
    space, dim = "test:explain", 16
    vectors = np.random.default_rng(0).normal(size=(2000, dim)).astype(np.float32)
    db.add_vectors(space, list(range(1, 2001)), vectors)
    with db._server() as pg:
        pg.execute("ANALYZE library_vectors")
        plan = "\n".join(
            row[0]
            for row in pg.execute(
                sql.SQL("EXPLAIN ") + nearest_query(space, dim), (vectors[41], 10)
            )
        )
    assert f"Index Scan using {index_name(space, dim)}" in plan, plan

    assert db.nearest(space, vectors[41], 3)[0].id == 42
    assert db.nearest(space, vectors[41], 1)[0].score == pytest.approx(1.0, abs=1e-5)
    allowed = set(range(1, 2001, 3))  # 42 is not among them
    exact = db.nearest(space, vectors[41], 5, allowed)
    assert len(exact) == 5 and {m.id for m in exact} <= allowed
    monkeypatch.setattr(postgres, "EXACT_LIMIT", 0)  # through the index, then filtered
    assert [m.id for m in db.nearest(space, vectors[41], 5, allowed)] == [m.id for m in exact]
    assert [m.id for m in db.nearest(space, vectors[41], 5, {2000})] == [2000]  # all scored


def test_a_server_that_cannot_be_reached_is_named_without_its_password(tmp_path, shared_cache):
    url = "postgresql://u:secret@127.0.0.1:1/x"
    with (
        small_studio(tmp_path / "data", shared_cache, library_db=url) as made,
        pytest.raises(LibraryServerError) as caught,
    ):
        made.library.search("castle")
    message = str(caught.value)
    assert "library_db (STUDIO_LIBRARY_DB)" in message
    assert "postgresql://u:***@127.0.0.1:1/x" in message
    assert "python -m studio.library.local_server" in message and "empty" in message
    assert "secret" not in message


def test_redact_hides_passwords_in_either_place():
    assert mask_password("postgres://me:p%40ss@db:5432/lib") == "postgres://me:***@db:5432/lib"
    assert mask_password("postgresql://db/lib?user=me&password=pw&sslmode=require") == (
        "postgresql://db/lib?user=me&password=***&sslmode=require"
    )
    assert mask_password("postgresql://postgres:@/postgres?host=/tmp/x") == (
        "postgresql://postgres:@/postgres?host=/tmp/x"
    )


def test_a_user_who_cannot_enable_pgvector_is_told_what_to_ask_for(server_url):
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS plain_db")
        admin.execute("DROP ROLE IF EXISTS plain_user")
        admin.execute("CREATE ROLE plain_user LOGIN")
        admin.execute("CREATE DATABASE plain_db OWNER plain_user")
    url = server_url.replace("postgres:@/postgres?", "plain_user:@/plain_db?")
    with pytest.raises(LibraryServerError, match="CREATE EXTENSION vector") as caught:
        connect(url)
    assert "has pgvector but this user cannot enable it" in str(caught.value)
    assert "STUDIO_LIBRARY_DB" in str(caught.value)


def start_command(folder: Path) -> tuple[subprocess.Popen, str, list[str]]:
    """`python -m studio.library.local_server folder` running: the process, its URL, its lines."""
    command = [sys.executable, "-m", "studio.library.local_server", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while not any("STUDIO_LIBRARY_DB=" in line for line in lines):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(lines)
        lines.append(process.stdout.readline())
    return process, lines[-1].split("STUDIO_LIBRARY_DB=", 1)[1].strip().strip("'"), lines


def stop_command(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="module")
def local_server(server_url, tmp_path_factory):
    """The command's server (server_url first: it skips where pgserver cannot run)."""
    folder = tmp_path_factory.mktemp("local-server") / "lib"
    process, url, lines = start_command(folder)
    yield url, folder, lines
    stop_command(process)


def password_of(folder: Path) -> str:
    return (folder / "pgpass").read_text().strip().split(":")[-1]


def without_password(url: str) -> str:
    return url.split("&passfile=", 1)[0]


def test_the_local_server_asks_every_connection_for_its_password(local_server):
    url, folder, lines = local_server
    with psycopg.connect(url) as pg:
        hba = Path(pg.execute("SHOW hba_file").fetchone()[0]).read_text()
        rules = pg.execute("SELECT type, auth_method FROM pg_hba_file_rules").fetchall()
    entries = [line.split() for line in hba.splitlines() if line.strip() and line[0] != "#"]
    assert entries and all(entry[-1] == "scram-sha-256" for entry in entries), hba
    assert "trust" not in hba
    assert {method for _, method in rules} == {"scram-sha-256"}
    assert ("local", "scram-sha-256") in rules

    bare = without_password(url)  # the URL without its password file: refused
    with pytest.raises(psycopg.OperationalError, match="no password supplied"):
        psycopg.connect(bare)
    wrong = bare.replace("postgres@", "postgres:guess@")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(wrong)
    with pytest.raises(LibraryServerError, match="refuses its user or password") as caught:
        connect(wrong)
    assert "guess" not in str(caught.value) and "passfile=" in str(caught.value)
    right = bare.replace("postgres@", f"postgres:{password_of(folder)}@")
    psycopg.connect(right).close()  # the password, given in the URL instead, works


def test_the_local_server_has_an_owner_only_socket_and_no_port(local_server):
    url, folder, lines = local_server
    with psycopg.connect(url) as pg:
        config = Path(pg.execute("SHOW config_file").fetchone()[0]).read_text()
        read = dict(  # the last word of the files the server reads, for each setting
            pg.execute(
                "SELECT DISTINCT ON (name) name, setting FROM pg_file_settings WHERE name IN "
                "('listen_addresses', 'unix_socket_permissions') ORDER BY name, seqno DESC"
            ).fetchall()
        )
        listening = pg.execute("SHOW listen_addresses").fetchone()[0]
        socket = Path(pg.execute("SHOW unix_socket_directories").fetchone()[0]) / ".s.PGSQL.5432"
    assert "listen_addresses = ''" in config and "unix_socket_permissions = 0700" in config
    assert read == {"listen_addresses": "", "unix_socket_permissions": "0700"}
    assert listening == ""
    mode = socket.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o700
    assert stat.S_IMODE((folder / "pgpass").stat().st_mode) == 0o600

    password = password_of(folder)  # shown nowhere: not in the URL, its output or the log
    assert len(password) >= 32
    assert password not in "".join(lines) and "passfile=" in url
    assert password not in (folder / "log").read_text()


def test_the_library_works_with_the_url_the_command_prints(local_server, tmp_path, shared_cache):
    url, _, _ = local_server
    with small_studio(tmp_path / "data", shared_cache, library_db=url) as made:
        made.generate(LIGHTHOUSE, seed=3)
        assert isinstance(made.library.db, ServerLibrary)
        assert top(made.library.search("a lighthouse at dawn", k=1)) == LIGHTHOUSE


def test_the_command_runs_a_server_prints_its_url_and_stops_on_ctrl_c(server_url, tmp_path):
    folder = tmp_path / "lib"
    process, url, _ = start_command(folder)
    with psycopg.connect(url) as pg:  # pgvector and the tables are there
        assert pg.execute("SELECT count(*) FROM library_texts").fetchone() == (0,)
        assert pg.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone()
    assert stop_command(process) == 0
    assert not (folder / "postmaster.pid").exists()  # the server was stopped

    process, again, _ = start_command(folder)  # the same folder: the same password and URL
    try:
        assert again == url
        with psycopg.connect(url) as pg:
            assert pg.execute("SHOW unix_socket_permissions").fetchone() == ("0700",)
            assert pg.execute("SELECT count(*) FROM library_texts").fetchone() == (0,)
    finally:
        assert stop_command(process) == 0
