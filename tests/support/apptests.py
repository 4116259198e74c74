"""Helpers for the pages' AppTests."""

from __future__ import annotations


def run(at, timeout: float = 180):
    """Run the app (or rerun it after a widget change); no exception may escape."""
    at.run(timeout=timeout)
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at) -> list[str]:
    return [e.value for e in at.error]
