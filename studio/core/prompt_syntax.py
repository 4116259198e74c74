"""AUTOMATIC1111's prompt syntax, read strictly: weights, BREAK and LoRA tags.

    parsed = parse_prompt("a (red:1.3) door, [fog] BREAK gaslight <lora:holmes:0.8>")
    parsed.sections  # ((Fragment("a ", 1.0), Fragment("red", 1.3), ...), (Fragment("gaslight"),))
    parsed.loras     # (("holmes", 0.8),)

`(text)` multiplies the weight of `text` by 1.1, `[text]` divides it by 1.1, `(text:1.3)` sets the
factor to 1.3; groups nest and multiply. `BREAK` ends a 75-token chunk and starts the next.
`<lora:name:weight>` (weight 1 when left out) applies a LoRA file and is no part of the text.
`\\(`, `\\)`, `\\[` and `\\]` are literal brackets.

Where AUTOMATIC1111 silently reads `(word:abc)` as the text "word:abc" at 1.1 and lets an
unclosed bracket weight the rest of the prompt, this parser refuses both, saying where and how to
write it instead: a prompt that weights something other than what its author meant is worse than
an error. The weights themselves are applied by compel
(studio.images.backends.diffusers.prompt_embeds), which takes the (text, weight) fragments made
here. Torch-free: requests are checked with it before any model work.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from studio.core.errors import ParameterError

ROUND_FACTOR = 1.1  # (text)
SQUARE_FACTOR = 1 / 1.1  # [text]
WEIGHT_RANGE = (0.0, 2.0)  # an explicit (text:w); 1 is normal, 0 drops the text's influence
LORA_WEIGHT_RANGE = (-2.0, 2.0)
BREAK = "BREAK"
LORA_TAG = re.compile(r"<lora:([^<>]*)>")
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")
_WEIGHTED_END = re.compile(r":([^()\[\]]*)\)")  # the end of a `(text:weight)` group


@dataclass(frozen=True)
class Fragment:
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class ParsedPrompt:
    sections: tuple[tuple[Fragment, ...], ...]  # split at BREAK; each starts a new chunk
    loras: tuple[tuple[str, float], ...] = ()  # (name, weight) in the prompt's order

    @property
    def plain(self) -> str:
        """The text without any syntax: what the prompt says, for pooled embeddings and CLIP."""
        return " ".join("".join(f.text for f in section).strip() for section in self.sections)

    @property
    def weighted(self) -> bool:
        """True when plain text encoding would not give these embeddings: a weight other than 1,
        or more than one chunk."""
        return len(self.sections) > 1 or any(
            f.weight != 1.0 for section in self.sections for f in section
        )


def _syntax_error(prompt: str, position: int, message: str) -> ParameterError:
    start = max(0, position - 20)
    excerpt = prompt[start : position + 20].replace("\n", " ")
    pointer = " " * (position - start + 1) + "^"
    return ParameterError(f"{message}\n  '{excerpt}'\n  {pointer}")


def _weight(text: str, prompt: str, position: int, low: float, high: float, what: str) -> float:
    text = text.strip()
    if not _NUMBER.fullmatch(text):
        raise _syntax_error(
            prompt,
            position,
            f"The weight in {what} has to be a number, e.g. 1.2, but is {text!r}"
            + ("; write \\( and \\) for literal brackets." if what == "(text:w)" else "."),
        )
    value = float(text)
    if not (math.isfinite(value) and low <= value <= high):
        raise _syntax_error(
            prompt,
            position,
            f"The weight in {what} has to be between {low:g} and {high:g} (1 is normal) but is "
            f"{value:g}.",
        )
    return value


def _loras(prompt: str) -> tuple[str, tuple[tuple[str, float], ...]]:
    """The prompt without its `<lora:...>` tags, and the tags' (name, weight)s."""
    found: list[tuple[str, float]] = []
    for match in LORA_TAG.finditer(prompt):
        name, _, weight = match.group(1).partition(":")
        name = name.strip()
        if not name:
            raise _syntax_error(prompt, match.start(), "A LoRA tag needs a name: <lora:name:0.8>.")
        value = 1.0
        if weight.strip():
            value = _weight(weight, prompt, match.start(), *LORA_WEIGHT_RANGE, f"<lora:{name}:…>")
        if any(name == seen for seen, _ in found):
            raise _syntax_error(
                prompt, match.start(), f"LoRA {name!r} is in the prompt twice; keep one tag."
            )
        found.append((name, value))
    return LORA_TAG.sub(" ", prompt), tuple(found)


def _fragments(text: str, prompt: str, offset: int) -> list[Fragment]:
    """One BREAK section's (text, weight) fragments."""
    out: list[tuple[str, float]] = []  # weights are multiplied in place as groups close
    open_groups: list[tuple[str, int, int]] = []  # bracket, position in text, index in out
    buffer: list[str] = []

    def flush() -> None:
        if buffer:
            out.append(("".join(buffer), 1.0))
            buffer.clear()

    def close(bracket: str, factor: float, position: int) -> None:
        flush()
        if not open_groups:
            raise _syntax_error(
                prompt,
                offset + position,
                f"This {bracket!r} closes nothing; remove it or write \\{bracket} for a literal "
                "one.",
            )
        opened, opened_at, start = open_groups.pop()
        if {"(": ")", "[": "]"}[opened] != bracket:
            raise _syntax_error(
                prompt,
                offset + position,
                f"{bracket!r} closes the {opened!r} at character {offset + opened_at + 1}; "
                "close the brackets in the order they were opened.",
            )
        for index in range(start, len(out)):
            fragment, weight = out[index]
            out[index] = (fragment, weight * factor)

    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\" and position + 1 < len(text) and text[position + 1] in "()[]\\":
            buffer.append(text[position + 1])
            position += 2
            continue
        if char in "([":
            flush()
            open_groups.append((char, position, len(out)))
        elif char == ":" and open_groups and open_groups[-1][0] == "(":
            end = _WEIGHTED_END.match(text, position)
            if end is None:  # a colon inside brackets that ends no weight: text
                buffer.append(char)
            else:
                weight = _weight(end.group(1), prompt, offset + position, *WEIGHT_RANGE, "(text:w)")
                close(")", weight, end.end() - 1)
                position = end.end()
                continue
        elif char == ")":
            close(")", ROUND_FACTOR, position)
        elif char == "]":
            close("]", SQUARE_FACTOR, position)
        else:
            buffer.append(char)
        position += 1
    flush()
    if open_groups:
        bracket, opened_at, _ = open_groups[-1]
        closing = {"(": ")", "[": "]"}[bracket]
        raise _syntax_error(
            prompt,
            offset + opened_at,
            f"This {bracket!r} is never closed; add {closing!r} or write \\{bracket} for a "
            "literal one.",
        )
    merged: list[Fragment] = []
    for fragment, weight in out:
        weight = round(weight, 6)  # 1.1 * (1 / 1.1) is 1
        if merged and merged[-1].weight == weight:
            merged[-1] = Fragment(merged[-1].text + fragment, weight)
        elif fragment:
            merged.append(Fragment(fragment, weight))
    return merged


def parse_prompt(prompt: str) -> ParsedPrompt:
    """`prompt` as weighted fragments per BREAK section, and its LoRA tags; `ParameterError`
    (showing where) for unbalanced brackets, a weight that is no number or out of range, or a
    LoRA tag without a name."""
    text, loras = _loras(prompt)
    sections: list[tuple[Fragment, ...]] = []
    starts = [0, *(m.end() for m in _BREAK.finditer(text))]
    ends = [*(m.start() for m in _BREAK.finditer(text)), len(text)]
    for start, end in zip(starts, ends, strict=True):
        fragments = tuple(_fragments(text[start:end], text, start))
        if any(f.text.strip() for f in fragments):
            sections.append(fragments)
    return ParsedPrompt(tuple(sections) or ((Fragment(""),),), loras)


def uses_syntax(prompt: str) -> bool:
    """Whether `prompt` has syntax that plain encoding would read as text: brackets (even at a
    weight of 1), escapes, BREAK, LoRA tags."""
    if not any(mark in prompt for mark in "()[]<\\") and BREAK not in prompt:
        return False
    parsed = parse_prompt(prompt)
    return parsed.weighted or bool(parsed.loras) or parsed.plain != prompt.strip()


_SYNTAX_MARKS = re.compile(r"[()\[\]\\]|<(?=lora:)")


def as_plain_text(text: str) -> str:
    """`text` with nothing AUTOMATIC1111's syntax would read: brackets and backslashes gone,
    LoRA tags and BREAK defused. For text that an LLM or a summary wrote, which means no weights:
    "Baker Street (London)" is the words, not a weight of 1.1."""
    text = _SYNTAX_MARKS.sub("", text)
    return " ".join(_BREAK.sub(" break ", text).split())
