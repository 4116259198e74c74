"""The series art studio's dashboard: `streamlit run dashboard.py`.

Routes only: the pages live in `pages/` and the work in the `studio` package.
"""

import streamlit as st

from studio import ui

st.set_page_config(page_title="Series art studio", page_icon="🎬", layout="wide")

PAGES = [
    st.Page("pages/episodes.py", title="Episodes", icon=":material/live_tv:", default=True),
    st.Page("pages/seasons.py", title="Seasons", icon=":material/view_column:"),
    st.Page("pages/characters.py", title="Characters", icon=":material/groups:"),
    st.Page("pages/studio.py", title="Studio", icon=":material/tune:"),
    st.Page("pages/gallery.py", title="Gallery", icon=":material/photo_library:"),
    st.Page("pages/library.py", title="Prompt Library", icon=":material/manage_search:"),
    st.Page("pages/marketing.py", title="Marketing Assistant", icon=":material/campaign:"),
    st.Page("pages/jobs.py", title="Batch jobs", icon=":material/pending_actions:"),
]

page = st.navigation(PAGES)
ui.mark_routed()
ui.sidebar()
page.run()
