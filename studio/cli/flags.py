"""How the command line names settings: the flag of each setting, and library messages rewritten
to name the flag a person types instead of the setting (`--out (STUDIO_DATA_DIR)`)."""

from __future__ import annotations

from studio.core.config import ENV_VARS

# Settings whose flag is not `--` + the setting's name with dashes; errors name the flag typed.
FLAG_OF_SETTING = {"series": "--data", "data_dir": "--out", "width": "--size", "height": "--size"}
# Settings this CLI has a flag for (a test checks each one parses).
SETTINGS_WITH_FLAGS = (
    "series", "data_dir", "llm_model", "llm_base_url", "llm_seed", "llm_timeout", "image_model",
    "device", "sampler", "steps", "cfg", "width", "height", "seed", "images_per_episode",
    "batch_size", "fast_path", "step_cache", "characters", "ip_adapter", "reference_scale",
    "llm_concurrency", "executor", "ray_address", "concurrency", "candidates", "clip_model",
)  # fmt: skip
# Settings `dataprep.py library` has a flag for (besides --out).
LIBRARY_SETTINGS = ("embeddings", "embeddings_model", "library_db")


def flag_of(name: str) -> str:
    return FLAG_OF_SETTING.get(name, f"--{name.replace('_', '-')}")


def cli_message(text: str) -> str:
    """A library message with this CLI's flags where it names settings: the library writes
    `image_model (STUDIO_IMAGE_MODEL)`, the CLI shows `--image-model (STUDIO_IMAGE_MODEL)`."""
    for name in SETTINGS_WITH_FLAGS + LIBRARY_SETTINGS:
        env = ENV_VARS[name]
        text = text.replace(f"{name} ({env})", f"{flag_of(name)} ({env})")
    return text
