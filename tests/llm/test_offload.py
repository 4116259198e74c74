"""The embedded model on a GPU box: every layer offloaded when the installed llama.cpp build has a
GPU, and the start-up line says where it runs; on a CPU-only build nothing changes."""

from __future__ import annotations

import xllamacpp

from studio.core.config import load_settings
from studio.llm.choice import backend_description
from studio.llm.embedded import ALL_LAYERS, offload_layers

DEVICE_TYPE = xllamacpp.get_device_info()[0]["type"].__class__


def test_a_cpu_build_keeps_every_layer_on_the_cpu():
    assert offload_layers(xllamacpp.get_device_info()) == (0, "on this machine's CPU")
    assert backend_description(load_settings()).endswith("on this machine's CPU")


def test_a_gpu_build_offloads_every_layer_and_says_so():
    devices = [
        {"name": "CPU", "description": "AMD EPYC",
         "type": DEVICE_TYPE.GGML_BACKEND_DEVICE_TYPE_CPU},
        {"name": "CUDA0", "description": "NVIDIA H200", "memory_total": 150 * 1024**3,
         "type": DEVICE_TYPE.GGML_BACKEND_DEVICE_TYPE_GPU},
    ]  # fmt: skip
    layers, where = offload_layers(devices)
    assert layers == ALL_LAYERS and where == "on this machine's GPU (NVIDIA H200, 150 GiB)"
