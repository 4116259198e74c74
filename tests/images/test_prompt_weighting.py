"""AUTOMATIC1111 prompt syntax: parsed strictly, weighted by compel, long prompts in chunks, blends;
the weighted prompt round-trips through the PNG's `parameters` chunk unchanged."""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
import pytest
from PIL import Image

from studio import open_studio
from studio.core.errors import ParameterError
from studio.core.metadata import parse_parameters, read_png_metadata
from studio.core.params import RenderRequest, request_from_infotext
from studio.core.prompt_syntax import Fragment, parse_prompt, uses_syntax
from studio.images.backends.base import Capabilities
from studio.images.backends.diffusers.demo import build_demo_sdxl_model
from studio.images.backends.diffusers.renderer import PROMPT_ENCODING, Renderer
from studio.images.backends.diffusers.weights import resolve_image_model
from studio.images.interpolation import interpolation_requests

REQUEST = RenderRequest("a detective on a foggy street", "blurry", "Euler", 3, 7.0, 64, 64, 11)
LONG_TAIL = ", ".join(f"detail {n}" for n in range(40))  # well past 77 tokens


@pytest.fixture(scope="module")
def renderer(tmp_path_factory):
    return Renderer(resolve_image_model("demo", tmp_path_factory.mktemp("models")), "cpu")


def pixels(image):
    return np.asarray(image, dtype=np.int16)


def render(renderer, **changes):
    return pixels(renderer.render([dataclasses.replace(REQUEST, **changes)])[0])


def test_a1111_weights_nest_multiply_and_merge():
    parsed = parse_prompt("a (red:1.3) door, [fog] and ((gas)light) \\(1890\\)")
    assert parsed.sections == (
        (
            Fragment("a ", 1.0),
            Fragment("red", 1.3),
            Fragment(" door, ", 1.0),
            Fragment("fog", round(1 / 1.1, 6)),
            Fragment(" and ", 1.0),
            Fragment("gas", 1.21),
            Fragment("light", 1.1),
            Fragment(" (1890)", 1.0),
        ),
    )
    assert parse_prompt("((a:1.5) b)").sections == ((Fragment("a", 1.65), Fragment(" b", 1.1)),)
    assert parse_prompt("x BREAK y").sections == ((Fragment("x"),), (Fragment("y"),))
    assert parse_prompt("Holmes: the final problem").sections == (
        (Fragment("Holmes: the final problem"),),
    )
    assert not uses_syntax("Holmes: the final problem, <b>") and uses_syntax("a (b:1)")


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("a (red door", "'(' is never closed; add ')'"),
        ("a red) door", "')' closes nothing"),
        ("a (red] door", "']' closes the '(' at character 3"),
        ("(word:abc)", "has to be a number, e.g. 1.2, but is 'abc'"),
        ("(word:99)", "between 0 and 2 (1 is normal) but is 99"),
        ("(word:-1)", "between 0 and 2"),
        ("a <lora::0.5>", "A LoRA tag needs a name"),
        ("a <lora:x:heavy>", "has to be a number"),
    ],
)
def test_bad_syntax_is_refused_showing_where(prompt, message):
    with pytest.raises(ParameterError, match=re.escape(message)) as error:
        RenderRequest(prompt).check()
    assert "^" in str(error.value)  # a pointer under the place


def test_break_and_blends_are_checked_before_any_model_work():
    with pytest.raises(ParameterError, match="turn on long prompts"):
        RenderRequest("a BREAK b").check()
    RenderRequest("a BREAK b", long_prompt=True).check()
    with pytest.raises(ParameterError, match="LoRA tags go in the prompt"):
        RenderRequest("a", "ugly <lora:x:1>").check()
    with pytest.raises(ParameterError, match="`blend` has to be a number from 0"):
        RenderRequest("a", blend_prompt="b", blend=1.5).check()
    with pytest.raises(ParameterError, match="needs a prompt to blend towards"):
        RenderRequest("a", blend=0.5).check()


@pytest.mark.slow
def test_weights_change_the_pixels_deterministically_and_weight_one_is_plain(renderer):
    plain = render(renderer)
    weighted = render(renderer, prompt="a (detective:1.6) on a [foggy] street")
    assert (weighted != plain).any()
    assert (weighted == render(renderer, prompt="a (detective:1.6) on a [foggy] street")).all()
    # brackets at weight 1 are syntax, not text: the same embeddings as the plain prompt
    assert (render(renderer, prompt="a (detective:1) on a foggy street") == plain).all()


def test_long_prompts_are_chunked_only_when_asked(renderer):
    long = f"a detective on a foggy street, {LONG_TAIL}"
    assert renderer.count_tokens(long) > 77
    cut = render(renderer, prompt=long)
    # past 77 tokens plain encoding cuts: another tail gives the same picture
    assert (cut == render(renderer, prompt=f"{long}, and more")).all()
    chunked = render(renderer, prompt=long, long_prompt=True)
    assert (chunked != cut).any()
    assert (chunked == render(renderer, prompt=long, long_prompt=True)).all()
    assert (render(renderer, prompt="a detective BREAK on a foggy street", long_prompt=True)
            != render(renderer)).any()  # fmt: skip


def test_a_blend_goes_from_one_prompt_to_the_other(renderer):
    start, end = render(renderer), render(renderer, prompt="a violin on a table")
    towards = {"blend_prompt": "a violin on a table"}
    assert (render(renderer, **towards, blend=0.0) == start).all()
    assert (render(renderer, **towards, blend=1.0) == end).all()
    middle = render(renderer, **towards, blend=0.5)
    assert (middle != start).any() and (middle != end).any()


def test_weighted_requests_have_their_own_keys_and_plain_keys_stay(renderer):
    plain = renderer.cache_key(REQUEST)
    weighted = dataclasses.replace(REQUEST, prompt="a (detective:1.2)")
    assert weighted.weighted and not REQUEST.weighted
    assert "long_prompt" not in REQUEST.key_fields() and "blend" not in REQUEST.key_fields()
    keys = {
        plain,
        renderer.cache_key(weighted),
        renderer.cache_key(dataclasses.replace(REQUEST, long_prompt=True)),
        renderer.cache_key(dataclasses.replace(REQUEST, blend_prompt="b", blend=0.5)),
    }
    assert len(keys) == 4
    assert REQUEST.batch_group() != weighted.batch_group()  # never in one pipeline call
    assert "compel" in PROMPT_ENCODING


@pytest.mark.slow
def test_sdxl_takes_weights_and_long_prompts(tmp_path_factory):
    folder = build_demo_sdxl_model(tmp_path_factory.mktemp("models") / "tiny-sdxl")
    sdxl = Renderer(resolve_image_model(str(folder), folder.parent), "cpu")
    request = RenderRequest("a lighthouse at night", "blurry", "Euler", 2, 7.0, 64, 64, 3)
    plain = pixels(sdxl.render([request])[0])
    weighted = dataclasses.replace(request, prompt="a (lighthouse:1.5) at night")
    first, again = (pixels(sdxl.render([weighted])[0]) for _ in range(2))
    assert (first != plain).any() and (first == again).all()
    long = dataclasses.replace(request, prompt=f"a lighthouse, {LONG_TAIL}", long_prompt=True)
    assert pixels(sdxl.render([long])[0]).shape == plain.shape


@pytest.mark.slow
def test_the_weighted_prompt_round_trips_through_the_png(tmp_path, shared_cache):
    prompt = "a (red:1.3) door, [fog] BREAK gaslight, \\(1890\\)"
    with open_studio(
        data_dir=tmp_path / "out", cache_dir=shared_cache, image_model="demo", steps=2,
        width=64, height=64, device="cpu",
    ) as studio:  # fmt: skip
        made = studio.generate(prompt, negative_prompt="(blurry:1.2)", long_prompt=True, seed=4)
        parameters, provenance = read_png_metadata(made.path.read_bytes())
        values = parse_parameters(parameters)
        assert values["Prompt"] == prompt and values["Negative prompt"] == "(blurry:1.2)"
        assert values["Long prompt"] == "chunks"
        imported = request_from_infotext(values, made.record.request).request
        assert imported == made.record.request
        assert studio.generate(prompt, negative_prompt="(blurry:1.2)", long_prompt=True,
                               seed=4).cached  # fmt: skip
        assert provenance["request"]["long_prompt"] is True


def test_a1111_breaks_import_as_long_prompts():
    values = parse_parameters("a BREAK b\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, "
                              "Size: 512x512")  # fmt: skip
    assert request_from_infotext(values, RenderRequest("x")).request.long_prompt


def test_a_plain_text_backend_refuses_what_it_cannot_read():
    plain = Capabilities(prompt_syntax=False)
    plain.check(RenderRequest("a (red:1.2) door"), "OpenAI")  # text it reads as it is
    for request in (
        RenderRequest("a door <lora:fog:0.5>"),
        RenderRequest("a door", long_prompt=True),
        RenderRequest("a door", blend_prompt="a window", blend=0.5),
    ):
        with pytest.raises(ParameterError, match="reads the prompt as plain text"):
            plain.check(request, "OpenAI")


def test_an_interpolation_morphs_between_the_prompts_with_cached_ends(tmp_path, shared_cache):
    with open_studio(
        data_dir=tmp_path / "out", cache_dir=shared_cache, image_model="demo", steps=2,
        width=64, height=64, device="cpu",
    ) as studio:  # fmt: skip
        start = studio.generate("a lighthouse at night", seed=5)
        made = studio.interpolate("a lighthouse at night", "a violin on a table", 4, seed=5)
        assert made.blends == [0.0, round(1 / 3, 4), round(2 / 3, 4), 1.0]
        assert made.results[0].cached and made.results[0].key == start.key
        frames = [pixels(image) for image in made.images()]
        assert all((a != b).any() for a, b in zip(frames, frames[1:], strict=False))
        end = studio.generate("a violin on a table", seed=5)
        assert end.cached and end.key == made.results[-1].key
        strip = Image.open(io.BytesIO(made.png()))
        assert strip.size[0] == 4 * 64 and strip.size[1] > 64  # t under each frame
        gif = Image.open(io.BytesIO(made.animation("gif")))
        assert gif.format == "GIF" and gif.n_frames == 6  # forth and back
        webp = Image.open(io.BytesIO(made.animation("webp")))
        assert webp.format == "WEBP" and webp.n_frames == 6
        again = studio.interpolate("a lighthouse at night", "a violin on a table", 4, seed=5)
        assert all(result.cached for result in again.results)


@pytest.mark.parametrize("frames", [0, 1, 500, 2.5])
def test_interpolation_frame_counts_out_of_range_are_refused(frames):
    with pytest.raises(ParameterError, match="An interpolation has 2 to 24 images"):
        interpolation_requests(REQUEST, "a violin", frames)
    with pytest.raises(ParameterError, match="the same"):
        interpolation_requests(REQUEST, REQUEST.prompt, 3)


def test_written_text_is_never_read_as_syntax():
    from studio.writing.prompting import fit_text, merge_phrases

    text = "Baker Street (London), [fog] BREAK dawn, <lora:x:1>, (1891: the Final Problem)"
    merged = merge_phrases(text)
    assert merged == "Baker Street London, fog break dawn, lora:x:1>, 1891: the Final Problem"
    assert not uses_syntax(merged) and not uses_syntax(fit_text(text, len, 500))
    RenderRequest(merged).check()
