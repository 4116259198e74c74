"""LoRA files: the folder they live in, what each is, and the checks before one is loaded.

    loras = LoraFolder(Path("data/loras"))
    loras.names()                 # ["holmes", "gaslight"]
    lora = loras.get("holmes")    # LoraFile(name, path, sha256, width), or an error

A LoRA is named by its file name without `.safetensors` (AUTOMATIC1111's convention), chosen in
the Studio or written in a prompt as `<lora:name:0.8>`. Only safetensors files are read; a file
whose tensors are not LoRA pairs (lora_A/lora_B, lora_down/lora_up) is refused, and so is one made
for another model family, told by the width of its cross-attention keys (768 for SD 1.x, 1024 for
SD 2.x, 2048 for SDXL). Torch-free: the header is read with safetensors' own parser.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from safetensors import safe_open

from studio.core.config import setting
from studio.core.errors import LoraError
from studio.core.inputs import file_sha256

SUFFIX = ".safetensors"
_LORA_MARKS = ("lora_A", "lora_B", "lora_down", "lora_up", "lora.down", "lora.up")
# Cross-attention widths of the model families, for saying which family a LoRA fits.
FAMILY_WIDTHS = {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}


@dataclass(frozen=True)
class LoraFile:
    name: str
    path: Path
    sha256: str
    width: int | None  # the cross-attention width its keys are made for (None: not told)

    def identity(self, weight: float) -> dict[str, object]:
        return {"name": self.name, "sha256": self.sha256, "weight": weight}


def _cross_attention_width(path: Path) -> int | None:
    """The input width of the LoRA's cross-attention key projections (attn2.to_k), where the
    file has them; LoRAs of the text encoder only do not tell."""
    with safe_open(str(path), framework="numpy") as handle:
        keys = list(handle.keys())
        if not any(mark in key for key in keys for mark in _LORA_MARKS):
            raise LoraError(
                f"{path.name} is not a LoRA: its tensors have no lora_A/lora_B or "
                "lora_down/lora_up pairs. Put LoRA files (AUTOMATIC1111 or diffusers/PEFT "
                f"format) in the LoRA folder ({setting('lora_dir')})."
            )
        for key in keys:
            lowered = key.replace(".", "_")
            if "attn2" in lowered and "to_k" in lowered and ("lora_A" in key or "lora_down" in key):
                shape = handle.get_slice(key).get_shape()
                return int(shape[-1]) if len(shape) == 2 else None
    return None


class LoraFolder:
    """The `.safetensors` LoRA files of one folder, checked and hashed once each."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._files: dict[tuple[str, float, int], LoraFile] = {}  # (path, mtime, size) -> file
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(path.stem for path in self.folder.glob(f"*{SUFFIX}") if path.is_file())

    def get(self, name: str) -> LoraFile:
        path = self.folder / f"{name}{SUFFIX}"
        if not path.is_file():
            names = self.names()
            there = f"there are: {', '.join(names)}" if names else "it has none"
            raise LoraError(
                f"No LoRA named {name!r} in {self.folder}, the LoRA folder that "
                f"{setting('lora_dir')} sets; {there}. "
                f"Put {name}{SUFFIX} there, or fix the name in <lora:{name}:…>."
            )
        stat = path.stat()
        stamp = (str(path), stat.st_mtime, stat.st_size)
        with self._lock:
            if stamp not in self._files:
                try:
                    width = _cross_attention_width(path)
                except LoraError:
                    raise
                except Exception as exc:  # a truncated or foreign file
                    raise LoraError(
                        f"{path.name} is not a readable safetensors LoRA ({exc}); "
                        f"replace it in {self.folder}, the LoRA folder that {setting('lora_dir')} "
                        "sets."
                    ) from exc
                self._files[stamp] = LoraFile(name, path, file_sha256(path), width)
            return self._files[stamp]

    def check_fits(self, lora: LoraFile, width: int, model_name: str, family: str) -> None:
        """Refuse a LoRA made for a model family with other cross-attention widths."""
        if lora.width is None or lora.width == width:
            return
        made_for = FAMILY_WIDTHS.get(lora.width, f"a model with {lora.width}-wide text")
        raise LoraError(
            f"LoRA {lora.name!r} was made for {made_for} (cross-attention width {lora.width}), "
            f"but image model {model_name!r} ({family}) has width {width}; use a LoRA made for "
            "its family."
        )
