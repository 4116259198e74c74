"""Routing uses Streamlit's public API only, and every page asks to be routed through dashboard.py.

The behaviour itself (a deep link as the first request after a start) is tested in a real browser
in tests/ui/test_browser.py.
"""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRIVATE = re.compile(r"streamlit\.runtime|PagesManager|_pages_manager|uses_pages_directory")


def _sources() -> list[Path]:
    skip = {"tests", ".venv", "venv", "build", "node_modules"}
    return [
        path
        for path in ROOT.rglob("*.py")
        if not skip.intersection(path.relative_to(ROOT).parts[:-1])
        and not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
    ]


def test_no_private_streamlit_api_outside_the_tests():
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not found


def test_every_page_routes_through_the_dashboard_before_drawing_anything():
    for page in sorted((ROOT / "pages").glob("*.py")):
        body = ast.parse(page.read_text()).body
        first = next(
            node
            for node in body
            if not isinstance(node, (ast.Import, ast.ImportFrom))
            and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        )
        assert ast.unparse(first) == "ui.route_through_dashboard(__file__)", page.name


def test_the_dashboard_marks_its_runs_as_routed_before_running_a_page():
    lines = [line.strip() for line in (ROOT / "dashboard.py").read_text().splitlines()]
    assert lines.index("ui.mark_routed()") < lines.index("page.run()")
