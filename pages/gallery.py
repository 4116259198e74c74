"""Gallery: every image in the catalog with filters; read a dropped PNG's parameters."""

import pandas as pd
import streamlit as st

from studio import ui
from studio.core.metadata import infotext_of, open_image_bytes, parse_parameters, read_png_metadata
from studio.core.params import request_from_infotext

ui.route_through_dashboard(__file__)

PER_PAGE = 24
COLUMNS = 4


def filters(frame: pd.DataFrame) -> pd.DataFrame:
    columns = st.columns(6)
    choices = {
        "season": ("Season", columns[0]),
        "episode": ("Episode", columns[1]),
        "target": ("Made for", columns[2]),
        "model": ("Model", columns[3]),
        "sampler": ("Sampler", columns[4]),
    }
    for field, (label, column) in choices.items():
        options = sorted(frame[field].dropna().unique().tolist())
        picked = column.multiselect(label, options, key=f"ga_{field}")
        if picked:
            frame = frame[frame[field].isin(picked)]
    kind = columns[5].radio(
        "Images", ["all", "placeholder", "real"], key="ga_kind", horizontal=True
    )
    if kind != "all":
        frame = frame[frame["placeholder"] == (1 if kind == "placeholder" else 0)]
    return frame


def browse(store) -> None:
    rows = store.images()
    if not rows:
        st.info("The catalog is empty: run `python dataprep.py`, or make images in the Studio.")
        return
    frame = pd.DataFrame([row.summary() for row in rows])
    shown = filters(frame).sort_values("id", ascending=False)
    st.caption(f"{len(shown)} of {len(frame)} images")
    ui.placeholder_banner(*shown.head(PER_PAGE).to_dict("records"))
    by_id = {row["id"]: row for row in rows}
    page = shown.iloc[ui.paginate(len(shown), PER_PAGE, "ga_page")]
    ids = page["id"].tolist()
    for start in range(0, len(ids), COLUMNS):
        for column, image_id in zip(
            st.columns(COLUMNS), ids[start : start + COLUMNS], strict=False
        ):
            row = by_id[image_id]
            where = (
                f"S{row['season']:02d}E{row['episode']:02d}"
                if row["episode"] is not None
                else f"S{row['season']:02d} {row['style']}"
                if row["season"] is not None
                else "Studio"
            )
            with column:
                if ui.image_card(row, f"{where} · {row['sampler']} · seed {row['seed']}", key="ga"):
                    ui.send_to_studio(ui.defaults_from_row(row))


def read_dropped_png() -> None:
    st.caption("Read the prompt and parameters inside a PNG, then reproduce it in the Studio.")
    upload = st.file_uploader(
        "Drop a PNG made by this app, AUTOMATIC1111, ComfyUI or InvokeAI",
        type=["png"],
        key="ga_upload",
    )
    if upload is None:
        return
    picture = open_image_bytes(upload.getvalue())
    text, read_notes = infotext_of(picture)  # A1111's, ours, ComfyUI's or InvokeAI's
    _, provenance = read_png_metadata(picture)
    if not text:
        st.error(
            "This PNG carries no generation parameters (no A1111 `parameters` text chunk, no "
            "ComfyUI graph, no InvokeAI metadata)."
        )
        return
    values = parse_parameters(text)
    left, right = st.columns([1, 2])
    left.image(upload.getvalue(), width="stretch")
    with right:
        st.code(text, language=None, wrap_lines=True)
        if provenance:
            with st.expander("Provenance (series studio)"):
                st.json(provenance)
        imported = request_from_infotext(values, ui.defaults_from_settings())
        notes = [*read_notes, *imported.notes]
        for note in notes:
            st.warning(f"{note}.", icon=":material/tune:")
        if st.button("Send to Studio", key="ga_send_upload", type="primary"):
            ui.send_to_studio(imported.request, notes, imported.random_seed)


CLIP_CHOICES = 200  # the newest images offered for CLIP checks
CLIP_LABELS = "a chihuahua\na muffin"


def clip_checks(studio) -> None:
    st.caption(
        "CLIP scores each image against its own prompt and checks it for known failure modes "
        "(malformed hands, extra limbs: a heuristic that picks images to look at). Type labels "
        "to see which one CLIP thinks fits the image."
    )
    if studio.clip_checks is None:
        st.info(
            "No CLIP model is set: set `STUDIO_CLIP_MODEL` to a CLIP model (hub id or folder) to "
            "score images with CLIP.",
            icon=":material/info:",
        )
        return
    everything = studio.store.images()
    rows = everything[::-1][:CLIP_CHOICES]
    if not rows:
        st.info("The catalog is empty: run `python dataprep.py`, or make images in the Studio.")
        return
    by_id = {row["id"]: row for row in rows}
    picked = st.selectbox(
        "Image",
        list(by_id),
        format_func=lambda i: f"#{i} · {by_id[i].target_of.label(by_id[i]['image_index'])}",
        key="ga_clip_image",
    )
    row = by_id[picked]
    left, right = st.columns([1, 2])
    with left:
        ui.image_card(row, key="ga_clip", actions=False)
    with right:
        report = studio.clip_scores(row)
        st.metric("CLIP score against its prompt", f"{report.score:.1f}", help=ui.CLIP_NOTE_HELP)
        if report.failure.flagged:
            st.warning(
                f"Worth a look: “{report.failure.label}” fits this image better than a neutral "
                f"description (by {report.failure.margin:.3f} cosine).",
                icon=":material/warning:",
            )
        else:
            st.success("No known failure mode stands out.", icon=":material/check:")
        labels = st.text_area("Zero-shot labels, one a line", CLIP_LABELS, key="ga_clip_labels")
        if st.button("Score the labels", key="ga_clip_score", type="primary"):
            scores = studio.zero_shot(row, labels.splitlines())
            frame = pd.DataFrame(
                {
                    "label": [s.label for s in scores],
                    "probability": [s.probability for s in scores],
                    "CLIP score": [round(s.score, 1) for s in scores],
                }
            ).set_index("label")
            st.bar_chart(frame["probability"], horizontal=True)
            st.dataframe(frame)
    unscored = len(everything) - len(studio.clip_checks.stored_reports(everything))
    if unscored and st.button(
        f"Score {unscored} older images", key="ga_clip_backfill",
        help="Images made before the CLIP model was set have no score yet.",
    ):  # fmt: skip
        with st.spinner("Scoring with CLIP…"):
            studio.score_catalog()
        st.rerun()


st.title("Gallery")
catalog_tab, png_tab, clip_tab = st.tabs(["Catalog", "PNG Info", "CLIP checks"])
with catalog_tab, ui.guard("Opening the gallery"):
    browse(ui.current_store())
    ui.refused_requests()
with png_tab, ui.guard("Reading the PNG"):
    read_dropped_png()
with clip_tab, ui.guard("CLIP checks"):
    clip_checks(ui.current_studio())
