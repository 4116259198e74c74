"""What frames every page: the sidebar (the series, the image model, the LLM and where the
catalog is), opening the series and the catalog for a page, and the season and page pickers.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from studio.catalog.store import Store
from studio.core.dataset import Series
from studio.llm.choice import backend_description
from studio.ui.errors import guard
from studio.ui.progress import CANCELLED_KEY
from studio.ui.resources import current_backend, current_series, current_settings, current_store


def paginate(count: int, per_page: int, key: str) -> slice:
    """A page picker when `count` items need more than one page; the slice to show."""
    pages = max(1, -(-count // per_page))
    if pages == 1:
        return slice(0, count)
    page = st.number_input(f"Page (of {pages})", 1, pages, key=key)
    start = (int(page) - 1) * per_page
    return slice(start, start + per_page)


def sidebar() -> None:
    """What the app works on: the series, the models and where the catalog is."""
    s = current_settings()
    if st.session_state.pop(CANCELLED_KEY, False):
        st.toast("Render cancelled: nothing was stored.", icon=":material/stop:")
    with st.sidebar:
        with guard("Reading the series"):
            current = current_series()
            st.markdown(
                f"**{current.title}**  \n{len(current.seasons)} seasons · "
                f"{len(current.episodes)} episodes"
            )
        with guard("Loading the image model"):
            model = current_backend()
            st.caption(f"Image model: {model.label} on {model.device}")
        st.caption(f"LLM: {backend_description(s)}")
        st.caption(f"Catalog: {s.data_dir}")


def open_catalog(action: str) -> tuple[Series | None, Store | None]:
    """The series and the catalog, or (None, None) with an error box saying why not."""
    with guard(action):
        return current_series(), current_store()
    return None, None


def season_picker(series: Series, key: str, where: Any = st) -> int:
    """A season selectbox labelled with the seasons' ids and titles."""
    return where.selectbox(
        "Season",
        list(series.seasons),
        format_func=lambda n: f"{series.seasons[n].id} · {series.seasons[n].title}",
        key=key,
    )
