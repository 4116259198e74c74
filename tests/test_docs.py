"""The docs stay true to the code: README.md is short, every environment variable the code reads
is documented in docs/, and every relative link and image in README.md and docs/ exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 300

ENV_NAME = re.compile(r"""["']((?:STUDIO|OPENAI)_[A-Z_]+)["']""")
# [text](target) and ![alt](target), with an optional "title" after the target.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def env_vars_in_code() -> set[str]:
    return {
        name
        for path in (ROOT / "studio").rglob("*.py")
        for name in ENV_NAME.findall(path.read_text(encoding="utf-8"))
    }


def relative_links(markdown: Path) -> list[str]:
    """The link and image targets of a Markdown file that point into the project: not http(s),
    mailto or a pure #anchor, and not inside code."""
    text = CODE_SPAN.sub("", FENCE.sub("", markdown.read_text(encoding="utf-8")))
    targets = []
    for bracketed, bare in LINK.findall(text):
        target = bracketed or bare
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0])
    return targets


def test_the_docs_exist():
    assert DOCS, "docs/*.md is missing"


def test_every_environment_variable_the_code_reads_is_documented():
    names = env_vars_in_code()
    assert "STUDIO_IMAGE_MODEL" in names and "OPENAI_API_KEY" in names  # the scan works
    docs = "\n".join(path.read_text(encoding="utf-8") for path in DOCS)
    missing = sorted(name for name in names if not re.search(rf"\b{name}\b", docs))
    assert missing == [], f"not documented in docs/*.md: {missing}"


def test_the_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES


@pytest.mark.parametrize(
    "markdown", [ROOT / "README.md", *DOCS], ids=lambda p: str(p.relative_to(ROOT))
)
def test_every_relative_link_and_image_exists(markdown: Path):
    broken = [
        target
        for target in relative_links(markdown)
        if target and not (markdown.parent / target).exists()
    ]
    assert broken == [], f"{markdown.relative_to(ROOT)} links to missing files: {broken}"


def test_the_link_check_finds_links():
    readme = relative_links(ROOT / "README.md")
    assert "assets/screenshots/episodes.png" in readme
    assert "docs/configuration.md" in readme
