"""CLIP embeddings for the prompt library's image search: texts and images in one vector space.

    from studio.vision.clip import open_clip
    clip = open_clip("openai/clip-vit-base-patch32")  # the clip_model setting; loaded once
    scores = clip.texts(["a lighthouse at dusk"]) @ clip.images([Image.open("still.png")]).T

`clip_model` names a folder (a transformers `CLIPModel` saved with `save_pretrained`: config.json,
safetensors weights, and its tokenizer and image processor beside them) or a hub id, which is taken
from the Hugging Face cache when it is there and downloaded otherwise (never when HF_HUB_OFFLINE
is set). Only safetensors weights are loaded. `build_demo_clip` makes a tiny untrained one for
tests: its vectors show the wiring, not meaning.

Rows are unit float32 vectors of `projection_dim`, so a dot product is the cosine similarity.
Images always go through the PIL image processor, never torchvision's, so that a vector does not
depend on which machine computed it; for the same reason the model runs in float32 on the GPU too.
Importing this module is cheap: torch and transformers are imported when a model is opened.
A process loads each model once: `open_clip` gives every caller (the prompt library, the CLIP
checks) the same `ClipModel`, which is kept while the process runs.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from studio.core.config import setting
from studio.core.errors import ConfigError
from studio.core.hub import CLIP_TOKENIZER_DIR, hub_snapshot
from studio.core.inputs import to_rgb

# What a hub id's snapshot needs: configs, tokenizer files (tokenizer.json, vocab.json,
# merges.txt) and the safetensors weights, sharded or not -- not the pickled, TF or Flax copies
# nor open_clip's own `open_clip_model.safetensors` that some repos carry as well.
HUB_FILES = ["*.json", "*.txt", "model*.safetensors"]
BATCH = 32  # inputs per forward pass: bounds memory when a whole library is embedded


class ClipModel:
    """A loaded CLIP model: `texts` and `images` give unit rows in one `dim`-wide space named
    `name`. One lock serialises the calls, so one instance can serve many threads."""

    def __init__(self, name: str, model: Any, tokenizer: Any, image_processor: Any) -> None:
        self.name = name  # the clip_model setting as given: the vector space's name
        self.dim: int = model.config.projection_dim
        # CLIP's learned temperature: softmax(logit_scale * cosines) is its zero-shot probability
        self.logit_scale = float(model.logit_scale.detach().exp())
        self._model = model
        self._tokenizer = tokenizer
        self._image_processor = image_processor
        self._max_tokens = min(
            tokenizer.model_max_length, model.config.text_config.max_position_embeddings
        )
        self._lock = threading.Lock()

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit rows; a text is cut to the model's 77 tokens."""
        if isinstance(texts, str):
            raise TypeError("texts() takes a sequence of strings, not one string")
        return self._embed(
            list(texts),
            lambda batch: self._model.get_text_features(
                **self._tokenizer(
                    batch,
                    padding=True,
                    truncation=True,
                    max_length=self._max_tokens,
                    return_tensors="pt",
                ).to(self._model.device)
            ),
        )

    def images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(len(images), dim) float32 unit rows; any mode is read as RGB (alpha laid on white)."""
        return self._embed(
            [to_rgb(image) for image in images],
            lambda batch: self._model.get_image_features(
                pixel_values=self._image_processor(images=batch, return_tensors="pt")[
                    "pixel_values"
                ].to(self._model.device)
            ),
        )

    def _embed(self, inputs: list, features: Callable[[list], Any]) -> np.ndarray:
        import torch

        rows = [np.zeros((0, self.dim), dtype=np.float32)]
        with self._lock, torch.inference_mode():
            for start in range(0, len(inputs), BATCH):
                pooled = features(inputs[start : start + BATCH]).pooler_output
                unit = torch.nn.functional.normalize(pooled.float(), dim=-1)
                rows.append(unit.cpu().numpy())
        return np.concatenate(rows)


def _clip_error(name: str, cause: str) -> ConfigError:
    return ConfigError(
        f"The CLIP model {name!r} could not be loaded ({cause}). Set {setting('clip_model')} to "
        "a CLIP folder or hub id, or leave it empty to search images by their metadata and "
        "perceptual hash only."
    )


def _reason(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _is_complete(snapshot: Path) -> bool:
    return (snapshot / "config.json").is_file() and any(snapshot.glob("model*.safetensors"))


def _hub_folder(repo: str) -> Path:
    """The snapshot of hub repo `repo`: the cache's when it is complete, else downloaded (the
    cache's again when offline)."""
    try:
        snapshot = hub_snapshot(repo, HUB_FILES, local_only=True)
        if _is_complete(snapshot):
            return snapshot
    except Exception:
        pass  # not in the cache: download it below
    return hub_snapshot(repo, HUB_FILES, local_only=False)


def _find_folder(name: str) -> Path:
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if name.count("/") == 1 and not name.startswith((".", "/", "~")) and "\\" not in name:
        try:
            return _hub_folder(name)
        except Exception as exc:
            raise _clip_error(
                name,
                f"no folder here, not in the Hugging Face cache and not downloaded: {_reason(exc)}",
            ) from None
    raise _clip_error(name, f"no folder {path} and not a hub id (owner/name)")


def _load(name: str, folder: Path) -> ClipModel:
    config = folder / "config.json"
    if not config.is_file():
        raise _clip_error(name, f"{folder} has no config.json")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError) as exc:
        raise _clip_error(name, f"{config} is not a JSON object: {_reason(exc)}") from None
    if model_type != "clip":
        raise _clip_error(name, f"{config} describes a {model_type!r} model, not 'clip'")

    import torch
    import transformers
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        model, info = CLIPModel.from_pretrained(
            folder, use_safetensors=True, dtype=torch.float32, output_loading_info=True
        )
        tokenizer = CLIPTokenizer.from_pretrained(folder)
        image_processor = CLIPImageProcessorPil.from_pretrained(folder)
    except Exception as exc:
        raise _clip_error(name, _reason(exc)) from None
    if info["missing_keys"]:
        # from_pretrained fills missing weights with random ones: such a model embeds noise
        missing = sorted(info["missing_keys"])
        raise _clip_error(
            name, f"{folder} lacks {len(missing)} of the model's weights, e.g. {missing[0]}"
        )
    model.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    return ClipModel(name, model, tokenizer, image_processor)


# One loaded model per name per process: the prompt library and the CLIP checks share it.
_loaded: dict[tuple[str, str], ClipModel] = {}
_loading: dict[tuple[str, str], threading.Lock] = {}  # one lock per name: a name loads once
_guard = threading.Lock()  # guards the two dicts


def _cache_key(name: str) -> tuple[str, str]:
    """The name, and the folder it names when it is one (a relative path depends on the working
    directory)."""
    path = Path(name).expanduser()
    return (name, str(path.resolve()) if path.is_dir() else "")


def open_clip(name: str) -> ClipModel:
    """The CLIP model that the clip_model setting names (a folder or a hub id), loaded once per
    process: every caller gets the same `ClipModel` (it serialises its calls, so threads can
    share it). Raises ConfigError, naming the setting, the value and the cause, when it cannot be
    loaded; a failure is not kept, so the next call tries again."""
    name = name.strip()
    if not name:
        raise _clip_error(name, "the name is empty")
    key = _cache_key(name)
    with _guard:
        if key in _loaded:
            return _loaded[key]
        lock = _loading.setdefault(key, threading.Lock())
    with lock:  # another thread loading this name: wait for it rather than load a second copy
        with _guard:
            if key in _loaded:
                return _loaded[key]
        model = _load(name, _find_folder(name))
        with _guard:
            _loaded[key] = model
        return model


def build_demo_clip(folder: Path) -> Path:
    """Build a tiny untrained CLIP model into `folder` (same weights every time) with CLIP's real
    tokenizer (the offline copy in assets/clip-tokenizer) and a 32x32 image processor, saved the
    way open_clip loads them. Returns `folder`; an existing build is kept."""
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(CLIP_TOKENIZER_DIR)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            "max_position_embeddings": tokenizer.model_max_length,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        vision_config={
            "image_size": 32,
            "patch_size": 4,
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        },
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights without moving the caller's RNG
        torch.manual_seed(0)
        model = CLIPModel(config)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    image_processor.save_pretrained(tmp)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # another process finished first, or `folder` exists: theirs is the same
        if not (folder / "model.safetensors").is_file():
            shutil.copytree(tmp, folder, dirs_exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
