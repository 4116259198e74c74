"""Gallery: every image in the catalog with filters; read a dropped PNG's parameters."""

import pandas as pd
import streamlit as st

from studio import ui
from studio.metadata import parse_parameters, read_png_metadata
from studio.params import request_from_infotext

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
        "Drop a PNG made by this app or by AUTOMATIC1111", type=["png"], key="ga_upload"
    )
    if upload is None:
        return
    text, provenance = read_png_metadata(upload.getvalue())
    if not text:
        st.error("This PNG carries no generation parameters (no A1111 `parameters` text chunk).")
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
        for note in imported.notes:
            st.warning(f"{note}.", icon=":material/tune:")
        if st.button("Send to Studio", key="ga_send_upload", type="primary"):
            ui.send_to_studio(imported.request, imported.notes, imported.random_seed)


st.title("Gallery")
catalog_tab, png_tab = st.tabs(["Catalog", "PNG Info"])
with catalog_tab, ui.guard("Opening the gallery"):
    browse(ui.store())
with png_tab, ui.guard("Reading the PNG"):
    read_dropped_png()
