"""What the image and vision code share about models: the model families, the CLIP tokenizer
shipped in assets/, and Hugging Face hub snapshots (the cache first; never a download when
HF_HUB_OFFLINE is set). Torch-free."""

from __future__ import annotations

import os
from pathlib import Path

from studio.core.config import resource_dir

SD, SDXL = "sd", "sdxl"  # model families: SD 1.x/2.x and SDXL
CLIP_TOKENIZER_DIR = resource_dir("assets") / "clip-tokenizer"


def hub_offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids downloads."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}


def hub_snapshot(repo: str, patterns: list[str] | None, local_only: bool) -> Path:
    """A snapshot folder of hub repo `repo`, only the files matching `patterns` when given."""
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            repo, allow_patterns=patterns, local_files_only=local_only or hub_offline()
        )
    )
