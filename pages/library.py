"""Prompt Library: every prompt the studio made or imported, found by meaning (in any language) or
by an image; an idea, or a found prompt, turned into 3 better prompts by the LLM, to render or to
send to the Studio; prompt collections imported from CSV."""

import tempfile
from pathlib import Path

import streamlit as st

from studio import ui
from studio.library.service import MAX_K, MAX_QUERY

ui.route_through_dashboard(__file__)

PER_PAGE = 24
COLUMNS = 4
DEFAULT_K = 12
USED_BY_SHOWN = 4  # labels of what uses a prompt, on its card
PARENTS_SHOWN = 4
IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]
KINDS = {"all": None, "real": False, "placeholder": True}  # the placeholder filter's values
SEARCHING = "Searching… (prompts not embedded yet are embedded first, up to 1,000)"


def keep_up(library) -> None:
    """Copy in what the catalog made since the last run (and hash its new images) without
    embedding: a large backlog waits for its button or a search, not for every run."""
    with ui.stage_progress() as on_progress:
        library.sync(on_progress=on_progress, clip=False, limit=0)


def overview(library) -> None:
    """The stats line, how the library searches, and the button for texts not embedded yet."""
    counts = library.stats()
    clip = ui.current_settings().clip_model.strip()
    by_image = f"CLIP ({clip})" if clip else "file, PNG metadata and perceptual hash"
    st.caption(
        f"**{counts.get('texts', 0):,} prompts**, used by {counts.get('image', 0):,} catalog "
        f"images, {counts.get('prompt', 0):,} prompt records and {counts.get('import', 0):,} "
        f"imported rows · text search by meaning ({library.embedder.name}) · image search by "
        f"{by_image}"
    )
    waiting = counts["waiting"]
    if not waiting:
        return
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.info(
        f"{waiting:,} prompts are not searchable yet. A search embeds up to 1,000 of them "
        "first; embed them all now with the button.",
        icon=":material/hourglass_top:",
    )
    if right.button(f"Embed {waiting:,} waiting prompts", key="lib_embed"):
        with ui.guard("Embedding the waiting prompts"), ui.stage_progress() as on_progress:
            library.sync(on_progress=on_progress)
            st.rerun()


def search_form(series, library) -> tuple[str, str, int, dict]:
    """The query, its filters and k; which button was pressed ("search", "improve" or "")."""
    with st.form("lib_form", border=False):
        query = st.text_input(
            "Search the prompts",
            key="lib_query",
            max_chars=MAX_QUERY,
            placeholder="a detective examining a clue · detetive examinando uma pista",
            help="By meaning, in any language: the words need not match.",
        )
        with st.expander("Filters"):
            first, second, third = st.columns(3)
            choices = library.facets()
            season = first.selectbox(
                "Season",
                [None, *series.seasons],
                format_func=lambda n: (
                    "Any" if n is None else f"{series.seasons[n].id} · {series.seasons[n].title}"
                ),
                key="lib_season",
            )
            target = second.selectbox(
                "Made for", [None, *choices["target"]], format_func=_any, key="lib_target"
            )
            style = third.selectbox(
                "Style", [None, *choices["style"]], format_func=_any, key="lib_style"
            )
            model = first.selectbox(
                "Model", [None, *choices["model"]], format_func=_any, key="lib_model"
            )
            since = second.date_input("Made since", value=None, key="lib_since")
            until = third.date_input("Made until", value=None, key="lib_until")
            kind = first.radio("Images", list(KINDS), horizontal=True, key="lib_kind")
            site = second.selectbox(
                "Source site", [None, *choices["source_site"]], format_func=_any, key="lib_site",
                help="Of imported prompts, as in their CSV.",
            )  # fmt: skip
        k = st.slider("Results", 1, MAX_K, DEFAULT_K, key="lib_k")
        buttons = st.container(horizontal=True)
        search = buttons.form_submit_button("Search", type="primary", key="lib_search")
        improve = buttons.form_submit_button(
            "Improve my idea",
            key="lib_improve_idea",
            help="The LLM writes 3 specific prompts from your words and the library's closest.",
        )
    filters = {
        "season": season,
        "target": target,
        "style": style,
        "model": model,
        "placeholder": KINDS[kind],
        "since": since,
        "until": until,
        "source_site": site,
    }
    return "search" if search else "improve" if improve else "", query, k, filters


def _any(value) -> str:
    return "Any" if value is None else str(value)


def search(library, query: str, k: int, filters: dict) -> None:
    with ui.guard("Searching"), st.spinner(SEARCHING), ui.stage_progress() as on_progress:
        hits = library.search(query, k=k, on_progress=on_progress, **filters)
        st.session_state["lib_results"] = {"kind": "text", "query": query, "hits": hits}
        st.rerun()


def image_drop(library, k: int) -> None:
    """Reverse search: a dropped image finds its catalog copies (or, with CLIP, images like it)
    and the prompts likely behind it. Each new file is searched once; a failed one again."""
    upload = st.file_uploader(
        "Or drop an image", type=IMAGE_TYPES, key="lib_image",
        help="Finds the catalog images it is a copy of (even resized or recompressed) and "
        "their prompts.",
    )  # fmt: skip
    if upload is None or upload.file_id == st.session_state.get("lib_image_seen"):
        return
    with (
        ui.guard("Searching by image"),
        st.spinner(SEARCHING),
        ui.stage_progress() as on_progress,
    ):
        found = library.search_image(upload.getvalue(), k=k, on_progress=on_progress)
        st.session_state["lib_image_seen"] = upload.file_id
        st.session_state["lib_results"] = {"kind": "image", "name": upload.name, "found": found}
        st.rerun()


def improve(library, idea: str) -> None:
    """3 prompts from `idea`, shown above the results."""
    with (
        ui.guard("Improving the idea"),
        st.spinner("The LLM is writing 3 prompts…"),
        ui.stage_progress() as on_progress,
    ):
        st.session_state["lib_improvement"] = library.improve(idea, on_progress=on_progress)
        st.toast("3 improved prompts are above the results.")
        st.rerun()


def improvement_section(library) -> None:
    improvement = st.session_state.get("lib_improvement")
    if improvement is None:
        return
    st.subheader("Improved prompts")
    st.caption(
        f"From the idea: {improvement.idea}"
        + (" · answered from the LLM cache" if improvement.cached else "")
    )
    rendered = st.session_state.setdefault("lib_rendered", {})
    prompts = improvement.prompts
    for column, (n, improved) in zip(
        st.columns(len(prompts)), enumerate(prompts, start=1), strict=True
    ):
        with column.container(border=True):
            st.markdown(f"**Prompt {n}**")
            st.code(improved.prompt, language=None, wrap_lines=True)
            st.caption(improved.reasoning)
            if st.button("Render", key=f"lib_render_{n}", type="primary"):
                with ui.guard("Rendering the prompt"), ui.step_progress() as on_step:
                    made = library.render(improved, on_step=on_step)
                    rendered[improved.key] = made.key
                    if made.cached:
                        st.toast("That image was already in the catalog.")
            if st.button("Send to Studio", key=f"lib_send_improved_{n}"):
                values = ui.defaults_from_settings(improved.prompt, improved.negative_prompt)
                ui.send_to_studio(values)
            made_key = rendered.get(improved.key)
            row = ui.current_store().find_image(made_key) if made_key else None
            if row is not None:
                ui.image_card(row, ui.image_label(row), key=f"lib_made_{n}", actions=False)
    if improvement.examples:
        with st.expander(f"The {len(improvement.examples)} library prompts it started from"):
            for hit in improvement.examples:
                st.caption(f"{hit.score:.2f} · {used_by(hit)}")
                st.code(hit.text, language=None, wrap_lines=True)


def used_by(hit) -> str:
    """What uses a prompt, in words: "S02E09 image, S02E09 prompt"."""
    labels = list(
        dict.fromkeys(
            item.label if item.kind == "import" else f"{item.label} {item.kind}".strip()
            for item in hit.items
        )
    )
    if not labels:
        return "nothing any more"
    more = len(labels) - USED_BY_SHOWN
    return ", ".join(labels[:USED_BY_SHOWN]) + (f" and {more} more" if more > 0 else "")


def parent_label(ref: str) -> str:
    """A parent of a prompt or image (a catalog image's key, a prompt record's key, an imported
    row's `site:id`) in words."""
    row = ui.current_store().find_image(ref)
    if row is not None:
        return ui.image_label(row)
    records = ui.current_store().prompts(key=ref)
    if records:
        return f"the prompt for {records[0].target.label()}"
    return ref


def lineage(hit) -> str:
    parents = list(dict.fromkeys(ref for item in hit.items for ref in item.parents))
    if not parents:
        return ""
    more = len(parents) - PARENTS_SHOWN
    shown = ", ".join(parent_label(ref) for ref in parents[:PARENTS_SHOWN])
    return f"Made from {shown}" + (f" and {more} more" if more > 0 else "")


def prompt_only(hit) -> None:
    """Where a prompt without a catalog image comes from."""
    item = hit.item
    if item is not None and item.kind == "import":
        size = f" · {item.width}x{item.height}" if item.width and item.height else ""
        st.caption(f"Prompt only · imported from {item.source_site}{size}")
        if item.url and item.url.startswith(("https://", "http://")):
            st.markdown(f"[Where it comes from](<{item.url}>)")
    else:
        st.caption("Prompt only · no image of it in the catalog yet")


def hit_card(library, hit, row, key: str) -> None:
    """One found prompt: its image when the catalog has one, the text, the score, what uses it
    and what it was made from; Send to Studio and Improve."""
    path = ui.current_store().image_path(row) if row is not None else None
    if path is not None and path.is_file():
        st.image(str(path), caption=ui.image_label(row), width="stretch")
    else:
        prompt_only(hit)
    st.text(hit.text)
    st.caption(f"Score {hit.score:.2f} by {hit.how} · used by {used_by(hit)}")
    line = lineage(hit)
    if line:
        st.caption(line)
    if st.button("Send to Studio", key=f"lib_send_{key}"):
        negative = row["negative_prompt"] if row is not None else ""
        ui.send_to_studio(ui.defaults_from_settings(hit.text, negative))
    if st.button("Improve", key=f"lib_improve_{key}", help="3 prompts from this one, by the LLM"):
        improve(library, hit.text[:MAX_QUERY])  # an imported prompt may be longer


def hit_grid(library, hits, section: str) -> None:
    store = ui.current_store()
    rows = {hit.image_key: store.find_image(hit.image_key) for hit in hits if hit.image_key}
    numbered = list(enumerate(hits))
    shown = numbered[ui.paginate(len(numbered), PER_PAGE, f"lib_{section}_page")]
    for start in range(0, len(shown), COLUMNS):
        for column, (n, hit) in zip(
            st.columns(COLUMNS), shown[start : start + COLUMNS], strict=False
        ):
            with column.container(border=True):
                hit_card(library, hit, rows.get(hit.image_key), f"{section}_{n}")


def results_section(library) -> None:
    results = st.session_state.get("lib_results")
    if results is None:
        return
    if results["kind"] == "text":
        hits = results["hits"]
        st.subheader(f"{len(hits)} prompts like “{ui.escape_markdown(results['query'])}”")
        if not hits:
            st.info("Nothing found: loosen the filters, or embed the waiting prompts.")
        ui.placeholder_banner(*_catalog_rows(hits))
        hit_grid(library, hits, "text")
        return
    found = results["found"]
    st.subheader(f"What {ui.escape_markdown(results['name'])} finds")
    st.caption("Looked for: " + ", ".join(found.used))
    for note in found.notes:
        st.info(ui.escape_markdown(note), icon=":material/info:")
    ui.placeholder_banner(*_catalog_rows(found.images))
    st.markdown(f"**Catalog images like it ({len(found.images)})**")
    if found.images:
        hit_grid(library, found.images, "image")
    else:
        st.caption("No catalog image like it.")
    st.markdown(f"**The prompts likely behind it ({len(found.prompts)})**")
    if found.prompts:
        hit_grid(library, found.prompts, "behind")
    else:
        st.caption("No prompt found for it.")


def _catalog_rows(hits) -> list:
    rows = [ui.current_store().find_image(hit.image_key) for hit in hits if hit.image_key]
    return [row for row in rows if row is not None]


def import_section(library) -> None:
    with st.expander("Import prompts from a CSV"):
        st.caption(
            "Columns `id,prompt,url,width,height,source_site` (the 900k Diffusion Prompts "
            "dataset's); id and prompt are required. Bad rows are skipped with their reason and "
            "a second import adds nothing twice."
        )
        upload = st.file_uploader("CSV file", type=["csv"], key="lib_csv")
        site = st.text_input(
            "Source site",
            key="lib_csv_site",
            placeholder="the file's name",
            help="For the rows whose source_site column is empty or missing.",
        )
        if st.button("Import", key="lib_import", type="primary", disabled=upload is None):
            with (
                ui.guard("Importing the CSV"),
                tempfile.TemporaryDirectory() as folder,
                ui.stage_progress() as on_progress,
            ):
                # Under its own name: a row without source_site is named after the file.
                name = Path(upload.name).name.strip(". ") or "import.csv"
                path = Path(folder) / name
                path.write_bytes(upload.getvalue())
                report = library.import_csv(path, site.strip() or None, on_progress=on_progress)
                st.session_state["lib_import_report"] = report
                st.rerun()
        report = st.session_state.get("lib_import_report")
        if report is not None:
            (st.warning if report.stopped else st.success)(report.summary())
            for example in report.examples:
                st.caption(example)


st.title("Prompt Library")
series, store = ui.open_catalog("Opening the prompt library")
if series is not None:
    with ui.guard("Showing the prompt library"):
        library = ui.current_studio().library
        keep_up(library)
        overview(library)
        left, right = st.columns([2, 1], gap="large")
        with left:
            action, query, k, filters = search_form(series, library)
        with right:
            image_drop(library, k)
        if action == "search":
            search(library, query, k, filters)
        elif action == "improve":
            improve(library, query)
        improvement_section(library)
        results_section(library)
        import_section(library)
