"""dataprep.py as a user runs it: arguments, messages, exit codes, resuming after a kill."""

import errno
import hashlib
import os
import re
import resource
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import xllamacpp

from studio.catalog.job_log import recent_jobs
from studio.catalog.store import Store
from studio.cli import dataprep, flags
from studio.cli.library import build_library_parser
from studio.core.config import PROJECT_ROOT
from studio.core.metadata import parse_parameters, read_png_metadata
from studio.llm import client as llm_client
from studio.llm import embedded
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
    assert parse_parameters(parameters)["Model"] == "demo-v2 (placeholder)"


def fake_dataprep(*args, env=None, preexec_fn=None):
    """`dataprep.py ARGS` in a subprocess, with the fake LLM (and the tests' offline env)."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    command = [sys.executable, "-m", "tests.support.fake_dataprep", *map(str, args)]
    return subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, preexec_fn=preexec_fn
    )


def dataprep_py(*args, cwd=None):
    """The real `python dataprep.py ARGS`, as a user types it."""
    command = [sys.executable, str(PROJECT_ROOT / "dataprep.py"), *map(str, args)]
    return subprocess.run(command, cwd=cwd or PROJECT_ROOT, capture_output=True, text=True)


def test_auto_falls_back_to_the_demo_model_with_one_whole_warning_and_an_estimate(tmp_path):
    args = ["--out", tmp_path, "--episodes", "S1E1", *SMALL]
    first = fake_dataprep(*args)
    assert first.returncode == 0, first.stderr
    warnings = [line for line in first.stderr.splitlines() if line.startswith("WARNING:")]
    assert len(warnings) == 1  # once, before the work
    assert "(HF_HUB_OFFLINE is set, so nothing is downloaded)" in warnings[0]
    assert warnings[0].endswith("Set --image-model (STUDIO_IMAGE_MODEL) to a hub id, a diffusers "
                                "folder or a .safetensors file.")  # fmt: skip
    assert "PLACEHOLDERS from the demo model" in first.stderr  # and the summary says so
    # the estimate: one line before the work, with what will be done and a rough time
    lines = first.stderr.splitlines()
    (estimate,) = [line for line in lines if line.startswith("To do:")]
    assert estimate.startswith("To do: 5 LLM calls and 5 images, roughly ")
    assert re.search(r"\(the embedded LLM ~\d+ s a call on \d+ cores; the demo model ~\d+ s an "
                     r"image on cpu; a rough guess\)\.$", estimate)  # fmt: skip
    assert lines.index(estimate) < min(i for i, line in enumerate(lines) if "prompts:" in line)
    again = fake_dataprep(*args)  # everything cached: no estimate
    assert again.returncode == 0 and "To do:" not in again.stderr
    assert "Nothing to do" in again.stderr


def test_dry_run_prints_prompts(tmp_path, capsys, fake_llm):
    code, err = run(
        capsys, "--out", str(tmp_path), "--episodes", "S2E3", "--dry-run", "--image-model", "demo"
    )
    assert code == 0
    assert "S02E03: detective examining a clue from The Yellow Face" in err
    assert "negative: blurry, modern cars, text" in err
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.png"))


def test_an_avx512_cpu_is_told_of_the_faster_llm_build(tmp_path, capsys, fake_llm, monkeypatch):
    avx512 = frozenset({"avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni"})
    monkeypatch.setattr(embedded, "cpu_flags", lambda: avx512)
    monkeypatch.setattr(xllamacpp, "get_system_info", lambda: "CPU : AVX = 1 | AVX2 = 1 | ")
    args = ["--out", str(tmp_path), "--episodes", "S2E3", "--dry-run", "--image-model", "demo"]
    code, err = run(capsys, *args)
    assert code == 0, err
    (tip,) = [line for line in err.splitlines() if line.startswith("Tip: ")]
    assert "AVX-512" in tip and "docs/batch-job.md" in tip
    # a build that uses it, or a server LLM: no tip
    monkeypatch.setattr(xllamacpp, "get_system_info", lambda: "CPU : AVX2 = 1 | AVX512 = 1 | ")
    code, err = run(capsys, *args)
    assert code == 0 and "Tip: " not in err
    monkeypatch.setattr(xllamacpp, "get_system_info", lambda: "CPU : AVX = 1 | AVX2 = 1 | ")
    code, err = run(capsys, *args, "--llm-base-url", "http://127.0.0.1:9/v1")
    assert code == 0 and "Tip: " not in err, err


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
                   "executor": "ray", "compile_mode": "default", "compile_scope": "regional",
                   "fp8": "off"}  # fmt: skip
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


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--sampler", "Eulr"], "Error: --sampler 'Eulr': no such sampler (did you mean 'Euler'?); "
         "choose one of Euler, Euler a, Heun"),
        (["--size", "512"], "Error: --size '512': not a size like 512x512 (WxH)."),
        (["--device", "gpu"], "Error: --device 'gpu': not a choice; choose one of auto, cuda, mps, "
         "cpu."),
        (["--steps", "many"], "Error: --steps 'many': not a whole number."),
        (["--episodes", "S1"], "Error: --episodes 'S1': not an episode id like S1E3 or 1x03."),
        (["--sampel", "Euler"], "Error: unrecognized arguments: --sampel Euler; see `python "
         "dataprep.py --help`."),
        (["library", "stats"], "Error: COMMAND 'stats': not a choice; choose one of import, "
         "search, index, status."),
    ],
)  # fmt: skip
def test_a_bad_flag_value_is_one_line(args, line):
    result = dataprep_py(*args)
    assert result.returncode == 2
    assert result.stderr.startswith(line)
    assert result.stderr.count("\n") == 1 and "usage:" not in result.stderr


def test_sampler_names_are_taken_in_any_case_and_spacing():
    assert dataprep.build_parser().parse_args(["--sampler", "dpm++ 2m  karras"]).sampler == (
        "DPM++ 2M Karras"
    )


def test_help_names_the_library_command():
    result = dataprep_py("--help")
    assert result.returncode == 0
    description = " ".join(result.stdout.split("options:")[0].split())
    assert "`dataprep.py library import|search|index|status`" in description
    assert "`dataprep.py library --help`" in description


def test_unknown_episodes_are_refused_before_the_model_loads_or_a_catalog_is_made(tmp_path):
    out = tmp_path / "new"
    result = dataprep_py("--out", out, "--episodes", "S9E9", "--image-model", "demo")
    assert result.returncode == 2
    assert "Error: Nothing to make: --episodes S09E09: no such episode in the series" in (
        result.stderr
    )
    assert "Image model:" not in result.stderr
    assert not out.exists()


def test_the_damaged_catalog_hint_carries_the_out_given(tmp_path, capsys, fake_llm):
    out = tmp_path / "my show"
    out.mkdir()
    (out / "catalog.sqlite").write_bytes(b"this is no SQLite database, " * 200)
    command = f"`python dataprep.py --recover --out {shlex.quote(str(out))}`"
    result = dataprep_py("library", "status", "--out", out)  # the flag after the command
    assert result.returncode == 2, result.stderr
    assert "is damaged or unreadable" in result.stderr and command in result.stderr
    code, err = run(capsys, "--out", str(out), "--image-model", "demo", "--episodes", "S1E1")
    assert code == 2 and command in err
    # the command as shown, copied and run, rebuilds that folder's catalog
    recovered = dataprep_py(*shlex.split(command.strip("`"))[2:])
    assert recovered.returncode == 0, recovered.stderr
    assert f"Rebuilding the catalog in {out}" in recovered.stderr
    assert dataprep_py("library", "status", "--out", out).returncode == 0


def test_library_flags_go_before_or_after_the_command():
    from studio.cli.library import library_arguments

    parse = build_library_parser().parse_args
    assert parse(["--out", "a", "status"]).data_dir == Path("a")
    assert parse(["status", "--out", "b"]).data_dir == Path("b")
    assert parse(["--out", "a", "search", "x", "--out", "b"]).data_dir == Path("b")
    assert parse(["index", "--library-db", "postgresql://h/db"]).library_db == "postgresql://h/db"
    assert parse(["status"]).data_dir is None
    assert library_arguments(["library", "status"]) == ["status"]
    assert library_arguments(["--out", "d", "library", "status"]) == ["--out", "d", "status"]
    assert library_arguments(["--out=d", "library", "status"]) == ["--out=d", "status"]
    assert library_arguments(["--out", "library", "status"]) is None  # a folder named library
    assert library_arguments(["--data", "x", "library"]) is None
    assert library_arguments(["--episodes", "S1E1"]) is None


def test_a_full_disk_names_the_file_keeps_the_images_and_records_why(tmp_path, capsys, fake_llm):
    out = tmp_path / "out"
    args = ["--out", out, "--episodes", "S1E1", "--only", "episodes", "--image-model", "demo"]
    code, err = run(capsys, *map(str, args), *SMALL)  # one small image, stored
    assert code == 0, err

    def file_size_limit():  # files over 300 kB: EFBIG "File too large", as on a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    result = fake_dataprep(
        *args, "--size", "512x512", "--steps", "2", "--images-per-episode", "2",
        preexec_fn=file_size_limit,
    )  # fmt: skip
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: Could not write {out / 'images'}/")  # the file it wrote
    assert ".png (File too large): a file-size limit stops it (`ulimit -f`" in line
    assert "or set --out (STUDIO_DATA_DIR) to a folder on another disk" in line
    assert "What was finished is kept" in line and "Traceback" not in result.stderr
    store = Store(out)
    (kept,) = store.images(target="episode")  # the first run's image stays
    assert store.image_path(kept).is_file()
    failed, finished = recent_jobs(store)  # the Batch jobs page says why
    store.close()
    assert (failed.state, finished.state) == ("failed", "finished")
    (reason,) = failed.failures
    assert f"Could not write {out / 'images'}/" in reason and "(File too large)" in reason
    assert "data_dir (STUDIO_DATA_DIR)" in reason


def test_a_full_disk_mid_run_names_the_file_and_the_rerun_resumes(
    tmp_path, capsys, fake_llm, monkeypatch
):
    from studio.catalog import store as store_module

    out = tmp_path / "out"
    args = ["--out", str(out), "--episodes", "S1E1", "--only", "episodes", "--image-model", "demo",
            "--images-per-episode", "4", *SMALL]  # fmt: skip
    write, written, failed_at = store_module.atomic_write, [], []

    def disk_fills_up(path, data):
        if len(written) == 2:
            failed_at.append(path)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)
        written.append(path)

    monkeypatch.setattr(store_module, "atomic_write", disk_fills_up)
    code, err = run(capsys, *args)
    assert code == 2
    assert (
        f"Error: Could not write {failed_at[0]} (No space left on device): the disk is full; free "
        "some space there, or set --out (STUDIO_DATA_DIR) to a folder on another disk. What was "
        "finished is kept (2 new images); the next run goes on from there."
    ) in err
    store = Store(out)
    assert sorted(store.image_path(row) for row in store.images()) == sorted(written)
    (job, *_) = recent_jobs(store)
    store.close()
    assert job.state == "failed" and "No space left on device" in job.failures[0]
    assert job.images_done == 2

    monkeypatch.setattr(store_module, "atomic_write", write)
    code, err = run(capsys, *args)
    assert code == 0, err
    assert "Images:  2 rendered, 2 from the catalog" in err
