"""The local server's settings and password file, without starting PostgreSQL (the server itself
is tested in test_library_server.py)."""

from __future__ import annotations

import stat

import pytest

from studio.core.errors import LibraryServerError
from studio.library import local_server
from studio.library.local_server import BEGIN, PASSWORD_FILE, SETTINGS, with_settings


def test_the_settings_end_postgresql_conf_once_however_often_written():
    config = "#listen_addresses = 'localhost'\nmax_connections = 100\n"
    once = with_settings(config)
    assert once.startswith(config) and once.endswith(SETTINGS)
    assert with_settings(once) == once
    assert with_settings(once + "work_mem = 8MB\n").count(BEGIN) == 1
    assert with_settings(once + "work_mem = 8MB\n").endswith(SETTINGS)


def test_the_password_file_is_made_once_for_its_owner_only(tmp_path):
    passfile = tmp_path / PASSWORD_FILE
    password = local_server._password(passfile)
    assert len(password) >= 32 and local_server._password(passfile) == password
    assert passfile.read_text() == f"*:*:*:postgres:{password}\n"  # libpq's passfile format
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    passfile.chmod(0o644)  # libpq ignores a file others can read
    assert local_server._password(passfile) == password
    assert stat.S_IMODE(passfile.stat().st_mode) == 0o600
    passfile.write_text("not a passfile\n")
    with pytest.raises(LibraryServerError, match="not the password file"):
        local_server._password(passfile)


def test_a_new_folder_too_long_for_its_socket_is_refused(tmp_path, capsys):
    pytest.importorskip("pgserver", reason="the command needs pgserver")
    folder = tmp_path / ("x" * 120)
    assert local_server.main([str(folder)]) == 1
    assert "too long a path for PostgreSQL's socket" in capsys.readouterr().err
    assert not folder.exists()  # nothing started
