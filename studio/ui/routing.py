"""Why every page calls `route_through_dashboard` first: the one work-around for Streamlit's
legacy `pages/`-directory mode, kept in this one place.

The user's design names a top-level `pages/` folder. With a folder of that name next to the entry
file, Streamlit 1.67 runs a page's script on its own (its legacy multipage mode) until some
session has called `st.navigation`; from then on, as the st.navigation documentation says, the
app ignores `pages/` in every session
(https://docs.streamlit.io/develop/api-reference/navigation/st.navigation). Streamlit has no
supported setting to turn that mode off: `client.showSidebarNavigation` only hides the legacy
navigation menu. So a page opened first after a start (a bookmark to /studio) would run without
dashboard.py's frame; `route_through_dashboard` runs dashboard.py in its place instead. Public
API only (tests/ui/test_routing.py checks). Renaming the folder would make all of this unneeded.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import streamlit as st

ROUTED_KEY = "_studio_routed"  # in session state: dashboard.py's st.navigation ran in this session
REROUTED_KEY = "_studio_rerouted"  # in session state: a page already asked for a rerun through it


def mark_routed() -> None:
    """dashboard.py calls this right after `st.navigation`: its pages now run inside its frame."""
    st.session_state[ROUTED_KEY] = True


def route_through_dashboard(page_file: str) -> None:
    """Make every URL go through dashboard.py's navigation, even the first one after a start.

    Each page calls this first with its `__file__`. When dashboard.py has not routed this
    session (a bookmark to /studio opened first after a restart), this runs dashboard.py in the
    page's place: its `st.navigation` switches the app to its pages and runs this page inside
    its layout, with the URL and query as they are (a rerun instead would show Streamlit's
    "page not found" first).
    """
    if st.session_state.get(ROUTED_KEY):
        return
    if st.session_state.get(REROUTED_KEY):  # the rerun did not go through dashboard.py
        st.error("This page runs inside the dashboard: start it with `streamlit run dashboard.py`.")
        st.stop()
    st.session_state[REROUTED_KEY] = True
    # Run the entry file in this page's place: its st.navigation switches the app to its pages
    # and runs this page inside its layout (this call then returns at once: the run is routed).
    entry = Path(page_file).resolve().parent.parent / "dashboard.py"
    runpy.run_path(str(entry), run_name="__main__")
    st.stop()
