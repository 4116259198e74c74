"""A failing browser test's report carries what its page showed, and the dashboard server's
thread stacks and log."""

from __future__ import annotations

import pytest

from tests.support.browser import FAILURE_NOTES, LIVE_SERVERS, server_report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when == "call":
        report.sections.extend(FAILURE_NOTES)
        for process, log in list(LIVE_SERVERS.items()):  # a fixture's server, still running
            report.sections.append(("dashboard server (threads, log)", server_report(process, log)))
    FAILURE_NOTES.clear()
