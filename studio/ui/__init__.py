"""The dashboard's Streamlit glue: the only part of `studio` that imports streamlit (besides
`pages/` and `dashboard.py`, which call it). It may import every layer below it; nothing in the
package imports it.

It owns the cached resources (one studio per settings, one image backend per model, one LLM), the
error boundary that turns failures into `st.error` with what to do next, and the widgets the pages
share. Its modules, each named for what it owns: `routing` (every page through dashboard.py),
`resources`, `errors`, `controls`, `progress`, `prompt`, `cards`, `lineage`, `sidebar` and
`generate`. The pages call them through this package (`from studio import ui; ui.image_card(...)`);
the modules import one another directly, never through this file.
"""

from studio.ui.cards import CLIP_NOTE_HELP, denoising_strip_panel, image_card, refused_requests
from studio.ui.controls import (
    apply_pending,
    controls_values,
    defaults_from_row,
    defaults_from_settings,
    queue_controls,
    regenerate_panel,
    render_controls,
    send_to_studio,
    with_seed_choice,
)
from studio.ui.errors import escape_markdown, guard, placeholder_banner
from studio.ui.lineage import (
    REVISION_QUESTIONS,
    change_request,
    image_label,
    is_revision,
    show_trace,
    source_of,
    widget_id,
)
from studio.ui.progress import (
    generate,
    generate_many,
    interpolate,
    result_progress,
    stage_progress,
    step_progress,
)
from studio.ui.prompt import prompt_error, prompt_extras
from studio.ui.resources import (
    capabilities,
    current_backend,
    current_llm,
    current_series,
    current_settings,
    current_store,
    current_studio,
)
from studio.ui.routing import mark_routed, route_through_dashboard
from studio.ui.sidebar import open_catalog, paginate, season_picker, sidebar

__all__ = [
    "CLIP_NOTE_HELP",
    "REVISION_QUESTIONS",
    "apply_pending",
    "capabilities",
    "change_request",
    "controls_values",
    "current_backend",
    "current_llm",
    "current_series",
    "current_settings",
    "current_store",
    "current_studio",
    "defaults_from_row",
    "defaults_from_settings",
    "denoising_strip_panel",
    "escape_markdown",
    "generate",
    "generate_many",
    "guard",
    "image_card",
    "image_label",
    "interpolate",
    "is_revision",
    "mark_routed",
    "open_catalog",
    "paginate",
    "placeholder_banner",
    "prompt_error",
    "prompt_extras",
    "queue_controls",
    "refused_requests",
    "regenerate_panel",
    "render_controls",
    "result_progress",
    "route_through_dashboard",
    "season_picker",
    "send_to_studio",
    "show_trace",
    "sidebar",
    "source_of",
    "stage_progress",
    "step_progress",
    "widget_id",
    "with_seed_choice",
]
