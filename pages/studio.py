"""Studio: a txt2img playground with every parameter, and a comparison grid over one or two."""

import io

import streamlit as st

from studio import ui
from studio.grid import AXES, compose_grid, grid_requests, parse_axis

ui.route_through_dashboard(__file__)

PREFIX = "st"
EXAMPLE_VALUES = {
    "CFG scale": "3, 7, 12",
    "Steps": "10, 25, 40",
    "Seed": "1, 2, 3",
    "Sampler": "Euler a, DPM++ 2M Karras, DDIM",
}


def playground(request) -> None:
    if st.button("Generate", type="primary", key="st_generate"):
        with ui.guard("Generating the image"):
            made = ui.generate(ui.with_seed_choice(PREFIX, request))
            st.session_state["st_last"] = made.key
            if made.cached:
                st.toast("That image was already in the catalog.")
    key = st.session_state.get("st_last")
    row = ui.store().find_image(key) if key else None
    if row is not None:
        ui.image_card(row, f"seed {row['seed']} · {row['sampler']}", key="st", actions=False)


def comparison_grid(request) -> None:
    st.caption("Everything but the chosen parameters stays as set above.")
    left, right = st.columns(2)
    x_name = left.selectbox("Columns vary", list(AXES), key="st_grid_x")
    x_text = left.text_input("Column values", EXAMPLE_VALUES[x_name], key=f"st_grid_x_{x_name}")
    y_options = ["(none)", *[name for name in AXES if name != x_name]]
    y_name = right.selectbox("Rows vary", y_options, key="st_grid_y")
    y_text = ""
    if y_name != "(none)":
        y_text = right.text_input("Row values", EXAMPLE_VALUES[y_name], key=f"st_grid_y_{y_name}")
    if st.button("Render the grid", key="st_grid_render"):
        with ui.guard("Rendering the grid"):
            x = parse_axis(x_name, x_text)
            y = parse_axis(y_name, y_text) if y_name != "(none)" else None
            requests = grid_requests(request, x, y)
            overall = st.progress(0.0, text=f"Cell 1 of {len(requests)}")
            images = []
            for number, cell in enumerate(requests, start=1):
                overall.progress(
                    (number - 1) / len(requests), text=f"Cell {number} of {len(requests)}"
                )
                images.append(ui.generate(cell).image())
            overall.empty()
            sheet = compose_grid(images, x, y)
            buffer = io.BytesIO()
            sheet.save(buffer, format="PNG")
            st.session_state["st_grid_png"] = buffer.getvalue()
            st.session_state["st_grid_cells"] = len(images)
    png = st.session_state.get("st_grid_png")
    if png:
        st.image(png, caption=f"{st.session_state['st_grid_cells']} cells", width="stretch")
        st.download_button(
            "Download the grid (PNG)",
            png,
            file_name="comparison-grid.png",
            mime="image/png",
            key="st_grid_download",
            on_click="ignore",
        )


st.title("Studio")
ui.placeholder_banner()
ui.apply_pending(PREFIX)
with ui.guard("Opening the Studio"):
    controls, results = st.columns([2, 3], gap="large")
    with controls:
        request = ui.render_controls(
            PREFIX,
            ui.defaults_from_settings(
                "Sherlock Holmes reading a letter by the fire, Baker Street sitting room, "
                "Victorian London, warm firelight, oil painting",
                "blurry, lowres, text, watermark, logo",
            ),
        )
    with results:
        single, grid = st.tabs(["Single image", "Comparison grid"])
        with single:
            playground(request)
        with grid:
            comparison_grid(request)
