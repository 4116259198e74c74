"""How the command line names settings: the flag of each setting, library messages rewritten to
name the flag a person types instead of the setting (`--out (STUDIO_DATA_DIR)`) and to carry the
--out given, and argparse's mistakes as one line (`OneLineParser`)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import NoReturn

from studio.core.config import ENV_VARS

# Settings whose flag is not `--` + the setting's name with dashes; errors name the flag typed.
FLAG_OF_SETTING = {"series": "--data", "data_dir": "--out", "width": "--size", "height": "--size"}
# Settings this CLI has a flag for (a test checks each one parses).
SETTINGS_WITH_FLAGS = (
    "series", "data_dir", "llm_model", "llm_base_url", "llm_seed", "llm_timeout", "image_model",
    "device", "sampler", "steps", "cfg", "width", "height", "seed", "images_per_episode",
    "batch_size", "fast_path", "compile_mode", "compile_scope", "fp8", "step_cache", "characters",
    "ip_adapter", "reference_scale", "scene_references",
    "llm_concurrency", "executor", "ray_address", "concurrency", "candidates", "clip_model",
)  # fmt: skip
# Settings `dataprep.py library` has a flag for (besides --out).
LIBRARY_SETTINGS = ("embeddings", "embeddings_model", "library_db")


def flag_of(name: str) -> str:
    return FLAG_OF_SETTING.get(name, f"--{name.replace('_', '-')}")


def cli_message(text: str, out: Path | None = None) -> str:
    """A library message with this CLI's flags where it names settings: the library writes
    `image_model (STUDIO_IMAGE_MODEL)`, the CLI shows `--image-model (STUDIO_IMAGE_MODEL)`; and
    the commands it suggests carry `out`, the --out the user gave (`with_out`)."""
    for name in SETTINGS_WITH_FLAGS + LIBRARY_SETTINGS:
        env = ENV_VARS[name]
        text = text.replace(f"{name} ({env})", f"{flag_of(name)} ({env})")
    return with_out(text, out)


# The command `Store`'s damaged-catalog hint suggests; the CLI adds the --out the user gave.
RECOVER_COMMAND = "python dataprep.py --recover"


def with_out(text: str, out: Path | None) -> str:
    """`text` with the --out the user gave added to the commands it suggests, so that a command
    copied from a message acts on the same folder (else it would act on data/)."""
    if out is None:
        return text
    return text.replace(
        f"`{RECOVER_COMMAND}`", f"`{RECOVER_COMMAND} --out {shlex.quote(str(out))}`"
    )


# argparse's messages, as `error` gets them: "argument --device: invalid choice: 'gpu' (choose
# from 'auto', 'cpu')", "argument --steps: invalid int value: 'x'", "argument --size: <ours>".
ARGUMENT_MESSAGE = re.compile(r"argument (?P<flag>[^:]+): (?P<rest>.*)", re.DOTALL)
INVALID_CHOICE = re.compile(r"invalid choice: (?P<value>.*?) \(choose from (?P<choices>.*)\)$")
INVALID_TYPE = re.compile(r"invalid (?P<kind>\w+) value: (?P<value>.*)$")
TYPE_NAMES = {"int": "a whole number", "float": "a number"}


def usage_message(message: str, prog: str) -> str:
    """argparse's complaint as one line that starts with the flag and the value typed:
    `--device 'gpu': not a choice; choose one of auto, cuda, mps, cpu`."""
    match = ARGUMENT_MESSAGE.match(message)
    if match is None:  # unrecognized arguments, a required one missing
        return f"{message}; see `python {prog} --help`"
    flag, rest = match["flag"].split("/")[-1], match["rest"]
    if choice := INVALID_CHOICE.match(rest):
        choices = choice["choices"].replace("'", "")
        return f"{flag} {choice['value']}: not a choice; choose one of {choices}"
    if bad := INVALID_TYPE.match(rest):
        return f"{flag} {bad['value']}: not {TYPE_NAMES.get(bad['kind'], bad['kind'])}"
    if rest.startswith("'"):  # this CLI's own types start with the value typed
        return f"{flag} {rest}"
    return f"{flag}: {rest}"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose mistakes are one line, `Error: --sampler 'Eulr': ...`, with exit
    code 2, instead of the usage block (`--help` still shows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"Error: {usage_message(message, self.prog)}.\n")
