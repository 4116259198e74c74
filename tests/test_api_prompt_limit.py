"""`open_studio().generate` refuses an over-long prompt before anything is stored."""

from __future__ import annotations

import pytest

from studio import open_studio
from studio.core.errors import ParameterError
from studio.core.params import MAX_PROMPT

SMALL = {"image_model": "demo", "steps": 2, "width": 64, "height": 64, "device": "cpu"}


@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_generate_refuses_a_prompt_over_the_limit_and_stores_nothing(tmp_path, shared_cache, field):
    long = "a lighthouse at night, " * 4565 + "x" * 5  # 105,000 characters
    options = {"prompt": "a lighthouse", field: long}
    with open_studio(data_dir=tmp_path / "out", cache_dir=shared_cache, **SMALL) as studio:
        with pytest.raises(ParameterError) as caught:
            studio.generate(**options)
        assert studio.store.images() == []
    name = field.replace("_", " ")
    assert str(caught.value) == (
        f"The {name} is 105,000 characters long; keep it under {MAX_PROMPT:,}."
    )
    assert not list((tmp_path / "out").rglob("*.png"))
