"""Where an image came from and how to change it: its label in words, the change request or
alternate reality it was made by, the LLM's visible reasoning, and the change-request widget.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import streamlit as st

from studio.catalog.records import PromptRecord, StoredImage
from studio.ui.errors import guard
from studio.ui.progress import step_progress
from studio.ui.resources import current_store, current_studio
from studio.writing.prompting import load_styles
from studio.writing.revisions import MAX_REQUEST, REVISION_STEPS


def widget_id(text: str) -> str:
    """A short, stable id for `text` that is safe in a widget key (a character's name may hold
    accents, quotes and spaces)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def revision_of(row: Any) -> dict[str, Any] | None:
    """A change request's record on the image it made: from (the old image's key), request and
    trace (the LLM's steps, as question and answer); None for any other image."""
    return (getattr(row, "provenance", None) or {}).get("revision")


def reality_of(row: Any) -> dict[str, Any] | None:
    """An alternate reality's record on its image: reality, from, and for a character's,
    character and descriptor_version; None for any other image."""
    return (getattr(row, "provenance", None) or {}).get("reality")


def source_of(row: Any) -> StoredImage | None:
    """The catalog image that `row` was made from (by a change request or an alternate
    reality), while it is still there."""
    made_from = revision_of(row) or reality_of(row) or {}
    return current_store().find_image(made_from["from"]) if made_from.get("from") else None


def image_label(row: Any) -> str:
    """What an image was made for, in words: "S01E03 #2", "S01 · Film noir still #1",
    "Portrait of Irene Adler (look v2)", "Irene Adler in film noir", "S01E03 storyboard,
    moment 2: …"."""
    number = f"#{row['image_index'] + 1}"
    reality = reality_of(row)
    if reality is not None:
        who = row["style"]
        if row["episode"] is not None:
            who = f"S{row['season']:02d}E{row['episode']:02d} {number}"
        return f"{who or 'An image'} in {reality.get('reality', 'another reality')}"
    if row["target"] == "character":
        version = (row.provenance.get("character") or {}).get("version")
        return f"Portrait of {row['style']}" + (f" (look v{version})" if version else "")
    if row["target"] == "episode":
        return f"{row.target_of.label()} {number}"
    if row["target"] == "season":
        style = load_styles().get(row["style"], {}).get("name", row["style"])
        return f"S{row['season']:02d} · {style} {number}"
    if row["target"] == "storyboard":
        title = row.provenance.get("moment_title")
        label = row.target_of.label(row["image_index"])
        return f"{label}: {title}" if title else label
    return row.target_of.label(row["image_index"])


def lineage(row: Any) -> str:
    """One line on what `row` was made from: "Revised from #1: night instead of day", "film
    noir, from Portrait of Irene Adler (look v1), strength 0.6"; "" for an image made from a
    prompt alone."""
    revision, reality = revision_of(row), reality_of(row)
    if revision is None and reality is None:
        return ""
    source = source_of(row)
    if revision is not None:
        where = f"#{source['image_index'] + 1}" if source is not None else "an image no longer here"
        return f"Revised from {where}: {revision.get('request', '')}"
    where = image_label(source) if source is not None else "an image no longer here"
    strength = f", strength {row['strength']:g}" if row["strength"] is not None else ""
    return f"{reality.get('reality', '')}, from {where}{strength}"


def show_trace(trace: Sequence[Mapping[str, str]]) -> None:
    """An LLM's visible steps, as questions and answers."""
    for step in trace:
        st.markdown(f"**Q: {step['question']}**  \nA: {step['answer']}")


REVISION_QUESTIONS = [question for _, question in REVISION_STEPS]


def is_revision(record: PromptRecord) -> bool:
    """Whether a prompt record was written for a change request (its trace is the change's
    steps), not by the batch job's prompting."""
    return [step.get("question") for step in record.trace or []] == REVISION_QUESTIONS


def change_request(images: Sequence[StoredImage], key: str, default: str | None = None) -> None:
    """Ask for a change to one of `images` (`default`: the cache key picked first, else the
    newest). The LLM reasons in visible steps and writes a new prompt; the new image joins the
    same episode or style, and the old one stays. Widgets are keyed `{key}_...`."""
    if not images:
        st.caption("No image to change yet.")
        return
    newest_first = {row["cache_key"]: row for row in reversed(images)}
    keys = list(newest_first)
    chosen = st.selectbox(
        "Image to change",
        keys,
        index=keys.index(default) if default in keys else 0,
        format_func=lambda k: f"{image_label(newest_first[k])} · seed {newest_first[k]['seed']}",
        key=f"{key}_image",
    )
    request = st.text_input(
        "What should change?",
        key=f"{key}_request",
        max_chars=MAX_REQUEST,
        placeholder="night instead of day · Watson in the foreground · less gloomy",
    )
    if st.button("Apply the change", key=f"{key}_apply", type="primary"):
        with (
            guard("Applying the change"),
            step_progress("The LLM is working out the change…") as on_step,
        ):
            made = current_studio().revise(chosen, request, on_step=on_step)
            st.session_state[f"{key}_made"] = made.key
            if made.cached:
                st.toast("That change was made before: the image was already in the catalog.")
            st.rerun()
    made_key = st.session_state.get(f"{key}_made")
    row = current_store().find_image(made_key) if made_key else None
    if row is not None:
        st.markdown("**The reasoning**")
        show_trace((revision_of(row) or {}).get("trace") or [])
        path = current_store().image_path(row)
        st.image(str(path), caption=f"{image_label(row)} · {lineage(row)}", width="stretch")
