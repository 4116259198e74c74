"""Characters: the cast with their portraits and looks; scenes of up to three characters, each
portrait steering its side of the image (with an IP-Adapter); a character's sheet with the
descriptor every prompt uses (edited as a new version), alternate realities, and every image they
are in."""

import pandas as pd
import streamlit as st

from studio import ui
from studio.core.errors import StudioError
from studio.core.params import MAX_REFERENCES, REFERENCE_SCALE
from studio.images.regions import layout_preview
from studio.writing.cast import DESCRIPTOR_TOKENS, check_name, note_for
from studio.writing.revisions import MAX_REALITY, REALITIES

ui.route_through_dashboard(__file__)

CARDS_PER_PAGE = 24
COLUMNS = 4
OTHER_REALITY = "Other…"


def cast_grid(series, studio) -> None:
    st.title("Characters")
    st.caption(
        "The cast, the most important first. Each look is a short descriptor that every episode, "
        "season and storyboard prompt uses word for word, so a character looks the same "
        "everywhere."
    )
    search = st.text_input("Find a character", key="ch_search", placeholder="name")
    names = [n for n in series.ranked_characters() if search.lower() in n.lower()]
    looks = studio.looks()
    shown = names[ui.paginate(len(names), CARDS_PER_PAGE, "ch_page")]
    portraits = {name: studio.portrait_of(name) for name in shown}
    ui.placeholder_banner(*(p for p in portraits.values() if p is not None))
    if not any(portraits.values()):
        st.info("No portraits yet: run `python dataprep.py`, or open a character and render one.")
    for start in range(0, len(shown), COLUMNS):
        for column, name in zip(st.columns(COLUMNS), shown[start : start + COLUMNS], strict=False):
            with column.container(border=True):
                portrait = portraits[name]
                if portrait is not None and ui.current_store().image_path(portrait).is_file():
                    st.image(str(ui.current_store().image_path(portrait)), width="stretch")
                else:
                    st.caption("No portrait yet")
                episodes = len(series.episodes_with(name))
                st.markdown(f"**{name}**")
                st.caption(
                    f"{looks.get(name) or 'No look yet'}  \n"
                    f"{episodes} episode{'s' if episodes != 1 else ''}"
                )
                if st.button("Open", key=f"ch_open_{ui.widget_id(name)}"):
                    st.query_params["character"] = name
                    st.rerun()
    scene_composer(series, studio)


def scene_composer(series, studio) -> None:
    """A scene with up to three characters: each one's portrait conditions their side of the
    image (IP-Adapter masks), shown as a layout before it is made."""
    st.subheader("Characters together")
    if not ui.capabilities().ip_adapter:
        st.info(
            "With an IP-Adapter (STUDIO_IP_ADAPTER), up to three characters' portraits can steer "
            "one scene, each on their side of the image."
        )
        return
    st.caption(
        "Up to three characters, the first on the left: each portrait steers only its part of "
        "the image, so faces do not blend; the prompt says who stands where."
    )
    names = st.multiselect(
        "Characters (in order, left to right)",
        series.ranked_characters(),
        max_selections=MAX_REFERENCES,
        key="ch_scene_names",
    )
    scene = st.text_input(
        "The scene",
        "in the sitting room at 221B Baker Street, by the fire, evening, oil painting",
        key="ch_scene_text",
    )
    low, high = REFERENCE_SCALE
    scale = st.slider(
        "Reference scale", low, high, ui.current_settings().reference_scale, 0.05,
        key="ch_scene_scale", help="How strongly each portrait steers its part: 0 ignores it.",
    )  # fmt: skip
    settings = ui.current_settings()
    if names:
        st.image(
            layout_preview(names, (settings.width, settings.height)),
            caption="Who stands where",
            width=320,
        )
    if st.button("Make the scene", key="ch_scene_make", type="primary", disabled=not names):
        with ui.guard("Making the scene"), ui.step_progress() as on_step:
            made = studio.cast_scene(names, scene, reference_scale=scale, on_step=on_step)
            st.session_state["ch_scene_made"] = made.key
            if made.cached:
                st.toast("That scene was made before: it was already in the catalog.")
    made_key = st.session_state.get("ch_scene_made")
    made = ui.current_store().find_image(made_key) if made_key else None
    if made is not None:
        ui.image_card(made, ", ".join(made.provenance.get("cast", [])), key="ch_scene")


def look_editor(studio, name: str, prefix: str) -> None:
    """The current look in text areas; saving makes a new version, an error saves nothing."""
    record = ui.current_store().character(name)
    if record is None:
        st.info("No look yet: the LLM writes one from the description and the episodes.")
        if st.button("Write with the LLM", key=f"{prefix}_write", type="primary"):
            with ui.guard("Writing the look"), st.spinner("The LLM is writing the look…"):
                studio.character_look(name)
                st.rerun()
        return
    # Keys carry the version: a new version fills the areas afresh; a failed save keeps the text.
    version_prefix = f"{prefix}_v{record.version}"
    descriptor = st.text_area(
        "Descriptor",
        record.descriptor,
        key=f"{version_prefix}_descriptor",
        height=80,
        help=f"The look in English, as the image model reads it (whatever the language of the "
        f"description): comma-separated looks (who, face, hair, clothing, palette), at most "
        f"{DESCRIPTOR_TOKENS} CLIP tokens: two people and a scene fit in one prompt.",
    )
    portrait = st.text_area(
        "Portrait prompt",
        record.portrait,
        key=f"{version_prefix}_portrait",
        height=110,
        help="The prompt of the reference portrait; it has to contain the descriptor word for "
        "word. Left as it was, it takes the new descriptor in place of the old.",
    )
    if st.button("Save as new version", key=f"{prefix}_save", type="primary"):
        with ui.guard("Saving the look"):
            unchanged = portrait.strip() == record.portrait
            saved = studio.edit_character(name, descriptor, None if unchanged else portrait)
            if saved.version == record.version:
                st.toast("Nothing changed: the look is as it was.")
            else:
                st.toast(f"Saved as version {saved.version}.")
                st.rerun()


def versions_table(name: str) -> None:
    versions = ui.current_store().character_versions(name)
    if not versions:
        return
    st.markdown("**Versions**")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "version": v.version,
                    "source": v.source,
                    "note": v.note,
                    "date": v.created_at,
                    "descriptor": v.descriptor,
                }
                for v in reversed(versions)
            ]
        ),
        hide_index=True,
        width="stretch",
    )


def alternate_reality(studio, name: str, prefix: str) -> None:
    """The character, from their portrait, in another world; the result beside the portrait."""
    st.subheader("Alternate reality")
    left, middle, right = st.columns([2, 2, 1])
    choice = left.selectbox("Reality", [*REALITIES, OTHER_REALITY], key=f"{prefix}_reality")
    reality = choice
    if choice == OTHER_REALITY:
        reality = middle.text_input(
            "Which reality?",
            key=f"{prefix}_reality_other",
            max_chars=MAX_REALITY,
            placeholder="a Western saloon",
        )
    strength = right.slider(
        "Strength",
        0.3,
        0.9,
        0.6,
        step=0.05,
        key=f"{prefix}_strength",
        help="How much of the portrait is redrawn: low keeps the person, high the reality.",
    )
    if st.button("Generate", key=f"{prefix}_reality_generate", type="primary"):
        with (
            ui.guard("Making the alternate reality"),
            ui.step_progress("The LLM is imagining the reality…") as on_step,
        ):
            made = studio.alternate_reality(name, reality, strength=strength, on_step=on_step)
            st.session_state[f"{prefix}_reality_made"] = made.key
            if made.cached:
                st.toast("That reality was made before: it was already in the catalog.")
    made_key = st.session_state.get(f"{prefix}_reality_made")
    made = ui.current_store().find_image(made_key) if made_key else None
    if made is not None:
        source = ui.source_of(made)
        before, after = st.columns(2)
        if source is not None:
            with before:
                ui.image_card(source, ui.image_label(source), key=f"{prefix}_from", actions=False)
        with after:
            ui.image_card(made, ui.image_label(made), key=f"{prefix}_made", actions=False)
    realities = ui.current_store().images(target="reality", style=name)
    earlier = [row for row in realities if row["cache_key"] != made_key]
    if earlier:
        st.markdown(f"**Earlier realities ({len(earlier)})**")
        image_grid(list(reversed(earlier)), f"{prefix}_realities")


def image_grid(rows, key: str) -> None:
    shown = rows[ui.paginate(len(rows), CARDS_PER_PAGE, f"{key}_page")]
    for start in range(0, len(shown), COLUMNS):
        for column, row in zip(st.columns(COLUMNS), shown[start : start + COLUMNS], strict=False):
            with column:
                if ui.image_card(row, ui.image_label(row), key=key):
                    ui.send_to_studio(ui.defaults_from_row(row))


def character_sheet(series, studio, name: str) -> None:
    if st.button("← All characters", key="ch_back"):
        del st.query_params["character"]
        st.rerun()
    st.title(name)
    prefix = f"ch_{ui.widget_id(name)}"
    character = series.characters.get(name)
    if character is not None and character.description:
        st.caption("Description, as the series data gives it:")
        st.write(character.description)
    note = note_for(series, name)
    if note:
        st.caption(f"Note: {note}.")
    episodes = series.episodes_with(name)
    if len(episodes) > 4:  # the main cast: their ids are enough
        st.caption(f"In {len(episodes)} episodes: " + ", ".join(e.id for e in episodes))
    elif episodes:
        st.caption("In " + ", ".join(f"{e.id} · {e.title}" for e in episodes))
    portrait = studio.portrait_of(name)
    ui.placeholder_banner(*([portrait] if portrait is not None else []))

    left, right = st.columns([1, 2], gap="large")
    with left:
        current = ui.current_store().character(name)
        if portrait is not None:
            ui.image_card(portrait, ui.image_label(portrait), key=f"{prefix}_portrait")
            drawn = (portrait.provenance.get("character") or {}).get("version")
            if current is not None and drawn != current.version:
                st.caption(f"This portrait is of look v{drawn}: render one of v{current.version}.")
        else:
            st.info("No portrait yet.")
        if st.button("Render portrait", key=f"{prefix}_render"):
            with ui.guard("Rendering the portrait"), ui.step_progress() as on_step:
                made = studio.character_portrait(name, on_step=on_step)
                if made.cached:
                    st.toast("The portrait of this look is already in the catalog.")
                st.rerun()
    with right:
        look_editor(studio, name, prefix)
        versions_table(name)

    alternate_reality(studio, name, prefix)

    appears = ui.current_store().images_with(name)
    st.subheader(f"Appears in ({len(appears)})")
    if not appears:
        st.caption("No image describes this character yet.")
    image_grid(list(reversed(appears)), f"{prefix}_in")


series, store = ui.open_catalog("Opening the characters")
if series is not None:
    studio = ui.current_studio()
    chosen = st.query_params.get("character")
    name = None
    if chosen:
        try:
            name = check_name(series, chosen)
        except StudioError as exc:
            st.error(f"{ui.escape_markdown(str(exc))} Pick one below.")
    with ui.guard("Showing the characters"):
        if name is None:
            cast_grid(series, studio)
        else:
            character_sheet(series, studio, name)
