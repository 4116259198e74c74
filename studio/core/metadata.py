"""Generation parameters inside PNGs.

Each PNG carries two text chunks: `parameters`, the AUTOMATIC1111 infotext that A1111, Forge,
SD.Next and Civitai read (prompt; `Negative prompt:` line; `Steps: N, Sampler: X, ...`), and
`studio`, a JSON object with the full provenance (LLM model, template hash, episode or season,
placeholder flag for the demo model, the cache key). `infotext_of` reads a PNG's parameters as
A1111 infotext whichever tool wrote it: A1111 (and us), ComfyUI (its graph) or InvokeAI.
"""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

from studio.core.errors import ImageInputError, ParameterError
from studio.core.samplers import a1111_sampler, resolve_sampler

PARAMETERS_KEY = "parameters"
PROVENANCE_KEY = "studio"

# The same expressions A1111 uses to read infotext (modules/infotext_utils.py).
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_RE_IMAGESIZE = re.compile(r"^(\d+)x(\d+)$")


def _quote(value: Any) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _number(value: float) -> str:
    return f"{value:g}"


def format_parameters(
    prompt: str,
    negative_prompt: str,
    settings: dict[str, Any],
) -> str:
    """A1111 infotext. `settings` maps A1111 names (Steps, Sampler, ...) to values, in order."""
    lines = [prompt.strip()]
    if negative_prompt.strip():
        lines.append(f"Negative prompt: {negative_prompt.strip()}")
    pairs = []
    for key, value in settings.items():
        if value is None or value == "":
            continue
        if isinstance(value, float):
            value = _number(value)
        pairs.append(f"{key}: {_quote(value)}")
    lines.append(", ".join(pairs))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, str]:
    """Read A1111 infotext the way A1111's PNG Info does; sizes split into `Size-1`, `Size-2`."""
    result: dict[str, str] = {}
    prompt, negative, done_with_prompt = "", "", False
    *lines, last = text.strip().split("\n")
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    result["Prompt"], result["Negative prompt"] = prompt, negative
    for key, value in _RE_PARAM.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = json.loads(value)
        size = _RE_IMAGESIZE.match(value)
        if size:
            result[f"{key}-1"], result[f"{key}-2"] = size.group(1), size.group(2)
        else:
            result[key] = value
    return result


def json_safe(value: Any) -> Any:
    """`value` with non-finite floats as the strings "inf", "-inf" and "nan", so it is strict JSON.

    Scheduler configs hold `-inf` (DPM-Solver's `lambda_min_clipped`); Python's json would write
    `-Infinity`, which strict JSON parsers reject.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def encode_png(image: Image.Image, parameters: str, provenance: dict[str, Any]) -> bytes:
    """PNG bytes with both chunks. Same image and metadata give the same bytes."""
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, parameters)
    info.add_text(
        PROVENANCE_KEY,
        json.dumps(json_safe(provenance), sort_keys=True, ensure_ascii=False, allow_nan=False),
    )
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def open_image_bytes(data: bytes) -> Image.Image:
    """The image in `data`, fully read; `ImageInputError` saying what is wrong if it is not one."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Image.DecompressionBombError:
        raise ImageInputError(
            "This image is too large to open safely (over "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels); resize it first."
        ) from None
    except UnidentifiedImageError:
        raise ImageInputError(
            "This file is not an image the studio can read; upload a PNG, JPEG or WebP file."
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(
            f"This image is damaged or truncated ({str(exc).splitlines()[0][:120]}); export it "
            "again or try another file."
        ) from None
    return image


def read_png_metadata(data: bytes | Image.Image) -> tuple[str | None, dict[str, Any] | None]:
    """(A1111 parameters text, studio provenance) of a PNG; None for a chunk it lacks."""
    image = data if isinstance(data, Image.Image) else open_image_bytes(data)
    text = getattr(image, "text", None) or image.info
    provenance = text.get(PROVENANCE_KEY)
    try:
        parsed = json.loads(provenance) if provenance else None
    except json.JSONDecodeError:
        parsed = None
    return text.get(PARAMETERS_KEY), parsed


# Other tools' PNG chunks: ComfyUI's API graph (`prompt`) and UI graph (`workflow`), InvokeAI's.
COMFY_PROMPT_KEY = "prompt"
COMFY_WORKFLOW_KEY = "workflow"
INVOKEAI_KEY = "invokeai_metadata"
_COMFY_SAMPLERS = ("KSampler", "KSamplerAdvanced")
_MAX_HOPS = 16  # links followed from a sampler to its prompt, size or checkpoint


def _json_chunk(text: dict[str, Any], key: str) -> Any:
    try:
        return json.loads(text[key]) if text.get(key) else None
    except (TypeError, ValueError):
        return None


def _a1111_sampler(sampler: Any, schedule: Any, notes: list[str]) -> dict[str, Any]:
    """Another tool's sampler (and schedule) as A1111 1.9's `Sampler` and `Schedule type`."""
    if not isinstance(sampler, str) or not sampler.strip():
        return {}
    try:
        ours, sampler_notes = resolve_sampler(
            sampler, schedule if isinstance(schedule, str) else None
        )
    except ParameterError:
        notes.append(f"Sampler {sampler!r} has no counterpart here; using our default")
        return {}
    notes.extend(sampler_notes)
    name, schedule_type = a1111_sampler(ours)
    return {"Sampler": name, "Schedule type": schedule_type}


class _Graph:
    """ComfyUI's API graph: {node id: {"class_type", "inputs"}}, inputs linking [node id, slot]."""

    def __init__(self, nodes: dict[str, Any]):
        self.nodes = {str(k): v for k, v in nodes.items() if isinstance(v, dict)}

    def inputs(self, node_id: str) -> dict[str, Any]:
        inputs = self.nodes.get(node_id, {}).get("inputs")
        return inputs if isinstance(inputs, dict) else {}

    def kind(self, node_id: str) -> str:
        return str(self.nodes.get(node_id, {}).get("class_type", ""))

    def linked(self, value: Any) -> str | None:
        """The node a link input ([node id, output slot]) comes from."""
        if isinstance(value, list) and len(value) == 2 and str(value[0]) in self.nodes:
            return str(value[0])
        return None

    def find(self, value: Any, wanted: tuple[str, ...]) -> tuple[str, dict[str, Any]] | None:
        """Follow links from `value` upstream, first inputs first, to a node with one of the
        `wanted` inputs (not links): (its id, its inputs)."""
        queue, seen = [self.linked(value)], set()
        while queue and len(seen) < _MAX_HOPS:
            node_id = queue.pop(0)
            if node_id is None or node_id in seen:
                continue
            seen.add(node_id)
            inputs = self.inputs(node_id)
            if any(name in inputs and self.linked(inputs[name]) is None for name in wanted):
                return node_id, inputs
            queue.extend(self.linked(item) for item in inputs.values())
        return None

    def text(self, value: Any, what: str, notes: list[str]) -> str:
        """The prompt text feeding a sampler's `positive` or `negative` input."""
        found = self.find(value, ("text", "text_g", "text_l"))
        if found is None:
            if value is not None:
                notes.append(f"The {what} is not plain text in the graph; not imported")
            return ""
        node_id, inputs = found
        texts = [inputs[k] for k in ("text", "text_g", "text_l") if isinstance(inputs.get(k), str)]
        if not texts:  # the text comes from another node (a primitive, a string node)
            source = self.find(inputs.get("text"), ("text", "string", "value"))
            texts = [v for v in (source[1] if source else {}).values() if isinstance(v, str)][:1]
        return texts[0] if texts else ""


def _comfy_infotext(nodes: dict[str, Any], notes: list[str]) -> str | None:
    """A1111 infotext from ComfyUI's API graph: its (first) KSampler and what feeds it."""
    graph = _Graph(nodes)
    samplers = sorted(
        (node_id for node_id in graph.nodes if graph.kind(node_id) in _COMFY_SAMPLERS),
        key=lambda node_id: (len(node_id), node_id),
    )
    if not samplers:
        notes.append("ComfyUI graph without a KSampler node; nothing to import")
        return None
    if len(samplers) > 1:
        notes.append(f"{len(samplers)} KSampler nodes in the graph; the first ({samplers[0]}) read")
    inputs = graph.inputs(samplers[0])
    settings: dict[str, Any] = {}
    if isinstance(inputs.get("steps"), int):
        settings["Steps"] = inputs["steps"]
    settings.update(_a1111_sampler(inputs.get("sampler_name"), inputs.get("scheduler"), notes))
    if isinstance(inputs.get("cfg"), int | float):
        settings["CFG scale"] = float(inputs["cfg"])
    seed = inputs.get("seed", inputs.get("noise_seed"))
    if isinstance(seed, int):
        settings["Seed"] = seed
    elif seed is not None:
        notes.append("The seed comes from another node of the graph; not imported")
    latent = graph.find(inputs.get("latent_image"), ("width", "height"))
    if latent is not None and all(isinstance(latent[1].get(k), int) for k in ("width", "height")):
        settings["Size"] = f"{latent[1]['width']}x{latent[1]['height']}"
    if graph.find(inputs.get("latent_image"), ("image", "pixels")) is not None:
        notes.append("The graph starts from an image (img2img); its image is not in the PNG")
    denoise = inputs.get("denoise")
    if isinstance(denoise, int | float) and denoise < 1:
        settings["Denoising strength"] = float(denoise)
    model = graph.find(inputs.get("model"), ("ckpt_name", "unet_name"))
    if model is not None:
        settings["Model"] = model[1].get("ckpt_name") or model[1].get("unet_name")
    loras = [
        f"{graph.inputs(i).get('lora_name')}"
        for i in graph.nodes
        if "lora" in graph.kind(i).lower() and graph.inputs(i).get("lora_name")
    ]
    if loras:
        notes.append(f"LoRA loader nodes ({', '.join(loras)}) are not imported")
    prompt = graph.text(inputs.get("positive"), "prompt", notes)
    negative = graph.text(inputs.get("negative"), "negative prompt", notes)
    return format_parameters(prompt, negative, settings)


def _comfy_workflow_nodes(workflow: Any) -> dict[str, Any] | None:
    """ComfyUI's UI graph as an API graph, for the few nodes read (a best effort: widget values in
    their order for KSampler, CLIPTextEncode, EmptyLatentImage and CheckpointLoaderSimple)."""
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        return None
    widgets = {
        "KSampler": ("seed", "control", "steps", "cfg", "sampler_name", "scheduler", "denoise"),
        "CLIPTextEncode": ("text",),
        "EmptyLatentImage": ("width", "height", "batch_size"),
        "CheckpointLoaderSimple": ("ckpt_name",),
    }
    links = {
        link[0]: link[1]
        for link in workflow.get("links") or []
        if isinstance(link, list) and len(link) >= 2
    }
    nodes: dict[str, Any] = {}
    for node in workflow["nodes"]:
        if not isinstance(node, dict) or "id" not in node:
            continue
        kind = str(node.get("type", ""))
        values = node.get("widgets_values") or []
        inputs: dict[str, Any] = {}
        if isinstance(values, list):
            inputs = dict(zip(widgets.get(kind, ()), values, strict=False))
        for slot in node.get("inputs") or []:
            if isinstance(slot, dict) and slot.get("link") in links:
                inputs[slot.get("name", "")] = [str(links[slot["link"]]), 0]
        nodes[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return nodes


def _invokeai_infotext(meta: dict[str, Any], notes: list[str]) -> str:
    """A1111 infotext from InvokeAI's `invokeai_metadata` chunk (3.x and 4.x)."""
    settings: dict[str, Any] = {}
    if isinstance(meta.get("steps"), int):
        settings["Steps"] = meta["steps"]
    settings.update(_a1111_sampler(meta.get("scheduler"), None, notes))
    if isinstance(meta.get("cfg_scale"), int | float):
        settings["CFG scale"] = float(meta["cfg_scale"])
    if isinstance(meta.get("seed"), int):
        settings["Seed"] = meta["seed"]
    if isinstance(meta.get("width"), int) and isinstance(meta.get("height"), int):
        settings["Size"] = f"{meta['width']}x{meta['height']}"
    strength = meta.get("strength")
    if meta.get("generation_mode", "txt2img") != "txt2img":
        notes.append(f"InvokeAI {meta['generation_mode']}: its input image is not in the PNG")
        if isinstance(strength, int | float):
            settings["Denoising strength"] = float(strength)
    model = meta.get("model")
    if isinstance(model, dict):
        settings["Model"] = model.get("name") or model.get("model_name")
    elif isinstance(model, str):
        settings["Model"] = model
    for key, label in (("cfg_rescale_multiplier", "CFG rescale"), ("clip_skip", "CLIP skip")):
        if meta.get(key):
            notes.append(f"{label} {meta[key]} is not a setting here; not imported")
    if meta.get("loras"):
        notes.append(f"{len(meta['loras'])} LoRA(s) in InvokeAI's metadata are not imported")
    negative = meta.get("negative_prompt")
    positive = meta.get("positive_prompt")
    return format_parameters(
        positive if isinstance(positive, str) else "",
        negative if isinstance(negative, str) else "",
        settings,
    )


def infotext_of(image: Image.Image) -> tuple[str | None, list[str]]:
    """A PNG's generation parameters as A1111 infotext, and notes on what did not carry over.

    Its own `parameters` chunk (A1111, Forge, SD.Next, this studio) when it has one; else composed
    from ComfyUI's `prompt` chunk (the API graph: the KSampler's seed, steps, CFG, sampler and
    scheduler, denoise; the CLIPTextEncode texts of its positive and negative inputs; the
    EmptyLatentImage's size; the checkpoint's name as Model), or its `workflow` chunk (the UI
    graph) when that is all there is; else from InvokeAI's `invokeai_metadata`. None when the PNG
    carries none of them. Values with no counterpart here are named in the notes.
    """
    text = getattr(image, "text", None) or image.info
    notes: list[str] = []
    if text.get(PARAMETERS_KEY):
        return text[PARAMETERS_KEY], notes
    prompt = _json_chunk(text, COMFY_PROMPT_KEY)
    if isinstance(prompt, dict):
        return _comfy_infotext(prompt, notes), notes
    workflow = _comfy_workflow_nodes(_json_chunk(text, COMFY_WORKFLOW_KEY))
    if workflow:
        found = _comfy_infotext(workflow, notes)
        return found, ["Read from ComfyUI's UI workflow (no API graph in the PNG)", *notes]
    invoke = _json_chunk(text, INVOKEAI_KEY)
    if isinstance(invoke, dict):
        return _invokeai_infotext(invoke, notes), notes
    return None, notes
