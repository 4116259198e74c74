"""The embedded model on a GPU box: every layer offloaded when the installed llama.cpp build has a
GPU, and the start-up line says where it runs; on a CPU-only build nothing changes."""

from __future__ import annotations

import xllamacpp

from studio.core.config import load_settings
from studio.llm.choice import backend_description
from studio.llm.embedded import ALL_LAYERS, avx512_tip, cpu_flags, offload_layers

DEVICE_TYPE = xllamacpp.get_device_info()[0]["type"].__class__


def test_a_cpu_build_keeps_every_layer_on_the_cpu():
    assert offload_layers(xllamacpp.get_device_info()) == (0, "on this machine's CPU")
    assert "on this machine's CPU" in backend_description(load_settings())


def test_a_gpu_build_offloads_every_layer_and_says_so():
    devices = [
        {"name": "CPU", "description": "AMD EPYC",
         "type": DEVICE_TYPE.GGML_BACKEND_DEVICE_TYPE_CPU},
        {"name": "CUDA0", "description": "NVIDIA H200", "memory_total": 150 * 1024**3,
         "type": DEVICE_TYPE.GGML_BACKEND_DEVICE_TYPE_GPU},
    ]  # fmt: skip
    layers, where = offload_layers(devices)
    assert layers == ALL_LAYERS and where == "on this machine's GPU (NVIDIA H200, 150 GiB)"


# What the registry's wheel (AVX2) and a build for AVX-512 report (`xllamacpp.get_system_info()`).
AVX2_BUILD = "CPU : SSE3 = 1 | SSSE3 = 1 | AVX = 1 | AVX2 = 1 | F16C = 1 | FMA = 1 | REPACK = 1 | "
AVX512_BUILD = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | REPACK = 1 | "
ZEN4 = "fpu sse sse2 avx avx2 fma avx512f avx512dq avx512bw avx512vl avx512_vnni avx512_bf16"


def test_an_avx512_cpu_with_the_avx2_wheel_is_told_of_the_faster_build(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: {ZEN4}\n\n")
    flags = cpu_flags(cpuinfo)
    assert {"avx512f", "avx512_vnni"} <= flags and "vendor_id" not in flags
    tip = avx512_tip(flags, AVX2_BUILD)
    assert tip is not None and "AVX-512" in tip and "docs/batch-job.md" in tip
    # Nothing to say once the build uses it, or on a CPU without it (VNNI is what pays).
    assert avx512_tip(flags, AVX512_BUILD) is None
    assert avx512_tip(frozenset({"avx", "avx2", "fma"}), AVX2_BUILD) is None
    assert avx512_tip(frozenset({"avx512f", "avx512bw", "avx512vl"}), AVX2_BUILD) is None
    # No /proc/cpuinfo (macOS, Windows): no flags, no tip.
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert avx512_tip(cpu_flags(tmp_path / "missing"), AVX2_BUILD) is None


def test_a_build_for_avx512_is_named_so_its_jobs_time_the_estimate_apart(monkeypatch):
    """The job record and the estimate's measured speed go by the LLM's description: a build for
    AVX-512 reads prompts faster, so its jobs must not time the portable wheel's (or back)."""
    settings = load_settings()
    monkeypatch.setattr(xllamacpp, "get_system_info", lambda: AVX2_BUILD)
    wheel = backend_description(settings)
    monkeypatch.setattr(xllamacpp, "get_system_info", lambda: AVX512_BUILD)
    built = backend_description(settings)
    assert wheel.endswith("on this machine's CPU")
    assert built == f"{wheel} (AVX-512 build)"
