"""Samplers: AUTOMATIC1111's sampler names mapped to diffusers schedulers and their config
overrides, built from a checkpoint's own scheduler config (SD 1.5's when it brings none)."""

from __future__ import annotations

import json
from typing import Any

from diffusers import (
    DDIMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UniPCMultistepScheduler,
)

from studio.core.params import (
    SAMPLER_NAMES,
    check_sampler,
)

# Sampler names as AUTOMATIC1111 shows them -> diffusers scheduler class and config overrides.
SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "Heun": (HeunDiscreteScheduler, {}),
    "LMS": (LMSDiscreteScheduler, {}),
    "LMS Karras": (LMSDiscreteScheduler, {"use_karras_sigmas": True}),
    "DPM2": (KDPM2DiscreteScheduler, {}),
    "DPM2 a": (KDPM2AncestralDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
    "DPM++ 2M SDE": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    "DPM++ 2M SDE Karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
    ),
    "DPM++ SDE": (DPMSolverSinglestepScheduler, {}),
    "DDIM": (DDIMScheduler, {}),
    "PNDM": (PNDMScheduler, {"skip_prk_steps": True}),
    "UniPC": (UniPCMultistepScheduler, {}),
    "DEIS": (DEISMultistepScheduler, {}),
}

# Stable Diffusion 1.5's scheduler config: the base every sampler above starts from when a
# checkpoint brings none of its own (single files, the demo model).
SD15_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "clip_sample": False,
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "skip_prk_steps": True,
    "prediction_type": "epsilon",
}


if tuple(SCHEDULERS) != SAMPLER_NAMES:
    raise ImportError(
        "SCHEDULERS (studio.images.backends.diffusers.schedulers) and SAMPLER_NAMES "
        "(studio.core.params) disagree"
    )


def make_scheduler(name: str, base_config: dict[str, Any]) -> Any:
    """A fresh scheduler of sampler `name`, from the model's own scheduler config."""
    check_sampler(name)
    scheduler_class, overrides = SCHEDULERS[name]
    return scheduler_class.from_config({**base_config, **overrides})


def scheduler_config_of(name: str, base_config: dict[str, Any]) -> dict[str, Any]:
    """The scheduler's full config as a JSON-safe dict, for cache keys and provenance."""
    scheduler = make_scheduler(name, base_config)
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return json.loads(json.dumps({"class": type(scheduler).__name__, **config}, default=str))
