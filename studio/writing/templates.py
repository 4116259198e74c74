"""The prompt templates in `prompts/` (sections `## system` and `## user`, `$name` placeholders),
versioned by the sha256 of their content, the season styles and the base negative prompt; and the
JSON block in which series data goes to the LLM."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from string import Template as StringTemplate
from typing import Any

from studio.core.config import resource_dir

PROMPTS_DIR = resource_dir("prompts")


@dataclass(frozen=True)
class Template:
    name: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def messages(self, **values: str) -> list[dict[str, str]]:
        """The chat messages, with `values` substituted; a missing value is an error."""
        sections = re.split(r"^## (system|user)\s*$", self.text, flags=re.MULTILINE)
        messages = []
        for role, body in zip(sections[1::2], sections[2::2], strict=True):
            messages.append(
                {"role": role, "content": StringTemplate(body.strip()).substitute(values)}
            )
        return messages


@cache
def load_template(name: str) -> Template:
    return Template(name, (PROMPTS_DIR / name).read_text(encoding="utf-8"))


@cache
def load_styles() -> dict[str, dict[str, str]]:
    """The 5 season styles: key -> {name, style, negative}."""
    return json.loads((PROMPTS_DIR / "styles.json").read_text(encoding="utf-8"))


@cache
def base_negative() -> str:
    return (PROMPTS_DIR / "negative_base.txt").read_text(encoding="utf-8").strip()


def templates_hash(*names: str) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update(load_template(name).sha256.encode())
    return digest.hexdigest()


def data_block(data: dict[str, Any]) -> str:
    """`data` as the JSON block a template quotes: no text in it can close the block or open a
    new one."""
    return json.dumps(data, ensure_ascii=False, indent=1)
