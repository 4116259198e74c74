"""The Studio's prompt extras for a backend that reads prompt syntax: the syntax, long prompts,
LoRAs from the LoRA folder, and the prompt's length in tokens.
"""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from studio.core.config import lora_folder, setting
from studio.core.errors import StudioError
from studio.core.params import CLIP_WINDOW, RenderRequest
from studio.core.prompt_syntax import parse_prompt
from studio.images.loras import LoraFolder
from studio.ui.errors import escape_markdown
from studio.ui.resources import capabilities, current_backend, current_settings


def prompt_extras(prefix: str, request: RenderRequest) -> RenderRequest:
    """The Studio's prompt extras, for a backend that reads prompt syntax: what the syntax is,
    long prompts, LoRAs from the LoRA folder (added to the prompt as `<lora:name:w>` tags, as
    AUTOMATIC1111's extra networks do), and the prompt's length in tokens."""
    if not capabilities().prompt_syntax:
        return request
    with st.expander("Prompt weights, LoRA and long prompts"):
        st.caption(
            "AUTOMATIC1111 syntax: `(word:1.3)` weighs a word more, `(word)` x1.1, `[word]` "
            "/1.1, `BREAK` starts a new 77-token chunk, `<lora:name:0.8>` applies a LoRA; "
            "`\\(` is a literal bracket."
        )
        st.checkbox(
            "Long prompts: past 77 tokens in 77-token chunks",
            key=f"{prefix}_long_prompt",
            help="Off, a prompt is cut at 77 tokens (CLIP's window), as plain encoding does.",
        )
        names = LoraFolder(lora_folder(current_settings())).names()  # without opening the model
        chosen = st.multiselect(
            "LoRA",
            names,
            key=f"{prefix}_loras",
            help="LoRA files (name.safetensors) in the LoRA folder; each is added to the prompt "
            "as <lora:name:weight>.",
            placeholder="Choose LoRA files" if names else "No LoRA files",
        )
        if not names:
            st.caption(
                f"No LoRA files in {lora_folder(current_settings())}: put name.safetensors files "
                f"there ({setting('lora_dir')})."
            )
        tags = []
        for name in chosen:
            weight = st.slider(
                f"Weight of {name}", -2.0, 2.0, 0.8, 0.05, key=f"{prefix}_lora_{name}"
            )
            if f"<lora:{name}:" not in request.prompt and f"<lora:{name}>" not in request.prompt:
                tags.append(f"<lora:{name}:{weight:g}>")
        if tags:
            request = replace(request, prompt=f"{request.prompt.rstrip()} {' '.join(tags)}")
        error = prompt_error(request)
        if error is None:
            _token_note(request)
    if error is not None:  # under the expander, seen while it is closed; the only place it shows
        st.error(escape_markdown(error), icon=":material/error:")
    return request


def prompt_error(request: RenderRequest) -> str | None:
    """What is wrong with the prompt's syntax (weights, brackets, LoRA tags), for a backend that
    reads it; None when nothing is. The Studio shows it once and renders nothing until fixed."""
    if not capabilities().prompt_syntax:
        return None
    try:
        parse_prompt(request.prompt)
    except StudioError as exc:
        return str(exc)
    return None


def _token_note(request: RenderRequest) -> None:
    try:
        tokens = current_backend().count_tokens(parse_prompt(request.prompt).plain)
    except StudioError as exc:  # the model's tokenizer, say, cannot be loaded
        st.error(escape_markdown(str(exc)))
        return
    if tokens <= CLIP_WINDOW:
        st.caption(f"{tokens} of {CLIP_WINDOW} tokens.")
    elif request.long_prompt:
        chunks = -(-(tokens - 2) // (CLIP_WINDOW - 2))
        st.caption(f"{tokens} tokens, in {chunks} chunks of {CLIP_WINDOW}.")
    else:
        st.warning(
            f"{tokens} tokens: past {CLIP_WINDOW} the prompt is cut; turn on long prompts to "
            "keep the rest."
        )
