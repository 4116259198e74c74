"""Adapters that steer the image model: ControlNets (by type, checked against the unet they
serve) and IP-Adapters (weights and image encoder found per model family)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.config import setting
from studio.core.errors import RenderError
from studio.core.hub import SD, SDXL, hub_snapshot
from studio.images.backends.diffusers.models import ImageModel, local_revision

# The IP-Adapter weights an `ip_adapter` setting that names only a repo or folder means, per model
# family: (subfolder, file) in the h94/IP-Adapter layout. The image encoder is looked for in
# `<subfolder>/image_encoder`, then in `models/image_encoder` (the ViT-H that SD 1.5's adapters and
# SDXL's `*_vit-h` ones share); the first whose width fits the adapter is used.
IP_ADAPTER_WEIGHTS = {
    SD: ("models", "ip-adapter_sd15.safetensors"),
    SDXL: ("sdxl_models", "ip-adapter_sdxl.safetensors"),
}
SHARED_IMAGE_ENCODER = "models/image_encoder"
IP_ADAPTER_FORMS = (
    "a folder or hub id in the h94/IP-Adapter layout (models/ip-adapter_sd15.safetensors and "
    "models/image_encoder; for SDXL sdxl_models/ip-adapter_sdxl.safetensors and "
    "sdxl_models/image_encoder), or repo_or_folder:subfolder:weight_name"
)
CONTROLNET_EXAMPLES = {
    SD: "lllyasviel/sd-controlnet-<type> for SD 1.5",
    SDXL: "diffusers/controlnet-canny-sdxl-1.0 or xinsir/controlnet-scribble-sdxl-1.0 for SDXL",
}


@dataclass(frozen=True)
class ControlNetSource:
    """A ControlNet the `controlnets` setting names for one control type, found on disk."""

    control_type: str
    name: str  # as in the setting
    source: str  # the local folder (a hub id's snapshot) with config.json and the weights
    revision: str  # hub commit, or a hash of the local files' names, sizes and times

    def identity(self) -> dict[str, str]:
        return {"type": self.control_type, "controlnet": self.name, "revision": self.revision}

    def config(self) -> dict[str, Any]:
        return json.loads((Path(self.source) / "config.json").read_text())


def controlnet_error(control_type: str, name: str, message: str) -> RenderError:
    return RenderError(f"ControlNet {control_type}={name} ({setting('controlnets')}): {message}")


def check_controlnet_fits(
    controlnet: ControlNetSource, unet_config: Any, model: ImageModel
) -> None:
    """A ControlNet adds residuals to the unet's blocks: its text width and block widths must be
    the unet's, else (a ControlNet of another family) a `RenderError` that says which fits."""
    config = controlnet.config()
    theirs = (config.get("cross_attention_dim"), list(config.get("block_out_channels") or []))
    ours = (unet_config.cross_attention_dim, list(unet_config.block_out_channels))
    if theirs != ours:
        raise controlnet_error(
            controlnet.control_type, controlnet.name, f"it was made for a unet of text width "
            f"{theirs[0]} and blocks {theirs[1]}, but image model {model.name!r} ({model.family}) "
            f"has {ours[0]} and {ours[1]}; use a ControlNet of its family, e.g. "
            f"{CONTROLNET_EXAMPLES[model.family]}."
        )  # fmt: skip


@dataclass(frozen=True)
class IPAdapter:
    """Resolved IP-Adapter weights: where they are, what unet they fit, what to call them."""

    name: str  # the ip_adapter setting as given
    source: str  # the local folder (a hub id's snapshot) the paths below are in
    subfolder: str  # of the weights, e.g. "models"; "" for the folder itself
    weight_name: str  # a .safetensors file in `subfolder`
    image_encoder: str  # the CLIP image encoder's folder in `source`, e.g. "models/image_encoder"
    revision: str  # hub commit, or a hash of the local files' names, sizes and times
    cross_attention_dim: int  # the text width of the unet it was trained for (SD 1.5: 768)
    layers: int  # the unet's cross-attention layers it has weights for (SD 1.5: 16, SDXL: 70)

    @property
    def weights(self) -> str:
        return f"{self.subfolder}/{self.weight_name}" if self.subfolder else self.weight_name

    def identity(self) -> dict[str, str]:
        return {
            "ip_adapter": self.name,
            "weights": self.weights,
            "image_encoder": self.image_encoder,
            "revision": self.revision,
        }


def _ip_adapter_error(message: str) -> RenderError:
    return RenderError(f"{message}; set {setting('ip_adapter')} to {IP_ADAPTER_FORMS}.")


def _hub_files(repo: str, patterns: list[str], ready: Callable[[Path], bool]) -> Path:
    """A snapshot of hub repo `repo` with `patterns`' files: the cache's where it is `ready`,
    else downloaded (the cache's again when offline)."""
    try:
        snapshot = hub_snapshot(repo, patterns, local_only=True)
        if ready(snapshot):
            return snapshot
    except Exception:
        pass
    try:
        return hub_snapshot(repo, patterns, local_only=False)
    except Exception as exc:
        raise _ip_adapter_error(
            f"IP-Adapter {repo!r} is no folder here, is not in the Hugging Face cache and could "
            f"not be downloaded ({type(exc).__name__})"
        ) from None


def _tensor_shapes(path: Path) -> dict[str, list[int]]:
    """Every tensor's shape in a .safetensors file, from its header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as weights:
            names = weights.keys()  # a safe_open handle is no mapping: `in` does not work
            return {name: list(weights.get_slice(name).get_shape()) for name in names}
    except Exception as exc:
        raise _ip_adapter_error(f"{path} is not a readable .safetensors file ({exc})") from None


def _image_encoder_width(shapes: dict[str, list[int]]) -> tuple[str, int] | None:
    """(config key, value) the adapter's image encoder must have: a plain IP-Adapter projects the
    encoder's image embedding (`projection_dim`), a Plus one its hidden states (`hidden_size`);
    None for the other kinds, whose encoder is not checked here."""
    if "image_proj.proj.weight" in shapes:
        return "projection_dim", shapes["image_proj.proj.weight"][-1]
    if "image_proj.proj_in.weight" in shapes:
        return "hidden_size", shapes["image_proj.proj_in.weight"][-1]
    return None


def _pick_image_encoder(root: Path, candidates: list[str], width: tuple[str, int] | None) -> str:
    for folder in candidates:
        config = root / folder / "config.json"
        if not config.is_file():
            continue
        if (
            width is None
            or json.loads(config.read_text(encoding="utf-8")).get(width[0]) == width[1]
        ):
            return folder
    fits = f" with {width[0]} {width[1]}" if width else ""
    raise _ip_adapter_error(
        f"{root} has no CLIP image encoder{fits} for its IP-Adapter in {' or '.join(candidates)}"
    )


def resolve_ip_adapter(name: str, family: str) -> IPAdapter:
    """Find the IP-Adapter weights and image encoder the `ip_adapter` setting names, for a model
    of `family`: a folder or hub id alone means the family's weights in the h94/IP-Adapter layout
    (`IP_ADAPTER_WEIGHTS`); `repo_or_folder:subfolder:weight_name` names them. Safetensors only.
    Hub ids come from the Hugging Face cache, else are downloaded (not when HF_HUB_OFFLINE)."""
    parts = name.strip().rsplit(":", 2)
    if len(parts) == 3:
        source, subfolder, weight_name = parts[0].strip(), parts[1].strip(" /"), parts[2].strip()
    else:
        source, (subfolder, weight_name) = name.strip(), IP_ADAPTER_WEIGHTS[family]
    if not source or not weight_name:
        raise _ip_adapter_error(f"The IP-Adapter {name!r} names no folder or weights")
    if not weight_name.endswith(".safetensors"):
        raise _ip_adapter_error(
            f"IP-Adapter weights {weight_name!r}: only .safetensors weights are loaded (pickled "
            "weights can run code); convert them, or use the .safetensors of h94/IP-Adapter"
        )
    weights = f"{subfolder}/{weight_name}" if subfolder else weight_name
    candidates = list(
        dict.fromkeys([f"{subfolder}/image_encoder".lstrip("/"), SHARED_IMAGE_ENCODER])
    )
    path = Path(source).expanduser()
    hub = False
    if path.is_dir():
        root = path.resolve()
    elif source.count("/") == 1 and not source.startswith((".", "/", "~")) and "\\" not in source:
        hub = True
        root = _hub_files(
            source,
            [weights, *(f"{folder}/config.json" for folder in candidates)],
            lambda snapshot: (
                (snapshot / weights).is_file()
                and any((snapshot / folder / "config.json").is_file() for folder in candidates)
            ),
        )
    else:
        raise _ip_adapter_error(f"IP-Adapter folder {path} does not exist")
    if not (root / weights).is_file():
        raise _ip_adapter_error(
            f"{root} has no {weights} (the default for {family.upper()} models)"
        )
    shapes = _tensor_shapes(root / weights)
    to_k = [
        key for key in shapes if key.startswith("ip_adapter.") and key.endswith(".to_k_ip.weight")
    ]
    if not to_k or not any(key.startswith("image_proj.") for key in shapes):
        raise _ip_adapter_error(
            f"{root / weights} holds no image_proj.* and ip_adapter.*.to_k_ip tensors, so it is "
            "no IP-Adapter"
        )
    image_encoder = _pick_image_encoder(root, candidates, _image_encoder_width(shapes))
    encoder_weights = f"{image_encoder}/model.safetensors"
    if hub:
        root = _hub_files(
            source,
            [f"{image_encoder}/config.json", encoder_weights],
            lambda snapshot: (snapshot / encoder_weights).is_file(),
        )
    if not (root / encoder_weights).is_file():
        raise _ip_adapter_error(
            f"The image encoder {root / image_encoder} has no model.safetensors (only safetensors "
            "weights are loaded)"
        )
    files = [root / weights, root / image_encoder / "config.json", root / encoder_weights]
    revision = root.name if hub else local_revision(root, files)
    return IPAdapter(
        name=name,
        source=str(root),
        subfolder=subfolder,
        weight_name=weight_name,
        image_encoder=image_encoder,
        revision=revision,
        cross_attention_dim=shapes[to_k[0]][1],
        layers=len(to_k),
    )
