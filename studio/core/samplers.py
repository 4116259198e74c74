"""Sampler names: ours, AUTOMATIC1111's (1.9 and older), ComfyUI's, InvokeAI's and k-diffusion's.

`SAMPLER_NAMES` are the studio's own names (A1111's older combined spelling, "DPM++ 2M Karras");
they go into cache keys, so they never change. A1111 1.9 writes the sampler and its schedule
apart (`Sampler: DPM++ 2M, Schedule type: Karras`): `a1111_sampler` gives that spelling, and
`resolve_sampler` reads a sampler from anywhere (any spelling, any case, the ids of A1111's
`aliases`, ComfyUI's `sampler_name` + `scheduler`, InvokeAI's `scheduler`) as one of ours, with a
note for a schedule we do not have rather than dropping it silently.
"""

from __future__ import annotations

import difflib

from studio.core.errors import ParameterError

# Sampler names as AUTOMATIC1111 (before 1.9) shows them; the diffusers backend maps each to a
# scheduler (studio.images.backends.diffusers.schedulers).
SAMPLER_NAMES = (
    "Euler",
    "Euler a",
    "Heun",
    "LMS",
    "LMS Karras",
    "DPM2",
    "DPM2 a",
    "DPM++ 2M",
    "DPM++ 2M Karras",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Karras",
    "DPM++ SDE",
    "DDIM",
    "PNDM",
    "UniPC",
    "DEIS",
)
DEFAULT_SAMPLER = "DPM++ 2M Karras"

# The schedule types (A1111 1.9's "Schedule type") we have: the sampler's default (Automatic),
# Karras, and Normal (the model's own timesteps, what our plain samplers use).
SCHEDULE_TYPES: tuple[str, ...] = ("Automatic", "Karras", "Normal")
KARRAS = " Karras"
# What A1111 1.9's "Automatic" means for a sampler whose default is not Normal
# (modules/sd_samplers_kdiffusion.py: {'scheduler': 'karras'} / {'scheduler': 'exponential'}).
A1111_DEFAULT_SCHEDULE = {
    "DPM++ 2M": "Karras",
    "DPM++ SDE": "Karras",
    "DPM2": "Karras",
    "DPM2 a": "Karras",
    "DPM++ 2M SDE": "Exponential",
}

# A1111 1.9's schedule types (labels and ids), ComfyUI's `scheduler` values: read so that a
# schedule we do not have is named in a note. "normal" is the model's own schedule, which is our
# plain sampler.
_SCHEDULES = {
    "automatic": "Automatic",
    "normal": "Normal",
    "karras": "Karras",
    "uniform": "Uniform",
    "exponential": "Exponential",
    "polyexponential": "Polyexponential",
    "sgm uniform": "SGM Uniform",
    "sgm_uniform": "SGM Uniform",
    "kl optimal": "KL Optimal",
    "kl_optimal": "KL Optimal",
    "align your steps": "Align Your Steps",
    "align_your_steps": "Align Your Steps",
    "simple": "Simple",
    "ddim": "DDIM",
    "ddim_uniform": "DDIM",
    "beta": "Beta",
    "linear_quadratic": "Linear Quadratic",
}
# Schedule words a combined name may end with ("DPM++ 2M SDE Exponential", "DPM++ SDE Karras").
_NAME_SCHEDULES = ("karras", "exponential", "polyexponential", "sgm uniform", "uniform")

# Other tools' sampler ids -> (our plain sampler, the schedule the id implies or None):
# A1111's `aliases` (modules/sd_samplers_kdiffusion.py, sd_samplers_timesteps.py, and the older
# combined Karras entries), ComfyUI's `sampler_name`s, InvokeAI's `scheduler`s ("_k": Karras).
_ALIASES: dict[str, tuple[str, str | None]] = {
    "k_euler_a": ("Euler a", None),
    "k_euler_ancestral": ("Euler a", None),
    "euler_a": ("Euler a", None),
    "euler_ancestral": ("Euler a", None),
    "k_euler": ("Euler", None),
    "euler": ("Euler", None),
    "euler_k": ("Euler", "Karras"),
    "k_lms": ("LMS", None),
    "lms": ("LMS", None),
    "k_lms_ka": ("LMS", "Karras"),
    "lms_k": ("LMS", "Karras"),
    "lms_karras": ("LMS", "Karras"),
    "k_heun": ("Heun", None),
    "heun": ("Heun", None),
    "heun_k": ("Heun", "Karras"),
    "k_dpm_2": ("DPM2", None),
    "dpm_2": ("DPM2", None),
    "kdpm_2": ("DPM2", None),
    "k_dpm_2_ka": ("DPM2", "Karras"),
    "kdpm_2_k": ("DPM2", "Karras"),
    "k_dpm_2_a": ("DPM2 a", None),
    "dpm_2_a": ("DPM2 a", None),
    "dpm_2_ancestral": ("DPM2 a", None),
    "kdpm_2_a": ("DPM2 a", None),
    "k_dpm_2_a_ka": ("DPM2 a", "Karras"),
    "kdpm_2_a_k": ("DPM2 a", "Karras"),
    "k_dpmpp_2m": ("DPM++ 2M", None),
    "dpmpp_2m": ("DPM++ 2M", None),
    "k_dpmpp_2m_ka": ("DPM++ 2M", "Karras"),
    "dpmpp_2m_karras": ("DPM++ 2M", "Karras"),
    "dpmpp_2m_k": ("DPM++ 2M", "Karras"),
    "k_dpmpp_2m_sde": ("DPM++ 2M SDE", None),
    "dpmpp_2m_sde": ("DPM++ 2M SDE", None),
    "dpmpp_2m_sde_gpu": ("DPM++ 2M SDE", None),
    "k_dpmpp_2m_sde_ka": ("DPM++ 2M SDE", "Karras"),
    "dpmpp_2m_sde_karras": ("DPM++ 2M SDE", "Karras"),
    "dpmpp_2m_sde_k": ("DPM++ 2M SDE", "Karras"),
    "k_dpmpp_2m_sde_exp": ("DPM++ 2M SDE", "Exponential"),
    "k_dpmpp_sde": ("DPM++ SDE", None),
    "dpmpp_sde": ("DPM++ SDE", None),
    "dpmpp_sde_gpu": ("DPM++ SDE", None),
    "k_dpmpp_sde_ka": ("DPM++ SDE", "Karras"),
    "dpmpp_sde_k": ("DPM++ SDE", "Karras"),
    "ddim": ("DDIM", None),
    "pndm": ("PNDM", None),
    "plms": ("PNDM", None),
    "unipc": ("UniPC", None),
    "uni_pc": ("UniPC", None),
    "uni_pc_bh2": ("UniPC", None),
    "unipc_k": ("UniPC", "Karras"),
    "deis": ("DEIS", None),
    "deis_k": ("DEIS", "Karras"),
}


def _squeeze(text: str) -> str:
    return "".join(text.lower().split())


_PLAIN = {_squeeze(name): name for name in SAMPLER_NAMES if not name.endswith(KARRAS)}
_ALIAS_KEYS = {_squeeze(alias).replace("-", "_"): value for alias, value in _ALIASES.items()}


def a1111_sampler(name: str) -> tuple[str, str]:
    """Our sampler `name` as AUTOMATIC1111 1.9 writes it: (sampler, schedule type), e.g.
    "DPM++ 2M Karras" -> ("DPM++ 2M", "Karras"), "Euler a" -> ("Euler a", "Automatic"), and
    "DPM++ 2M" -> ("DPM++ 2M", "Normal"): A1111's Automatic would be Karras for it."""
    check_sampler(name)
    if name.endswith(KARRAS):
        return name.removesuffix(KARRAS), "Karras"
    return name, "Normal" if name in A1111_DEFAULT_SCHEDULE else "Automatic"


def check_sampler(name: str) -> None:
    if name not in SAMPLER_NAMES:
        raise ParameterError(
            f"Unknown sampler {name!r}; choose one of: {', '.join(SAMPLER_NAMES)}."
        )


def close_sampler(name: str) -> str | None:
    """Our sampler name closest to `name` (a typo), if one is close."""
    close = difflib.get_close_matches(name, SAMPLER_NAMES, n=1, cutoff=0.6)
    return close[0] if close else None


def _base(name: str) -> tuple[str, str | None] | None:
    """(our plain sampler, the schedule the name implies) for a name in any spelling."""
    key = _squeeze(name)
    if key in _PLAIN:
        return _PLAIN[key], None
    alias = _ALIAS_KEYS.get(key.replace("-", "_"))
    if alias is not None:
        return alias
    words = " ".join(name.lower().split())
    for schedule in _NAME_SCHEDULES:  # a combined name: "DPM++ 2M Karras", "Euler Exponential"
        if words.endswith(" " + schedule):
            plain = _PLAIN.get(_squeeze(words.removesuffix(" " + schedule)))
            if plain is not None:
                return plain, _SCHEDULES[schedule]
    return None


def _schedule_label(schedule: str) -> str:
    text = " ".join(schedule.split())
    return _SCHEDULES.get(text.lower(), text)


def resolve_sampler(name: str, schedule: str | None = None) -> tuple[str, list[str]]:
    """A sampler named anywhere as one of our `SAMPLER_NAMES`, and notes on what could not be kept.

    Takes our names, A1111 1.9's sampler with its `schedule` type ("DPM++ 2M" + "Karras" ->
    "DPM++ 2M Karras"; "Automatic" -> the sampler's A1111 default, Karras for DPM++ 2M; "Normal"
    or None -> the plain sampler), older combined names, any case
    and spacing, and the ids of A1111, k-diffusion, ComfyUI and InvokeAI (`k_euler_a`,
    `dpmpp_2m_karras`, `euler_ancestral`, `dpmpp_2m_k`). A schedule type we do not have (e.g.
    "Exponential") gives the sampler without it and a note saying so. An unknown sampler raises
    `ParameterError` with a close match, if any, and the choices.
    """
    text = str(name or "").strip()
    found = _base(text)
    if found is None:
        close = close_sampler(text)
        guess = f" (did you mean {close!r}?)" if close else ""
        raise ParameterError(
            f"Unknown sampler {text!r}{guess}; choose one of: {', '.join(SAMPLER_NAMES)}."
        )
    plain, implied = found
    given = _schedule_label(schedule) if schedule and schedule.strip() else None
    if implied is not None and given not in (None, "Automatic", implied):
        notes = [f"Schedule type {given!r} differs from the {implied} in {text!r}; using {implied}"]
    else:
        notes = []
    chosen = implied or given
    if chosen == "Automatic":
        chosen = A1111_DEFAULT_SCHEDULE.get(plain)
    if chosen in (None, "Normal"):
        return plain, notes
    if chosen == "Karras":
        if plain + KARRAS in SAMPLER_NAMES:
            return plain + KARRAS, notes
        notes.append(f"{plain} has no Karras schedule here; using {plain}'s default")
        return plain, notes
    ours = ", ".join(SCHEDULE_TYPES)
    notes.append(f"Schedule type {chosen!r} is not one of ours ({ours}); using {plain}'s default")
    return plain, notes


def our_sampler(name: str) -> str:
    """`resolve_sampler(name)` where there is no one to show a note to (a setting, a Python
    argument): the sampler, or `ParameterError` when something of `name` would be lost."""
    sampler, notes = resolve_sampler(name)
    if notes:
        raise ParameterError(f"Sampler {name!r}: {'; '.join(notes)}; ask for {sampler!r} then.")
    return sampler
