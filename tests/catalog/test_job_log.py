"""The jobs table remembers which LLM a job asked and how many calls reached it, so that the next
job's estimate can time its calls by what an earlier one measured."""

import os
import socket

from studio.catalog.job_log import measured_call_seconds, recent_jobs
from studio.catalog.store import Store

SERVER = "OpenAI-compatible server `http://127.0.0.1:8765/v1` (the model it serves)"


def add_job(store, llm, calls, llm_seconds, host=None):
    job = store.start_job("local", "the whole series", host or socket.gethostname(), 1, llm)
    store.update_job(job, llm_calls=calls, seconds={"llm": llm_seconds, "total": llm_seconds + 9})
    return job


def test_the_newest_job_with_enough_calls_to_the_same_llm_times_the_next(tmp_path):
    store = Store(tmp_path)
    assert measured_call_seconds(store, SERVER) is None  # no job yet
    timed = add_job(store, SERVER, 10, 430.0)
    add_job(store, SERVER, 2, 100.0)  # too few calls: mostly start-up
    add_job(store, "embedded (Qwen2.5-Coder-1.5B-Instruct) on the CPU", 40, 480.0)  # another LLM
    add_job(store, SERVER, 0, 0.0)  # everything was cached
    each, job = measured_call_seconds(store, SERVER)
    assert (each, job.id) == (43.0, timed)
    assert recent_jobs(store)[-1].llm == SERVER and recent_jobs(store)[-1].llm_calls == 10
    newer = add_job(store, SERVER, 4, 20.0)
    assert measured_call_seconds(store, SERVER)[1].id == newer


def test_an_embedded_model_is_timed_by_jobs_on_this_machine_only(tmp_path):
    store = Store(tmp_path)
    embedded = "embedded (Qwen2.5-Coder-1.5B-Instruct) on the CPU"
    add_job(store, embedded, 10, 120.0)
    add_job(store, embedded, 10, 30.0, host="a-bigger-machine")
    assert measured_call_seconds(store, embedded)[0] == 3.0  # any host: the newest
    assert measured_call_seconds(store, embedded, same_host=True)[0] == 12.0


def test_a_job_that_made_as_many_calls_at_once_times_the_next_before_a_newer_one(tmp_path):
    """Calls made at once share the wall time (here 4.5 s a call at 8 at once, 30 s one at a
    time), so an estimate for one at a time takes a job that made one at a time."""
    store = Store(tmp_path)
    one = store.start_job("local", "the whole series", socket.gethostname(), 1, SERVER, 1)
    store.update_job(one, llm_calls=10, seconds={"llm": 300.0})
    eight = store.start_job("local", "the whole series", socket.gethostname(), 1, SERVER, 8)
    store.update_job(eight, llm_calls=10, seconds={"llm": 45.0})
    assert [job.llm_concurrency for job in recent_jobs(store)] == [8, 1]
    assert measured_call_seconds(store, SERVER, concurrency=1) == (30.0, recent_jobs(store)[1])
    assert measured_call_seconds(store, SERVER, concurrency=8)[0] == 4.5
    # None made 4 at once: the newest, whose llm_concurrency tells the caller it differs
    each, job = measured_call_seconds(store, SERVER, concurrency=4)
    assert (each, job.id, job.llm_concurrency) == (4.5, eight, 8)
    assert measured_call_seconds(store, SERVER)[1].id == eight  # no concurrency: the newest


def test_a_job_that_names_no_llm_reads_as_making_no_calls(tmp_path):
    store = Store(tmp_path)  # as rows written before the columns were added read
    job = store.start_job("local", "S01E01", socket.gethostname(), os.getpid())
    (record,) = recent_jobs(store)
    assert (record.id, record.llm, record.llm_calls, record.llm_concurrency) == (job, "", 0, 0)
    assert measured_call_seconds(store, "") is None


def test_a_job_that_drew_while_the_llm_wrote_reads_as_overlapped(tmp_path):
    store = Store(tmp_path)
    after = store.start_job("local", "the whole series", socket.gethostname(), 1, SERVER)
    store.update_job(after, seconds={"llm": 575.7, "render": 174.0, "write": 1.8, "total": 751.5})
    beside = store.start_job("local", "the whole series", socket.gethostname(), 1, SERVER)
    store.update_job(beside, seconds={"llm": 600.0, "render": 290.0, "total": 610.0})
    cached = store.start_job("local", "the whole series", socket.gethostname(), 1, SERVER)
    store.update_job(cached, seconds={"llm": 0.5, "total": 0.8})
    overlapped = {job.id: job.overlapped for job in recent_jobs(store)}
    assert overlapped == {after: False, beside: True, cached: False}
