"""A real server (uvicorn, on a free localhost port, in a thread) over the demo model, per test."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from studio.core.config import load_settings
from studio.server.background import BackgroundServer

SMALL = {"image_model": "demo", "steps": 2, "width": 64, "height": 64, "device": "cpu"}


def server_settings(tmp_path, shared_cache, **values):
    return load_settings(
        {"data_dir": tmp_path / "data", "cache_dir": shared_cache, **SMALL, **values}
    )


@pytest.fixture
def server(tmp_path, shared_cache):
    with BackgroundServer(server_settings(tmp_path, shared_cache)) as running:
        yield running


@pytest.fixture
def picture() -> Image.Image:
    """64x64 with some structure."""
    pixels = np.zeros((64, 64, 3), dtype=np.uint8)
    pixels[:, :32] = (200, 40, 40)
    pixels[16:48, 16:48] = (30, 30, 220)
    return Image.fromarray(pixels)


@pytest.fixture
def square_mask() -> Image.Image:
    pixels = np.zeros((64, 64), dtype=np.uint8)
    pixels[8:40, 8:40] = 255  # white: repaint
    return Image.fromarray(pixels, "L")
