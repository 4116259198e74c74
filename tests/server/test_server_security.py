"""The server's defaults: credentials on every endpoint once set (Basic as A1111 clients send them,
Bearer as the openai client does), a public bind refused without them, bodies capped, and no
password in a message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from studio.core.errors import ConfigError
from studio.server.auth import parse_accounts
from studio.server.background import BackgroundServer
from tests.server.conftest import server_settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def guarded(tmp_path, shared_cache):
    accounts = parse_accounts("alice:s3cret-pass,bob:other-pass")
    with BackgroundServer(server_settings(tmp_path, shared_cache), accounts,
                          max_body=200_000) as running:  # fmt: skip
        yield running


@pytest.mark.parametrize("path", ["/sdapi/v1/sd-models", "/v1/models", "/docs", "/openapi.json",
                                  "/studio/v1/jobs"])  # fmt: skip
def test_every_endpoint_needs_credentials(guarded, path):
    url = guarded.url + path
    assert requests.get(url).status_code == 401
    assert requests.get(url, auth=("alice", "wrong")).status_code == 401
    assert requests.get(url, auth=("mallory", "s3cret-pass")).status_code == 401
    assert requests.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert requests.get(url, headers={"Authorization": "Basic %%%"}).status_code == 401
    assert requests.get(url, auth=("alice", "s3cret-pass")).status_code == 200
    assert requests.get(url, auth=("bob", "other-pass")).status_code == 200
    assert requests.get(url, headers={"Authorization": "Bearer s3cret-pass"}).status_code == 200


def test_the_401_is_in_each_apis_shape_and_names_no_password(guarded):
    a1111 = requests.get(guarded.url + "/sdapi/v1/options", auth=("alice", "wrong"))
    assert a1111.headers["www-authenticate"].startswith("Basic")
    assert "Authentication required" in a1111.json()["detail"]
    openai = requests.get(guarded.url + "/v1/models").json()
    assert openai["error"]["type"] == "authentication_error"
    for response in (a1111, requests.get(guarded.url + "/v1/models")):
        assert "s3cret" not in response.text and "other-pass" not in response.text


def test_bodies_over_the_cap_get_413_declared_or_streamed(guarded):
    auth = ("alice", "s3cret-pass")
    big = b'{"prompt": "' + b"x" * 300_000 + b'"}'
    url = guarded.url + "/sdapi/v1/txt2img"
    declared = requests.post(url, data=big, auth=auth, headers={"content-type": "application/json"})
    assert declared.status_code == 413 and "MB" in declared.json()["detail"]

    def chunks():
        for start in range(0, len(big), 50_000):
            yield big[start : start + 50_000]

    streamed = requests.post(url, data=chunks(), auth=auth,
                             headers={"content-type": "application/json"})  # fmt: skip
    assert streamed.status_code == 413
    small = requests.post(url, json={"prompt": "ok", "width": 64, "height": 64, "steps": 2},
                          auth=auth)  # fmt: skip
    assert small.status_code == 200


def test_malformed_credentials_are_refused_without_echoing_the_password():
    with pytest.raises(ConfigError) as caught:
        parse_accounts("alice:pw1,bobhasnocolon-secretword")
    assert "entry 2" in str(caught.value) and "secretword" not in str(caught.value)
    assert "pw1" not in repr(parse_accounts("alice:pw1"))


def serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "serve.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)  # fmt: skip


def test_a_public_bind_without_credentials_is_refused():
    done = serve("--host", "0.0.0.0", "--image-model", "demo")
    assert done.returncode == 2
    assert "--api-auth" in done.stderr and "0.0.0.0" in done.stderr
    bad = serve("--host", "0.0.0.0", "--api-auth", "nocolon")
    assert bad.returncode == 2 and "USER:PASS" in bad.stderr


def test_serve_py_starts_answers_and_stops(tmp_path):
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "serve.py"), "--port", str(port), "--image-model", "demo",
         "--out", str(tmp_path / "out"), "--api-auth", "alice:pw-Zq81"],
        stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/sdapi/v1/sd-models",
                                        auth=("alice", "pw-Zq81"), timeout=2)  # fmt: skip
                break
            except requests.ConnectionError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()[0]["model_name"] == "demo"
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    assert "credentials required" in stderr and "pw-Zq81" not in stderr
