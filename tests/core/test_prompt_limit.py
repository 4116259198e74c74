"""One limit for prompts, in the gate every render request goes through (`studio.core.params`)."""

from __future__ import annotations

import pytest

from studio.core.errors import ParameterError
from studio.core.params import MAX_PROMPT, RenderRequest


def test_the_limit_is_generous_for_long_prompts_in_77_token_chunks():
    assert MAX_PROMPT >= 6 * 300  # six CLIP chunks of about 300 characters each


def test_a_prompt_at_the_limit_is_taken():
    RenderRequest("a" * MAX_PROMPT, negative_prompt="b" * MAX_PROMPT).check()


def test_a_pasted_document_is_refused_with_its_length_and_the_limit():
    with pytest.raises(ParameterError) as caught:
        RenderRequest("lighthouse " * 9_545 + "x" * 5).check()  # 105,000 characters
    assert str(caught.value) == (
        f"The prompt is 105,000 characters long; keep it under {MAX_PROMPT:,}."
    )


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"prompt": "x" * (MAX_PROMPT + 1)}, "prompt"),
        ({"negative_prompt": "x" * (MAX_PROMPT + 1)}, "negative prompt"),
        ({"blend_prompt": "x" * (MAX_PROMPT + 1), "blend": 0.5}, "blend prompt"),
    ],
)
def test_every_prompt_of_a_request_has_the_limit(fields, name):
    request = RenderRequest(**{"prompt": "a lighthouse", **fields})
    with pytest.raises(ParameterError, match=f"^The {name} is {MAX_PROMPT + 1:,} characters long"):
        request.check()


def test_the_length_is_checked_before_the_prompt_is_parsed():
    # BREAK without long prompts is refused too, but the length is the first thing to fix.
    with pytest.raises(ParameterError, match="characters long"):
        RenderRequest("a BREAK b " * 1000).check()
