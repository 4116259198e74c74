"""The one gate for render parameters: limits, NaN and infinity, values from AUTOMATIC1111."""

import math

import pytest

from studio.core.config import load_settings
from studio.core.errors import ConfigError, RenderError
from studio.core.metadata import parse_parameters
from studio.core.params import LIMITS, RenderRequest, clamp_request, request_from_infotext
from studio.images.grid import parse_axis

BASE = RenderRequest("a lighthouse at night")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cfg": math.nan}, "`cfg` has to be a number between 0 and 30 but is nan"),
        ({"cfg": math.inf}, "`cfg` has to be a number between 0 and 30 but is inf"),
        ({"cfg": -5.0}, "`cfg` has to be between 0 and 30 but is -5"),
        ({"cfg": 1e9}, "`cfg` has to be between 0 and 30 but is 1e+09"),
        ({"steps": 200}, "`steps` has to be between 1 and 150 but is 200"),
        ({"steps": 2.5}, "`steps` has to be a whole number"),
        ({"seed": -1}, "`seed` is -1, a random seed, which has to be drawn before rendering"),
        ({"seed": -5}, "`seed` has to be between 0 and 4294967295 (use -1 for a random seed)"),
        ({"width": 4096}, "`width` has to be between 64 and 2048 but is 4096"),
        ({"width": 500}, "divisible by 8 but are 512 and 500"),
        ({"prompt": "  "}, "The prompt is empty"),
        ({"sampler": "Magic"}, "Unknown sampler 'Magic'"),
    ],
)
def test_a_request_out_of_limits_is_refused_with_the_value(changes, message):
    from dataclasses import replace

    with pytest.raises(RenderError) as error:
        replace(BASE, **changes).check()
    assert message in str(error.value)


@pytest.mark.parametrize("text", ["nan", "inf", "-5", "1e9", "-inf"])
def test_the_grid_refuses_cfg_values_the_gate_refuses(text):
    with pytest.raises(RenderError) as error:
        parse_axis("CFG scale", f"3, {text}")
    assert f"{text!r} on the CFG scale axis" in str(error.value)


def test_the_grid_takes_values_within_the_limits():
    assert parse_axis("CFG scale", "0, 7.5, 30").values == (0.0, 7.5, 30.0)
    with pytest.raises(RenderError, match="`steps` has to be between 1 and 150 but is 0"):
        parse_axis("Steps", "0, 10")


def test_settings_go_through_the_same_gate_and_name_where_they_were_set(monkeypatch):
    monkeypatch.setenv("STUDIO_CFG", "nan")
    with pytest.raises(ConfigError, match=r"`cfg` has to be a number .* nan\. Set by STUDIO_CFG"):
        load_settings()
    monkeypatch.delenv("STUDIO_CFG")
    with pytest.raises(ConfigError, match="Set by --steps"):
        load_settings({"steps": 0, "_sources": {"steps": "--steps"}})
    with pytest.raises(ConfigError, match="`image_model` is empty"):
        load_settings({"image_model": ""})
    with pytest.raises(ConfigError, match="llm_timeout"):
        load_settings({"llm_timeout": -1.0})


A1111 = (
    "a castle on a hill, dramatic sky\n"
    "Negative prompt: blurry\n"
    "Steps: 200, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 25, Seed: -1, "
    "Size: 1000x1500, Model hash: abc123, Model: dreamshaper_8"
)


def test_a1111_values_are_mapped_and_clamped_with_notes():
    imported = request_from_infotext(parse_parameters(A1111), BASE)
    request = imported.request
    request.check()  # always usable
    assert request.prompt == "a castle on a hill, dramatic sky"
    assert request.negative_prompt == "blurry"
    assert request.sampler == "DPM++ 2M Karras"
    assert request.steps == 150 and request.cfg == 25.0
    assert (request.width, request.height) == (1000, 1496)
    assert imported.random_seed and request.seed == BASE.seed  # -1 is "random", not 4294967295
    assert "Steps 200 -> 150, our maximum" in imported.notes
    assert "Height 1500 -> 1496, a multiple of 8" in imported.notes
    assert any("Seed -1 means a random seed" in note for note in imported.notes)


def test_a1111_nonsense_falls_back_to_our_defaults():
    values = {"Prompt": "x", "Steps": "many", "CFG scale": "nan", "Size-1": "99999", "Seed": "7"}
    imported = request_from_infotext(values, BASE)
    imported.request.check()
    assert imported.request.steps == BASE.steps and imported.request.cfg == BASE.cfg
    assert imported.request.width == LIMITS["width"].high and imported.request.seed == 7
    assert not imported.random_seed


def test_clamp_keeps_good_values_and_says_nothing():
    request, notes = clamp_request(BASE, BASE)
    assert request == BASE and notes == []
