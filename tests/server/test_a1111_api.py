"""AUTOMATIC1111's API as its real client, `webuiapi`, calls it: against a server on a free
localhost port over the demo model."""

from __future__ import annotations

import base64
import io
import threading
import time

import numpy as np
import pytest
import requests
import webuiapi
from PIL import Image

from studio.core.metadata import parse_parameters, read_png_metadata


@pytest.fixture
def webui(server):
    return webuiapi.WebUIApi(baseurl=f"{server.url}/sdapi/v1", sampler="Euler a", steps=2)


def png_of(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_txt2img_draws_a_seed_reports_it_and_stores_the_image(server, webui):
    result = webui.txt2img(prompt="a lighthouse at night", width=64, height=64, seed=-1)
    assert len(result.images) == 1 and result.image.size == (64, 64)
    seed = result.info["seed"]
    assert 0 <= seed < 2**32 and result.info["all_seeds"] == [seed]
    parameters = result.image.info["parameters"]  # the catalog PNG's own chunk
    assert parse_parameters(parameters)["Seed"] == str(seed)
    assert result.info["infotexts"] == [parameters]
    [stored] = server.state.studio.store.images()
    assert stored.target == "api" and stored.seed == seed
    on_disk, provenance = read_png_metadata(
        server.state.studio.store.image_path(stored).read_bytes()
    )
    assert on_disk == parameters and provenance["api"] == "sdapi/v1/txt2img"


def test_batches_take_consecutive_seeds_and_a_second_call_is_a_cache_hit(server, webui):
    first = webui.txt2img(prompt="a red door", width=64, height=64, seed=5, batch_size=2, n_iter=2)
    assert first.info["all_seeds"] == [5, 6, 7, 8] and len(first.images) == 4
    assert first.info["cached"] == [False] * 4
    calls = len(server.state.studio.backend.calls)
    again = webui.txt2img(prompt="a red door", width=64, height=64, seed=5, batch_size=2, n_iter=2)
    assert again.info["cached"] == [True] * 4
    assert len(server.state.studio.backend.calls) == calls  # no render
    for one, two in zip(first.images, again.images, strict=True):
        assert np.array_equal(np.asarray(one), np.asarray(two))
    assert len(server.state.studio.store.images()) == 4


def test_img2img_and_inpaint_keep_every_pixel_outside_the_mask(webui, picture, square_mask):
    moved = webui.img2img(images=[picture], prompt="a stormy sea", width=64, height=64, seed=1,
                          denoising_strength=0.6)  # fmt: skip
    assert moved.image.size == (64, 64)
    assert parse_parameters(moved.image.info["parameters"])["Denoising strength"] == "0.6"
    painted = webui.img2img(
        images=[picture], mask_image=square_mask, prompt="a green square", width=64, height=64,
        seed=2, denoising_strength=1.0, mask_blur=0, inpainting_fill=1,
    )  # fmt: skip
    before, after = np.asarray(picture), np.asarray(painted.image.convert("RGB"))
    keep = np.asarray(square_mask) == 0
    assert np.array_equal(before[keep], after[keep])
    assert not np.array_equal(before[~keep], after[~keep])
    fields = parse_parameters(painted.image.info["parameters"])  # webuiapi's default: only masked
    assert fields["Inpaint area"] == "Only masked" and fields["Masked area padding"] == "0"
    whole = webui.img2img(
        images=[picture], mask_image=square_mask, prompt="a green square", width=64, height=64,
        seed=2, denoising_strength=1.0, mask_blur=0, inpaint_full_res=False,
    )  # fmt: skip
    assert "Inpaint area" not in whole.image.info["parameters"]
    assert np.array_equal(before[keep], np.asarray(whole.image.convert("RGB"))[keep])
    inverted = webui.img2img(
        images=[picture], mask_image=square_mask, prompt="a green square", width=64, height=64,
        seed=2, denoising_strength=1.0, mask_blur=0, inpainting_mask_invert=1,
    )  # fmt: skip
    kept = np.asarray(square_mask) == 255  # inverted: the square is kept now
    assert np.array_equal(before[kept], np.asarray(inverted.image.convert("RGB"))[kept])


def test_png_info_reads_back_what_txt2img_wrote(webui):
    made = webui.txt2img(prompt="a quiet harbour", negative_prompt="blurry", width=64, height=64,
                         seed=11, cfg_scale=6.5)  # fmt: skip
    info = webui.png_info(made.image)
    assert info.info == made.image.info["parameters"]
    assert info.parameters["Seed"] == "11" and info.parameters["Negative prompt"] == "blurry"
    assert info.parameters["CFG scale"] == "6.5"


def test_progress_shows_the_render_and_interrupt_stops_it(server, webui):
    done = {}

    def long_render():
        done["result"] = webui.txt2img(prompt="a long night", width=64, height=64, steps=150,
                                       seed=3, n_iter=2)  # fmt: skip

    worker = threading.Thread(target=long_render)
    worker.start()
    deadline = time.monotonic() + 60
    while True:
        progress = webui.get_progress()
        if progress["state"]["sampling_step"] >= 2 and progress["current_image"]:
            break
        assert time.monotonic() < deadline, progress
        time.sleep(0.05)
    assert progress["state"]["job"] == "txt2img" and progress["state"]["job_count"] == 2
    assert progress["state"]["sampling_steps"] == 150 and 0 < progress["progress"] < 1
    preview = Image.open(io.BytesIO(base64.b64decode(progress["current_image"])))
    assert preview.size == (64, 64)
    webui.interrupt()
    worker.join(timeout=30)
    assert not worker.is_alive()
    result = done["result"]
    assert result.images == [] and any("interrupted" in n for n in result.info["notes"])
    assert webui.get_progress()["state"]["job"] == ""  # idle again
    assert server.state.studio.store.images() == []  # nothing half-made is stored
    assert len(webui.txt2img(prompt="after", width=64, height=64, seed=1).images) == 1


def test_skip_drops_the_image_being_made_and_goes_on(server, webui):
    done = {}
    worker = threading.Thread(target=lambda: done.update(result=webui.txt2img(
        prompt="two nights", width=64, height=64, steps=150, seed=4, n_iter=2)))  # fmt: skip
    worker.start()
    deadline = time.monotonic() + 60
    while webui.get_progress()["state"]["sampling_step"] < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    webui.skip()
    worker.join(timeout=60)
    result = done["result"]
    assert len(result.images) == 1 and result.info["all_seeds"] == [5]
    assert any("skipped" in note for note in result.info["notes"])


def test_lists_and_options_as_a1111_clients_read_them(server, webui):
    samplers = webui.util_get_sampler_names()
    assert "DPM++ 2M" in samplers and "Euler a" in samplers
    assert {s["label"] for s in webui.get_schedulers()} >= {"Automatic", "Karras"}
    models = webui.get_sd_models()
    assert models[0]["model_name"] == "demo"
    assert webui.get_options()["sd_model_checkpoint"] == models[0]["title"]
    assert webui.get_loras() == []
    response = requests.post(
        f"{server.url}/sdapi/v1/options", json={"sd_model_checkpoint": "no/such-model"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert "no/such-model" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"prompt": "x", "steps": 500}, ["`steps`", "1 and 150"]),
        ({"prompt": "x", "width": 4096}, ["`width`", "64 and 2048"]),
        ({"prompt": "x", "cfg_scale": 99}, ["`cfg_scale`", "0 and 30"]),
        ({"prompt": "x", "sampler_name": "Eulr"}, ["'Eulr'", "Euler a"]),
        ({"prompt": "x", "steps": "many"}, ["`steps`", "integer"]),
        ({"prompt": "x", "batch_size": 65}, ["`batch_size`", "64"]),
        ({"prompt": "x", "seed": -7}, ["`seed`", "-1"]),
        ({"prompt": ""}, ["prompt is empty"]),
    ],
)
def test_bad_txt2img_input_gets_a_4xx_naming_the_field(server, body, words):
    response = requests.post(f"{server.url}/sdapi/v1/txt2img", json={"width": 64, "height": 64,
                                                                      **body})  # fmt: skip
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert all(word in detail for word in words), detail


def test_bad_images_and_json_get_a_4xx_and_the_server_keeps_serving(server, picture):
    url = f"{server.url}/sdapi/v1/img2img"
    good = base64.b64encode(png_of(picture)).decode()
    cases = [
        ({"init_images": [base64.b64encode(b"not an image").decode()], "prompt": "x"}, "image"),
        ({"init_images": ["%%%"], "prompt": "x"}, "base64"),
        ({"init_images": [good[: len(good) // 2]], "prompt": "x"}, "truncated"),
        ({"init_images": [good], "prompt": "x",
          "mask": base64.b64encode(png_of(Image.new("L", (32, 32), 255))).decode()}, "32x32"),
        ({"init_images": [], "prompt": "x"}, "init_images"),
    ]  # fmt: skip
    for body, word in cases:
        response = requests.post(url, json={"width": 64, "height": 64, **body})
        assert response.status_code == 422, response.text
        assert word in response.json()["detail"], response.json()
    broken = requests.post(url, data=b'{"prompt": ', headers={"content-type": "application/json"})
    assert broken.status_code == 422 and "not valid JSON" in broken.json()["detail"]
    again = {"prompt": "still here", "width": 64, "height": 64, "steps": 2}
    ok = requests.post(f"{server.url}/sdapi/v1/txt2img", json=again)
    assert ok.status_code == 200


def test_six_clients_at_once_all_get_their_images_in_the_catalog(server):
    results: dict[int, requests.Response] = {}

    def client(number: int) -> None:
        results[number] = requests.post(
            f"{server.url}/sdapi/v1/txt2img",
            json={
                "prompt": f"harbour {number}",
                "width": 64,
                "height": 64,
                "steps": 2,
                "seed": number,
            },  # fmt: skip
        )

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.status_code == 200 for r in results.values())
    seeds = sorted(__import__("json").loads(r.json()["info"])["seed"] for r in results.values())
    assert seeds == list(range(6))
    assert len(server.state.studio.store.images()) == 6
    assert sum(server.state.studio.backend.calls) == 6


def test_a_controlnet_unit_becomes_guidance(tmp_path, shared_cache, picture):
    from studio.server.background import BackgroundServer
    from tests.server.conftest import server_settings

    settings = server_settings(tmp_path, shared_cache, controlnets="canny=demo")
    with BackgroundServer(settings) as running:
        webui = webuiapi.WebUIApi(baseurl=f"{running.url}/sdapi/v1", sampler="Euler a", steps=2)
        unit = webuiapi.ControlNetUnit(image=picture, module="canny", model="control_canny",
                                       weight=0.8, resize_mode="Crop and Resize")  # fmt: skip
        result = webui.txt2img(prompt="a door", width=64, height=64, seed=1,
                               controlnet_units=[unit])  # fmt: skip
        fields = parse_parameters(result.image.info["parameters"])
        assert "Module: canny" in fields["ControlNet 0"] and "Weight: 0.8" in fields["ControlNet 0"]
        bad = webuiapi.ControlNetUnit(image=picture, module="openpose", model="control_openpose")
        with pytest.raises(RuntimeError, match="openpose"):
            webui.txt2img(prompt="a door", width=64, height=64, controlnet_units=[bad])
