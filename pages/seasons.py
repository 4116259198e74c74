"""Seasons: the 5 style images side by side, the self-ask trace, regeneration per style and
change requests."""

from dataclasses import replace

import streamlit as st

from studio import ui
from studio.core.targets import Target
from studio.writing.prompting import load_styles

ui.route_through_dashboard(__file__)


def season_page(series, store) -> None:
    st.title("Seasons")
    season = ui.season_picker(series, "se_season")
    st.write(series.season_summary(season))
    styles = load_styles()
    prompts = {p.target.style: p for p in store.prompts(target="season", season=season)}
    latest = {}
    for row in store.images(target="season", season=season):
        latest[row["style"]] = row  # oldest first, so the newest of each style wins
    ui.placeholder_banner(*latest.values())
    if not latest:
        st.info("No season images yet: run `python dataprep.py`, or regenerate a style below.")

    for column, (key, style) in zip(st.columns(len(styles)), styles.items(), strict=False):
        with column:
            st.markdown(f"**{style['name']}**")
            row = latest.get(key)
            if row is None:
                st.caption("No image yet")
            elif ui.image_card(
                row,
                f"#{row['image_index'] + 1} · seed {row['seed']}",
                key=f"se_{key}",
                controls=f"se_{season}_{key}",
                select={"se_style": key},
            ):
                ui.send_to_studio(ui.defaults_from_row(row))

    # A change request's steps are shown with its image, not as the season's self-ask.
    traces = [p.trace for p in prompts.values() if p.trace and not ui.is_revision(p)]
    with st.expander(
        "Self-ask trace: the questions the LLM asked itself, and its answers",
        expanded=bool(traces),
    ):
        if not traces:
            st.caption("No trace yet: the season's prompts have not been written.")
        else:
            ui.show_trace(traces[-1])

    st.subheader("Regenerate a style")
    key = st.selectbox(
        "Style", list(styles), format_func=lambda k: styles[k]["name"], key="se_style"
    )
    prefix = f"se_{season}_{key}"
    ui.apply_pending(prefix)
    spec = prompts[key].spec if key in prompts else None
    row = latest.get(key)
    defaults = ui.defaults_from_row(row) if row is not None else ui.defaults_from_settings()
    if spec:
        defaults = replace(defaults, prompt=spec.prompt, negative_prompt=spec.negative_prompt)
    ui.regenerate_panel(prefix, defaults, Target("season", season, None, key), spec)

    st.subheader("Ask for a change")
    st.caption(
        f"Change a {styles[key]['name'].lower()} image: the LLM works out what the change means "
        "for its prompt, step by step, and a new image joins the style's. The old one stays."
    )
    ui.change_request(store.images(target="season", season=season, style=key), f"{prefix}_change")


series, store = ui.open_catalog("Opening the seasons")
if series is not None:
    season_page(series, store)
