"""A failing browser test's report carries the dashboard server's thread stacks and log."""

from __future__ import annotations

import pytest

from tests.support.browser import LIVE_SERVERS, server_report


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when == "call" and LIVE_SERVERS:
        report.sections.append(("dashboard server (threads, log)", server_report()))
