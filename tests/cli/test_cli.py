"""dataprep.py as a user runs it: arguments, messages, exit codes, resuming after a kill."""

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from studio.catalog.job_log import recent_jobs
from studio.catalog.store import Store
from studio.cli import dataprep, flags
from studio.cli.library import build_library_parser
from studio.core.config import PROJECT_ROOT
from studio.core.metadata import parse_parameters, read_png_metadata
from studio.llm import client as llm_client
from tests.support.fakes import FakeBackend

pytestmark = pytest.mark.e2e

SMALL = ["--size", "64x64", "--steps", "2"]


@pytest.fixture
def fake_llm(monkeypatch):
    backend = FakeBackend()
    monkeypatch.setattr(llm_client, "make_backend", lambda settings, *_: backend)
    return backend


def run(capsys, *args):
    code = dataprep.main([*args])
    return code, capsys.readouterr().err


def test_run_then_rerun_does_no_model_work(tmp_path, capsys, fake_llm):
    args = ["--out", str(tmp_path / "out"), "--episodes", "S1E1,1x02", *SMALL]
    code, err = run(capsys, *args, "--image-model", "demo")
    assert code == 0, err
    # 2 episodes and the looks and portraits of the 5 characters of the table in them
    assert "Prompts: 7 written, 0 from the cache (7 LLM calls)." in err
    assert "Images:  7 rendered, 0 from the catalog (PLACEHOLDERS from the demo model)." in err
    code, err = run(capsys, *args, "--image-model", "demo")
    assert code == 0
    assert "Prompts: 0 written, 7 from the cache (0 LLM calls)." in err
    assert "Nothing to do: everything was already in the catalog (0 LLM calls, 0 renders)." in err
    pngs = list((tmp_path / "out" / "images").rglob("*.png"))
    assert len(pngs) == 7
    parameters, provenance = read_png_metadata(pngs[0].read_bytes())
    assert parse_parameters(parameters)["Model"] == "demo-v1 (placeholder)"


def test_auto_falls_back_to_the_demo_model_with_a_warning(tmp_path, capsys, fake_llm):
    code, err = run(capsys, "--out", str(tmp_path), "--episodes", "S1E1", *SMALL)
    assert code == 0
    assert err.count("WARNING: No Stable Diffusion weights on disk") == 2  # at start and end
    assert "PLACEHOLDERS" in err


def test_dry_run_prints_prompts(tmp_path, capsys, fake_llm):
    code, err = run(
        capsys, "--out", str(tmp_path), "--episodes", "S2E3", "--dry-run", "--image-model", "demo"
    )
    assert code == 0
    assert "S02E03: detective examining a clue from The Yellow Face" in err
    assert "negative: blurry, modern cars, text" in err
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.png"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data", "/nonexistent/show"], "Error: Series data not found at /nonexistent/show"),
        (["--image-model", "/models/model.ckpt"], "only .safetensors checkpoints are loaded"),
        (["--image-model", "/models/missing.safetensors"], "does not exist"),
        (["--image-model", "nobody/no-such-model"], "not in the Hugging Face cache"),
        (["--size", "500x512"], "`width` has to be divisible by 8 but is 500; try 496"),
        (["--map", "plot"], "--map takes FIELD=COLUMN"),
        (["--image-model", ""], "`image_model` is empty; use auto, demo, a hub id"),
        (["--image-model", "./models/my-sd15"], "Image model path models/my-sd15 does not exist"),
        (["--image-model", "/srv/models/sd/v15"], "path /srv/models/sd/v15 does not exist"),
        (["--cfg", "nan"], "`cfg` has to be a number between 0 and 30 but is nan. Set by --cfg."),
        (["--llm-timeout", "0"], "`llm_timeout` has to be a positive number"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, capsys, fake_llm, args, message):
    code, err = run(capsys, "--out", str(tmp_path), *args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_bad_rows_are_listed_and_the_rest_runs(tmp_path, capsys, fake_llm):
    data = tmp_path / "eps.csv"
    data.write_text("temporada,episodio,resumo\n1,1,Uma tempestade.\n1,2,\n")
    code, err = run(
        capsys,
        "--data",
        str(data),
        "--map",
        "season=temporada",
        "--map",
        "episode=episodio",
        "--map",
        "summary=resumo",
        "--out",
        str(tmp_path / "o"),
        "--dry-run",
        "--image-model",
        "demo",
    )
    assert code == 0
    assert "skipped eps.csv:3: empty summary" in err
    assert "Prompts: 2 written" in err  # the episode and its season


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_killed_run_resumes_with_no_broken_or_duplicate_file(tmp_path, shared_cache, executor):
    if executor == "ray":
        from tests.images.test_ray_executor import ray_or_skip

        ray_or_skip()
    out = tmp_path / "out"
    env = {**os.environ, "STUDIO_CACHE_DIR": str(shared_cache), "PYTHONPATH": str(PROJECT_ROOT)}
    command = [
        sys.executable,
        "-m",
        "tests.support.fake_dataprep",
        "--out",
        str(out),
        "--seasons",
        "1",
        "--only",
        "episodes",
        "--image-model",
        "demo",
        "--executor",
        executor,
        *SMALL,
    ]
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(list((out / "images").rglob("*.png"))) >= 3:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "rendered" in finished.stderr
    store = Store(out)
    latest, killed = recent_jobs(store)  # the dashboard sees the killed run as stopped
    store.close()
    assert (latest.state, latest.executor, latest.images_done) == ("finished", executor, 12)
    assert latest.prompts_done == latest.prompts_total > 0
    assert killed.state == "stopped" and killed.stage == "images"
    db = sqlite3.connect(out / "catalog.sqlite")
    rows = db.execute("SELECT path, sha256, cache_key FROM images").fetchall()
    assert len(rows) == 12
    assert len({r[2] for r in rows}) == 12
    files = [p for p in (out / "images").rglob("*") if p.is_file()]
    assert sorted(Path(p).relative_to(out).as_posix() for p in files) == sorted(r[0] for r in rows)
    for path, sha, _ in rows:
        assert hashlib.sha256((out / path).read_bytes()).hexdigest() == sha


def test_a_server_that_never_answers_is_shown_then_given_up_on(tmp_path, capsys):
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    port = silent.getsockname()[1]
    url = f"http://user:SECRET@127.0.0.1:{port}/v1"
    try:
        started = time.perf_counter()
        code, err = run(
            capsys,
            "--out", str(tmp_path), "--episodes", "S1E1", "--dry-run", "--image-model", "demo",
            "--llm-base-url", url, "--llm-model", "m", "--llm-timeout", "0.4",
        )  # fmt: skip
        elapsed = time.perf_counter() - started
    finally:
        silent.close()
    assert code == 2
    assert f"waiting for http://127.0.0.1:{port}/v1 (try 2 of 3" in err
    assert "STUDIO_LLM_TIMEOUT" in err and "Traceback" not in err
    assert "SECRET" not in err and "user:" not in err
    assert elapsed < 20


def test_library_messages_name_this_clis_flags():
    from studio.core.config import ENV_VARS

    for name in flags.SETTINGS_WITH_FLAGS:
        choices = {"device": "cpu", "sampler": "Euler", "characters": "cast", "fast_path": "off",
                   "executor": "ray"}  # fmt: skip
        value = choices.get(name, "1")
        flag = flags.flag_of(name)
        if flag == "--size":
            continue
        assert getattr(dataprep.build_parser().parse_args([flag, value]), name) is not None
    for name in flags.LIBRARY_SETTINGS:
        args = build_library_parser().parse_args([flags.flag_of(name), "x", "status"])
        assert getattr(args, name) == "x"
    assert (
        flags.cli_message(f"Set image_model ({ENV_VARS['image_model']}) to a folder.")
        == "Set --image-model (STUDIO_IMAGE_MODEL) to a folder."
    )
    assert flags.cli_message("data_dir (STUDIO_DATA_DIR)") == "--out (STUDIO_DATA_DIR)"
    assert flags.cli_message("embeddings (STUDIO_EMBEDDINGS)") == (
        "--embeddings (STUDIO_EMBEDDINGS)"
    )
