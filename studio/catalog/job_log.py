"""Batch jobs as the catalog records them: which stage a run of the batch job is in, how much is
done, what failed and why, where the time went, and which LLM it asked how many times. The job
writes its row as it goes (`JobLog`); the dashboard reads `recent_jobs`, and the next job's
estimate times its LLM calls by `measured_call_seconds`. A job whose process is gone without
finishing (a killed driver) reads as stopped; its next run resumes from what the catalog holds.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from studio.catalog.store import Store

STALE_AFTER = 15 * 60  # seconds without an update before a job on another host reads as stopped
MIN_INTERVAL = 0.5  # seconds between progress writes (stage changes are written at once)
MIN_TIMED_CALLS = 3  # a job's LLM calls to time the next job's by (fewer: start-up weighs most)


@dataclass(frozen=True)
class JobRecord:
    id: int
    started_at: str
    updated_at: str
    finished_at: str | None
    status: str  # running, finished, failed, stopped (as written)
    stage: str  # prompts, images, done
    executor: str
    selection: str
    prompts_done: int
    prompts_total: int
    images_done: int
    images_total: int
    failures: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    host: str = ""
    pid: int = 0
    llm: str = ""  # the LLM it asked, in words (credentials left out); "" before 016_job_llm
    llm_calls: int = 0  # calls that reached it
    llm_concurrency: int = 0  # calls it made at once; 0: not recorded (before 017)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> JobRecord:
        return cls(**row)

    @property
    def state(self) -> str:
        """The status, except that a "running" job whose process is gone is "stopped"."""
        if self.status != "running":
            return self.status
        if self.host == socket.gethostname():
            return "running" if _alive(self.pid) else "stopped"
        updated = datetime.fromisoformat(self.updated_at)
        age = (datetime.now(UTC) - updated).total_seconds()
        return "running" if age < STALE_AFTER else "stopped"

    @property
    def started(self) -> str:
        """When the job started, for people: "2026-12-03 06:16 UTC"."""
        return datetime.fromisoformat(self.started_at).strftime("%Y-%m-%d %H:%M UTC")

    @property
    def seconds_per_call(self) -> float | None:
        """Wall seconds per LLM call of its prompt stage (calls made at once count at their rate
        together); None under MIN_TIMED_CALLS calls, where the model's start-up weighs most."""
        took = self.seconds.get("llm", 0.0)
        return took / self.llm_calls if self.llm_calls >= MIN_TIMED_CALLS and took > 0 else None

    @property
    def overlapped(self) -> bool:
        """Whether it drew its images while the LLM wrote: its LLM and render stages add up to
        more than its whole time."""
        stages = self.seconds.get("llm", 0.0) + self.seconds.get("render", 0.0)
        return stages > self.seconds.get("total", stages) + 1.0

    @property
    def total_seconds(self) -> float:
        end = datetime.fromisoformat(self.finished_at or self.updated_at)
        return (end - datetime.fromisoformat(self.started_at)).total_seconds()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recent_jobs(store: Store, limit: int = 20) -> list[JobRecord]:
    """The newest batch jobs, newest first."""
    return [JobRecord.from_row(row) for row in store.jobs(limit)]


def measured_call_seconds(
    store: Store, llm: str, same_host: bool = False, limit: int = 50, concurrency: int = 0
) -> tuple[float, JobRecord] | None:
    """Wall seconds per LLM call in the newest job that asked `llm` (a description, as JobLog
    takes it) at least MIN_TIMED_CALLS times, with that job; None when no job did. Calls made at
    once share the wall time, so with `concurrency` a job that made as many at once is taken
    before a newer one that made another number (whose `llm_concurrency` tells the caller).
    `same_host`: only jobs run on this machine (an embedded model's speed is the machine's)."""
    here = socket.gethostname()
    newest = None
    for job in recent_jobs(store, limit):
        each = job.seconds_per_call
        if job.llm == llm and each is not None and (job.host == here or not same_host):
            if not concurrency or job.llm_concurrency == concurrency:
                return each, job
            newest = newest or (each, job)
    return newest


class JobLog:
    """One batch job's row in the catalog, written as the job goes."""

    def __init__(
        self, store: Store, executor: str, selection: str, llm: str = "", llm_concurrency: int = 0
    ):
        self.store = store
        self.id = store.start_job(
            executor, selection, socket.gethostname(), os.getpid(), llm, llm_concurrency
        )
        self._written = 0.0

    def progress(self, force: bool = False, **values: Any) -> None:
        """Counts and stage; written at most every MIN_INTERVAL unless `force`."""
        now = time.monotonic()
        if not force and now - self._written < MIN_INTERVAL:
            return
        self._written = now
        self.store.update_job(self.id, **values)

    def finish(self, status: str, **values: Any) -> bool:
        """The job's last write: its status, and `failures` saying why when it failed. False when
        the catalog could not take it (a full disk): the error the job ends with matters more,
        and the row then reads as stopped once the process is gone."""
        finished = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            self.store.update_job(self.id, status=status, finished_at=finished, **values)
        except (OSError, sqlite3.Error):
            return False
        return True
