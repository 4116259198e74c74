"""The expensive objects the pages share, from `st.cache_resource` factories: one studio per
settings (its catalog, LLM and image backend), one image backend per model behind the render
worker every session uses, and the configured series, re-read when its files change.

The accessors are named `current_*` so they read apart from the modules they return objects of.
Never mutate what they return: it is shared by every browser session.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import streamlit as st

from studio.api import Studio
from studio.catalog.store import Store
from studio.core.config import Settings, load_settings
from studio.core.dataset import Series, load_series
from studio.core.errors import StudioError
from studio.images.backends.base import Capabilities, ImageBackend
from studio.images.backends.registry import backend_settings, open_image_backend
from studio.images.worker import RenderWorker, shared_worker
from studio.llm.client import LLM


def current_settings() -> Settings:
    """Read on every run (cheap), so a changed env var or studio.toml shows on reload."""
    return load_settings()


def render_worker_for(key: tuple) -> RenderWorker:
    """The process's one image backend (one pipeline), behind the render worker that serves every
    browser session; a changed model closes the old one and frees its memory."""
    return shared_worker(key, lambda: open_image_backend(replace(Settings(), **dict(key))))


@st.cache_resource(show_spinner=False, max_entries=16)
def _cached_studio(settings_items: tuple, worker_id: int, _worker: RenderWorker) -> Studio:
    return Studio(Settings(**dict(settings_items)), backend=_worker)


def current_studio() -> Studio:
    """The studio for the current settings: catalog, LLM and image backend, shared by sessions."""
    s = current_settings()
    worker = render_worker_for(backend_settings(s))
    items = tuple(asdict(replace(s, data_dir=s.data_dir.resolve())).items())
    return _cached_studio(items, id(worker), worker)


def current_store() -> Store:
    return current_studio().store


def current_backend() -> ImageBackend:
    return current_studio().backend


def capabilities() -> Capabilities:
    """What the current image backend can do; everything when it cannot open (generating then
    says why), so a page still draws its controls."""
    try:
        return current_backend().capabilities
    except StudioError:
        return Capabilities()


def current_llm() -> LLM:
    return current_studio().llm


@st.cache_data(show_spinner=False, max_entries=4)
def _cached_series(path: str, modified: float) -> Series:
    return load_series(path)[0]


def current_series() -> Series:
    """The configured series, re-read when its files change."""
    path = Path(current_settings().series)
    files = [path, *path.glob("*")] if path.is_dir() else [path]
    modified = max((f.stat().st_mtime for f in files if f.exists()), default=0.0)
    return _cached_series(str(path), modified)
