"""Batch jobs: what each run of `python dataprep.py` on this catalog did, read from the catalog;
a running job's stage and counts update every few seconds, and failures say why."""

import pandas as pd
import streamlit as st

from studio import ui

ui.route_through_dashboard(__file__)

REFRESH_SECONDS = 2
STAGE_NAMES = {"llm": "LLM", "render": "render", "write": "write"}
STATE_ICONS = {
    "running": ":material/pending:",
    "finished": ":material/check_circle:",
    "failed": ":material/error:",
    "stopped": ":material/stop_circle:",
}


OVERLAP = "The images are drawn while the LLM writes the other prompts: the two times overlap."


def seconds_text(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{seconds:.1f} s"


def stage_bar(label: str, done: int, total: int) -> None:
    share = done / total if total else 0.0
    st.progress(min(1.0, share), text=f"{label}: {done} of {total}")


def latest(job) -> None:
    state = job.state
    st.subheader(f"{STATE_ICONS.get(state, '')} Job {job.id}: {state}")
    st.caption(
        f"Started {job.started} · {job.selection} · rendered by the {job.executor} "
        f"executor · {seconds_text(job.total_seconds)}"
    )
    if job.llm:
        each = job.seconds_per_call
        per_call = f", {seconds_text(each)} a call" if each is not None else ""
        at_once = f" · {job.llm_concurrency} at once" if job.llm_concurrency else ""
        st.caption(f"LLM: {job.llm} · {job.llm_calls} calls{per_call}{at_once}")
    if state == "stopped":
        st.warning(
            "This run ended without finishing (killed or lost). What it finished is in the "
            "catalog; the next `python dataprep.py` resumes from there."
        )
    stage_bar("Prompts", job.prompts_done, job.prompts_total)
    stage_bar("Images", job.images_done, job.images_total)
    timing = {name: value for name, value in job.seconds.items() if name != "total"}
    if timing:
        columns = st.columns(len(timing))
        for column, (name, value) in zip(columns, timing.items(), strict=True):
            column.metric(
                f"Time: {STAGE_NAMES.get(name, name)}",
                seconds_text(value),
                help=OVERLAP if name == "render" and job.overlapped else None,
            )
    if job.failures:
        st.error(f"{len(job.failures)} failed")
        st.dataframe(
            pd.DataFrame({"What failed, and why": job.failures}),
            hide_index=True,
            width="stretch",
        )


def history(jobs) -> None:
    st.subheader("Earlier runs")
    frame = pd.DataFrame(
        [
            {
                "Job": job.id,
                "Started": job.started,
                "State": job.state,
                "What": job.selection,
                "Executor": job.executor,
                "Prompts": f"{job.prompts_done}/{job.prompts_total}",
                "Images": f"{job.images_done}/{job.images_total}",
                "Failed": len(job.failures),
                "Time": seconds_text(job.total_seconds),
            }
            for job in jobs
        ]
    )
    st.dataframe(frame, hide_index=True, width="stretch")


CHECK_NAMES = {
    "clip_window": "Over CLIP's 77 tokens",
    "cut_words": "Cut words",
    "non_english": "Non-English words",
    "missing_descriptors": "Missing descriptors",
    "lost_items": "Items lost from a look",
    "storyboard_duplicates": "Repeated storyboard moments",
    "modern_words": "Modern words",
    "duplicate_prompts": "Duplicate prompts",
    "style_overlap": "Overlapping styles",
}


def quality_view(studio) -> None:
    """The scored check of the catalog's prompts: a count per check, then the findings."""
    st.subheader("Prompt quality")
    report = studio.prompt_quality()
    st.caption(
        f"{report.prompts} prompts and {report.looks} looks in the catalog, checked for what the "
        "image model would waste or get wrong (no model is asked)."
    )
    counts = report.counts
    columns = st.columns(3)
    for number, (check, name) in enumerate(CHECK_NAMES.items()):
        columns[number % 3].metric(name, counts[check])
    if report.findings:
        st.dataframe(
            pd.DataFrame(
                [
                    {"Check": CHECK_NAMES[f.check], "Where": f.label, "What": f.detail}
                    for f in report.findings
                ]  # fmt: skip
            ),
            hide_index=True,
            width="stretch",
        )
    else:
        st.success("Nothing found.")


def jobs_view(studio) -> None:
    jobs = studio.batch_jobs()
    if not jobs:
        st.info(
            "No batch job has run on this catalog yet: `python dataprep.py` writes the prompts "
            "and images, and its progress shows here."
        )
        return
    latest(jobs[0])
    if len(jobs) > 1:
        history(jobs[1:])


st.title("Batch jobs")
st.caption(
    "Every run of `python dataprep.py` on this catalog: its stage, how much is done, what "
    "failed and why, and where the time went."
)
studio = None
with ui.guard("Reading the batch jobs"):
    studio = ui.current_studio()
if studio is not None:
    newest = studio.batch_jobs(limit=1)
    if newest and newest[0].state == "running":  # then it redraws itself every few seconds
        st.fragment(run_every=REFRESH_SECONDS)(jobs_view)(studio)
    else:
        jobs_view(studio)
    if newest:
        with ui.guard("Checking the prompts"):
            quality_view(studio)
