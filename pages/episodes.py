"""Episodes: a season's episode cards; an episode's images, prompt, Regenerate panel, change
requests and storyboard."""

from dataclasses import replace

import streamlit as st

from studio import ui
from studio.core.targets import Target
from studio.workflows.batch import save_episode_prompt
from studio.writing.prompting import write_episode_prompt
from studio.writing.storyboards import moment_count, panels_zip, storyboard_png

ui.route_through_dashboard(__file__)

CARDS_PER_PAGE = 24
COLUMNS = 4


def episode_list(series, store) -> None:
    st.title("Episodes")
    season = ui.season_picker(series, "ep_season")
    search = st.text_input("Find an episode", key="ep_search", placeholder="title or summary")
    episodes = [
        e for e in series.episodes_of(season) if search.lower() in f"{e.title} {e.summary}".lower()
    ]
    covers, counts = store.episode_covers(season), store.image_counts(season)
    ui.placeholder_banner(*covers.values())
    if not covers:
        st.info("No images yet for this season: run `python dataprep.py` to make them.")
    shown = episodes[ui.paginate(len(episodes), CARDS_PER_PAGE, "ep_page")]
    for start in range(0, len(shown), COLUMNS):
        for column, episode in zip(
            st.columns(COLUMNS), shown[start : start + COLUMNS], strict=False
        ):
            with column.container(border=True):
                cover = covers.get(episode.episode)
                if cover is not None and store.image_path(cover).is_file():
                    st.image(str(store.image_path(cover)), width="stretch")
                else:
                    st.caption("No image yet")
                count = counts.get(episode.episode, 0)
                st.markdown(f"**{episode.id}** · {episode.title}")
                st.caption(f"{count} image{'s' if count != 1 else ''}")
                if st.button("Open", key=f"ep_open_{episode.id}"):
                    st.query_params["episode"] = episode.id
                    st.rerun()


def rewrite_prompt(series, episode, store, prefix: str) -> None:
    """Ask the LLM for another prompt (another sampling seed) and load it into the controls."""
    llm, backend = ui.current_llm(), ui.current_backend()
    earlier = len(store.prompts(target="episode", season=episode.season, episode=episode.episode))
    with st.spinner("The LLM is rewriting the prompt…"):
        result = write_episode_prompt(
            llm,
            series,
            episode,
            backend.count_tokens,
            seed=llm.seed + earlier,
        )
    save_episode_prompt(store, episode, result, llm.model)
    current = ui.controls_values(prefix, ui.defaults_from_settings())
    ui.queue_controls(
        prefix,
        replace(current, prompt=result.spec.prompt, negative_prompt=result.spec.negative_prompt),
    )


def episode_view(series, store, episode) -> None:
    if st.button("← All episodes", key="ep_back"):
        del st.query_params["episode"]
        st.rerun()
    st.title(f"{episode.id} · {episode.title}")
    images = store.images(target="episode", season=episode.season, episode=episode.episode)
    ui.placeholder_banner(*images)
    st.write(episode.summary)
    characters = series.characters_of(episode)
    if characters:
        st.caption(
            "Characters: "
            + "; ".join(
                f"**{c.name}**" + (f" ({c.description})" if c.description else "")
                for c in characters
            )
        )
    prompts = store.prompts(target="episode", season=episode.season, episode=episode.episode)
    spec = prompts[-1].spec if prompts else None
    if spec and spec.rationale:
        st.caption(f"Why this image (the LLM's rationale): {spec.rationale}")

    cover_key = store.cover_keys(episode.season).get(episode.episode)
    cover_key = cover_key or (images[0]["cache_key"] if images else None)
    prefix = f"ep_{episode.id}"
    gallery, panel = st.columns([3, 2], gap="large")
    with gallery:
        st.subheader(f"Images ({len(images)})")
        if not images:
            st.info("No image yet: make one with Regenerate, or run `python dataprep.py`.")
        for start in range(0, len(images), 2):
            for column, row in zip(st.columns(2), images[start : start + 2], strict=False):
                with column:
                    is_cover = row["cache_key"] == cover_key
                    label = f"#{row['image_index'] + 1} · seed {row['seed']}"
                    caption = label + (" · cover" if is_cover else "")
                    if ui.image_card(row, caption, key="ep", controls=prefix):
                        ui.send_to_studio(ui.defaults_from_row(row))
                    if not is_cover and st.button("Make cover", key=f"ep_cover_{row['id']}"):
                        store.set_cover(episode.season, episode.episode, row["cache_key"])
                        st.rerun()

    ui.apply_pending(prefix)
    with panel:
        st.subheader("Regenerate")
        if st.button(
            "Rewrite the prompt",
            key=f"{prefix}_rewrite",
            help="Ask the LLM for another prompt for this episode.",
        ):
            with ui.guard("Rewriting the prompt"):
                rewrite_prompt(series, episode, store, prefix)
        defaults = (
            ui.defaults_from_row(images[-1])
            if images
            else ui.defaults_from_settings(
                spec.prompt if spec else "", spec.negative_prompt if spec else ""
            )
        )
        if spec:
            defaults = replace(defaults, prompt=spec.prompt, negative_prompt=spec.negative_prompt)
        target = Target("episode", episode.season, episode.episode)
        cast = [n for n in series.ranked_characters() if n in episode.characters]
        ui.regenerate_panel(prefix, defaults, target, spec, cast)
        st.subheader("Ask for a change")
        st.caption(
            "Say what should change; the LLM works out what that means for the prompt, step by "
            "step, and a new image joins the episode's. The old one stays."
        )
        ui.change_request(images, f"{prefix}_change")
    storyboard(episode, f"{prefix}_board")


def storyboard(episode, key: str) -> None:
    """The episode's key moments as panels in story order; made, or made again, on request."""
    st.subheader("Storyboard")
    studio = ui.current_studio()
    board = studio.stored_storyboard(episode.season, episode.episode)
    if board is None:
        st.caption(
            "No storyboard yet: the LLM picks the episode's key moments and each becomes a panel."
        )
    else:
        paths = []
        for column, moment, image in zip(
            st.columns(len(board.moments)), board.moments, board.images, strict=True
        ):
            title = f"{int(moment.target.style or 0) + 1}. {moment.spec.rationale}"
            path = ui.current_store().image_path(image) if image is not None else None
            if path is not None and path.is_file():
                column.image(str(path), caption=title, width="stretch")
                paths.append(path)
            else:
                column.caption(f"{title} (not rendered yet)")
        if board.complete and len(paths) == len(board.moments):
            stem = f"{episode.id}-storyboard"
            left, right = st.columns(2)
            left.download_button(
                "Download the strip (PNG)",
                lambda: storyboard_png(paths),  # made when clicked, not on every run
                file_name=f"{stem}.png",
                mime="image/png",
                key=f"{key}_strip",
                on_click="ignore",
            )
            right.download_button(
                "Download the panels (zip)",
                lambda: panels_zip(paths, stem),
                file_name=f"{stem}.zip",
                mime="application/zip",
                key=f"{key}_zip",
                on_click="ignore",
            )
    label = "Make it again" if board is not None else "Make the storyboard"
    if st.button(label, key=f"{key}_make"):
        with (
            ui.guard("Making the storyboard"),
            ui.result_progress(
                moment_count(episode.summary), "The LLM is picking the key moments…", "Panel"
            ) as on_result,
        ):
            studio.storyboard(
                episode.season, episode.episode, refresh=board is not None, on_result=on_result
            )
            st.rerun()


series, store = ui.open_catalog("Opening the episodes")
if series is not None:
    chosen = st.query_params.get("episode")
    episode = next((e for e in series.episodes if e.id == chosen), None)
    if chosen and episode is None:
        st.error(
            f"No episode {ui.escape_markdown(chosen)} in {ui.escape_markdown(series.title)}; "
            "pick one below."
        )
    if episode is None:
        episode_list(series, store)
    else:
        episode_view(series, store, episode)
