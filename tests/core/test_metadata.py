import io

from PIL import Image

from studio.core.metadata import encode_png, format_parameters, parse_parameters, read_png_metadata


def test_parameters_round_trip_the_way_a1111_reads_them():
    text = format_parameters(
        "a detective, foggy street, oil painting",
        "blurry, text",
        {
            "Steps": 25,
            "Sampler": "DPM++ 2M Karras",
            "CFG scale": 7.5,
            "Seed": 123,
            "Size": "512x768",
            "Model": "demo-v2 (placeholder)",
            "Note": "a, b: c",
        },
    )
    assert text.splitlines()[1] == "Negative prompt: blurry, text"
    parsed = parse_parameters(text)
    assert parsed["Prompt"] == "a detective, foggy street, oil painting"
    assert parsed["Negative prompt"] == "blurry, text"
    assert parsed["Steps"] == "25"
    assert parsed["Sampler"] == "DPM++ 2M Karras"
    assert parsed["CFG scale"] == "7.5"
    assert parsed["Seed"] == "123"
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "768")
    assert parsed["Model"] == "demo-v2 (placeholder)"
    assert parsed["Note"] == "a, b: c"  # quoted because of the comma and colon


def test_png_carries_both_chunks_and_is_deterministic():
    image = Image.new("RGB", (8, 8), "red")
    png = encode_png(image, "p\nSteps: 1, Sampler: Euler, Seed: 1", {"placeholder": True, "x": 1})
    assert png == encode_png(
        image, "p\nSteps: 1, Sampler: Euler, Seed: 1", {"x": 1, "placeholder": True}
    )
    parameters, provenance = read_png_metadata(png)
    assert parameters.startswith("p\n")
    assert provenance == {"placeholder": True, "x": 1}


def test_the_studio_chunk_is_strict_json_even_with_infinite_scheduler_values(tmp_path):
    import json

    from studio.core.params import RenderRequest
    from studio.images.backends.diffusers.renderer import Renderer
    from studio.images.backends.diffusers.weights import resolve_image_model

    renderer = Renderer(resolve_image_model("demo", tmp_path), "cpu")
    provenance = renderer.provenance(RenderRequest("x", sampler="DPM++ 2M Karras"))
    assert provenance["scheduler"]["lambda_min_clipped"] == "-inf"
    png = encode_png(Image.new("RGB", (8, 8)), "x", provenance)
    text = Image.open(io.BytesIO(png)).info["studio"]

    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    assert json.loads(text, parse_constant=refuse)["scheduler"]["lambda_min_clipped"] == "-inf"


def test_unreadable_images_are_one_plain_message():
    import pytest

    from studio.core.errors import ImageInputError

    with pytest.raises(ImageInputError, match="not an image the studio can read"):
        read_png_metadata(b"hello")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    with pytest.raises(ImageInputError, match="damaged or truncated"):
        read_png_metadata(buffer.getvalue()[:60])
