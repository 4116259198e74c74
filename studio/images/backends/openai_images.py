"""OpenAI Images as an image backend: `image_model = "openai:<model>"`, through the `openai` client.

    STUDIO_IMAGE_MODEL=openai:gpt-image-1 OPENAI_API_KEY=sk-... python dataprep.py

What each model does (`MODEL_SPECS`; a model not listed there is taken to make images from text
only, at any size, as OpenAI-compatible servers of other models do):

| model         | modes                                    | sizes                         |
| ------------- | ---------------------------------------- | ----------------------------- |
| `gpt-image-1` | txt2img, img2img (edit), inpaint (edit)  | 1024x1024 1536x1024 1024x1536 |
| `dall-e-3`    | txt2img                                  | 1024x1024 1792x1024 1024x1792 |
| `dall-e-2`    | txt2img, inpaint (edit), variation       | 256x256 512x512 1024x1024     |

None of them has samplers, seeds, a negative prompt, steps, CFG or strength: those fields of a
request are not sent (and are not in the cache key), except the seed, which names a *take*: the
same request with the same seed is the same paid call, answered from the catalog; another seed asks
for another image. A negative prompt is never dropped silently: it is folded into the prompt sent
as an instruction the models read, "<prompt> Avoid: <negative prompt>." (`folded_prompt`), so it
is in the cache key and counts towards the prompt's length; the image's provenance says so
(`negative_prompt`: "folded into the prompt", and `prompt_sent`) and its A1111 parameters keep the
`Negative prompt:` line. A variation sends no prompt, so not its negative prompt either, and its
provenance says that. Inpainting masks are ours (white = repaint), sent as OpenAI wants them: an
RGBA PNG that is transparent where to repaint (`openai_mask`). DALL-E 3 rewrites prompts; what it
drew from is returned in the image's `info["revised_prompt"]`.

The server is `images_base_url` (STUDIO_IMAGES_BASE_URL) when set, else the LLM's server
(`llm_base_url`, OPENAI_BASE_URL), else OpenAI itself; its key is OPENAI_API_KEY, read from the
environment or .env and never stored, logged or shown (server messages are scrubbed of it; URLs
are shown through `redact_url`). Each image has one deadline for all its tries: 429s (not "out of
quota"), 500s, 502-504s and refused connections are tried again with a growing backoff (or the
server's Retry-After); a request that times out is not, as the server may still be making, and
charging for, that image. Every failure is an `OpenAIImagesError` (a `RenderError`) that says
what to do.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from PIL import Image

from studio.core.config import API_KEY_ENV, openai_api_key
from studio.core.errors import (
    ConfigError,
    ImageInputError,
    ImagesUnavailableError,
    OpenAIImagesError,
    ParameterError,
    PromptRefusedError,
    RateLimitedError,
    RenderError,
)
from studio.core.inputs import check_mask_size, png_bytes, to_mask, to_rgb
from studio.core.metadata import open_image_bytes
from studio.core.params import RenderRequest
from studio.core.remote import (
    DEFAULT_OPENAI_BASE_URL,
    redact_text,
    redact_url,
    retry_after,
    seconds_text,
    tries_text,
)
from studio.images.backends.base import OPENAI_PREFIX, Capabilities, InputResolver, StepCallback

if TYPE_CHECKING:
    from studio.core.config import Settings

log = logging.getLogger(__name__)

# The settings this backend reads besides image_model and llm_base_url. They are read from the
# Settings field when config.py has it, else from the environment variable.
IMAGES_BASE_URL = ("images_base_url", "STUDIO_IMAGES_BASE_URL")
IMAGES_TIMEOUT = ("images_timeout", "STUDIO_IMAGES_TIMEOUT")
DEFAULT_TIMEOUT = 300.0  # seconds per try: gpt-image-1 can take minutes for a large image
KEY_ENV = API_KEY_ENV

_REFUSED_CODES = {"content_policy_violation", "moderation_blocked"}
_TRANSIENT = {408, 409, 429, 500, 502, 503, 504}  # waiting may help
_NO_QUOTA_CODES = {"insufficient_quota", "billing_hard_limit_reached"}  # a 429 waiting won't fix


@dataclass(frozen=True)
class ModelSpec:
    """What one OpenAI image model accepts."""

    modes: tuple[str, ...]
    sizes: tuple[tuple[int, int], ...]  # empty: any size the studio accepts
    max_prompt: int | None  # characters
    b64_by_request: bool  # True: ask for response_format="b64_json" (the default is a URL)
    square_inputs: bool = False  # edits and variations take square images only
    max_input_bytes: int = 50 * 2**20  # per uploaded PNG


MODEL_SPECS: dict[str, ModelSpec] = {
    # gpt-image-* always answer with base64 and refuse `response_format`.
    "gpt-image-1": ModelSpec(
        ("txt2img", "img2img", "inpaint"),
        ((1024, 1024), (1536, 1024), (1024, 1536)),
        32000,
        b64_by_request=False,
    ),
    "dall-e-3": ModelSpec(
        ("txt2img",), ((1024, 1024), (1792, 1024), (1024, 1792)), 4000, b64_by_request=True
    ),
    "dall-e-2": ModelSpec(
        ("txt2img", "inpaint", "variation"),
        ((256, 256), (512, 512), (1024, 1024)),
        1000,
        b64_by_request=True,
        square_inputs=True,
        max_input_bytes=4 * 2**20,
    ),
}
# Another model (another server's, say): text to image only, any size, base64 asked for.
OTHER_MODEL = ModelSpec(("txt2img",), (), None, b64_by_request=True)


def model_spec(model: str) -> ModelSpec:
    """`MODEL_SPECS[model]`; later gpt-image models (gpt-image-1-mini) as gpt-image-1."""
    if model in MODEL_SPECS:
        return MODEL_SPECS[model]
    if model.startswith("gpt-image-"):
        return MODEL_SPECS["gpt-image-1"]
    return OTHER_MODEL


FOLDED = "folded into the prompt"  # provenance["negative_prompt"]: how the negative prompt was used
NOT_SENT = "not sent: a variation sends no prompt"


def folded_prompt(request: RenderRequest) -> str:
    """The prompt sent for `request`: its prompt, and its negative prompt (if any) as an
    instruction after it, "<prompt> Avoid: <negative prompt>." (the OpenAI image models have no
    negative prompt, but read what to leave out from the prompt)."""
    negative = " ".join(request.negative_prompt.split()).rstrip(" .")
    if not negative:
        return request.prompt
    return f"{request.prompt.rstrip()} Avoid: {negative}.".lstrip()


def openai_mask(mask: Image.Image) -> Image.Image:
    """Our mask (L, white = repaint) as OpenAI's: RGBA, transparent where to repaint."""
    alpha = mask.convert("L").point(lambda v: 0 if v >= 128 else 255)
    result = Image.new("RGBA", mask.size, (0, 0, 0, 255))
    result.putalpha(alpha)
    return result


class OpenAIImagesBackend:
    """An `ImageBackend` on the OpenAI Images API (or any server that speaks it).

    `timeout` is per try; `deadline` (default: `timeout` x `tries`) bounds all the tries of one
    image together, backoffs included. `on_status` hears a line before each retry (default:
    logging). The API key comes from `api_key` or OPENAI_API_KEY (the environment's, else .env's)
    and is only given to the client.
    """

    def __init__(
        self,
        model: str,
        base_url: str = "",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        tries: int = 3,
        deadline: float | None = None,
        backoff: float = 2.0,
        url_setting: str = "",
        on_status: Callable[[str], None] | None = None,
    ):
        self.model = model
        self.spec = model_spec(model)
        self._base_url = (
            base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL
        ).rstrip("/")
        self._api_key = api_key if api_key is not None else openai_api_key()
        self.timeout = float(timeout)
        self.tries = max(1, int(tries))
        self.deadline = float(deadline) if deadline else self.timeout * self.tries
        self.backoff = backoff
        # How the user sets the server, for messages.
        self.url_setting = url_setting or f"{IMAGES_BASE_URL[0]} ({IMAGES_BASE_URL[1]})"
        self.on_status = on_status
        self._client: Any = None
        self.capabilities = Capabilities(
            modes=self.spec.modes,
            samplers=(),
            sizes=self.spec.sizes,
            seeds=False,
            negative_prompt=False,
            steps_and_cfg=False,
            strength=False,
            max_batch=1,
            prompt_syntax=False,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIImagesBackend:
        """The backend `image_model = "openai:<model>"` names, on the server the settings pick:
        images_base_url (STUDIO_IMAGES_BASE_URL), else llm_base_url (OPENAI_BASE_URL), else
        OpenAI. Needs no key and makes no call until it renders."""
        model = settings.image_model.strip().removeprefix(OPENAI_PREFIX).strip()
        if not model:
            raise ConfigError(
                f"`image_model` is {settings.image_model!r}, which names no model; use "
                "openai:gpt-image-1, openai:dall-e-3 or openai:dall-e-2 (STUDIO_IMAGE_MODEL)."
            )
        images_url = settings.images_base_url.strip()
        llm_url = settings.llm_base_url or os.environ.get("OPENAI_BASE_URL", "")
        if images_url:
            base_url, url_setting = images_url, f"{IMAGES_BASE_URL[0]} ({IMAGES_BASE_URL[1]})"
        else:
            base_url = llm_url or DEFAULT_OPENAI_BASE_URL
            url_setting = (
                f"llm_base_url (OPENAI_BASE_URL), or {IMAGES_BASE_URL[0]} ({IMAGES_BASE_URL[1]}) "
                "for images alone"
            )
        return cls(model, base_url, timeout=settings.images_timeout, url_setting=url_setting)

    # What the image service reads --------------------------------------------------------------

    @property
    def label(self) -> str:
        return f"{self.model} (OpenAI)"

    @property
    def placeholder(self) -> bool:
        return False

    @property
    def device(self) -> str:
        return "remote"

    @property
    def notes(self) -> list[str]:
        if self.spec is not OTHER_MODEL:
            return []
        known = ", ".join(f"openai:{name}" for name in MODEL_SPECS)
        return [
            f"{self.model!r} is not an OpenAI image model the studio knows ({known}); it is "
            "asked for images from text only, at the sizes you choose."
        ]

    def where(self) -> str:
        """The server's base URL, without credentials."""
        return redact_url(self._base_url)

    def identity(self) -> dict[str, str]:
        return {"model": self.model, "kind": "openai", "revision": ""}

    @property
    def model_hash(self) -> str | None:
        """None: a hosted model has no checkpoint file to hash."""
        return None

    @property
    def model_sha256(self) -> str | None:
        return None

    def sent_fields(self, request: RenderRequest) -> dict[str, Any]:
        """What a request sends to the API, input images named by their sha256."""
        fields: dict[str, Any] = {"size": f"{request.width}x{request.height}"}
        if request.mode != "variation":
            fields["prompt"] = folded_prompt(request)
        if request.init_image:
            fields["image"] = request.init_image
        if request.mode == "inpaint" and request.mask_image:
            fields["mask"] = request.mask_image
        return fields

    def cache_key(self, request: RenderRequest) -> str:
        """Model, mode, what is sent, and the seed as the take's number: a hit means this call
        was already made (and paid for); another seed asks for another image."""
        payload = {
            "backend": "openai-images",
            "model": self.model,
            "mode": request.mode,
            "sent": self.sent_fields(request),
            "take": request.seed,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def provenance(self, request: RenderRequest) -> dict[str, Any]:
        """Model, server, and with a negative prompt how it was used and the prompt sent."""
        provenance: dict[str, Any] = {
            "image_model": self.identity(),
            "placeholder": False,
            "device": self.device,
            "base_url": self.where(),
        }
        if request.negative_prompt.strip():
            if request.mode == "variation":
                provenance["negative_prompt"] = NOT_SENT
            else:
                provenance["negative_prompt"] = FOLDED
                provenance["prompt_sent"] = folded_prompt(request)
        return provenance

    def count_tokens(self, text: str) -> int:
        """Words, roughly: the Images API has no 77-token window; its limit is in characters
        (`ModelSpec.max_prompt`, checked before each call)."""
        return len(text.split())

    # Rendering ------------------------------------------------------------------------------

    def render(
        self,
        requests: Sequence[RenderRequest],
        on_step: StepCallback | None = None,
        inputs: InputResolver | None = None,
    ) -> list[Image.Image]:
        """One API call per request, in order; all are checked (inputs included) before the
        first call, so a bad request costs nothing."""
        calls = [self._prepare(request, inputs) for request in requests]
        if calls:
            self._check_key()
        images = []
        for method, kwargs in calls:
            images.append(self._call(method, kwargs))
            if on_step is not None:
                on_step(1, 1, None)
        return images

    def _prepare(
        self, request: RenderRequest, inputs: InputResolver | None
    ) -> tuple[str, dict[str, Any]]:
        """The client method and its arguments for `request`, after every check."""
        request.check()
        self.capabilities.check(request, self.label)
        spec = self.spec
        prompt = folded_prompt(request)
        if spec.max_prompt and request.mode != "variation" and len(prompt) > spec.max_prompt:
            folded = (
                " with the negative prompt folded into it (Avoid: ...)"
                if prompt != request.prompt
                else ""
            )
            raise ParameterError(
                f"{self.label} takes prompts of at most {spec.max_prompt:,} characters; this one "
                f"has {len(prompt):,}{folded}. Shorten it."
            )
        kwargs: dict[str, Any] = {
            "model": self.model,
            "n": 1,
            "size": f"{request.width}x{request.height}",
        }
        if spec.b64_by_request:
            kwargs["response_format"] = "b64_json"
        if request.mode == "txt2img":
            return "generate", {**kwargs, "prompt": prompt}
        image = to_rgb(self._input(inputs, request.init_image, "init image"))
        kwargs["image"] = self._upload("image.png", image)
        if request.mode == "variation":
            return "create_variation", kwargs
        kwargs["prompt"] = prompt
        if request.mode == "inpaint":
            mask = to_mask(self._input(inputs, request.mask_image, "mask"))
            check_mask_size(mask, image)
            kwargs["mask"] = self._upload("mask.png", openai_mask(mask))
        return "edit", kwargs

    def _input(self, inputs: InputResolver | None, sha256: str | None, what: str) -> Image.Image:
        if inputs is None or not sha256:
            raise RenderError(
                f"{self.label} was given no {what} to work from; pass the input images "
                "(inputs=) with the request."
            )
        try:
            return inputs(sha256)
        except (KeyError, FileNotFoundError):
            raise ImageInputError(
                f"The {what} {sha256[:12]} is not among the studio's input images; add it again."
            ) from None

    def _upload(self, name: str, image: Image.Image) -> tuple[str, bytes, str]:
        spec = self.spec
        if spec.square_inputs and image.width != image.height:
            raise ParameterError(
                f"{self.label} edits and varies square images only, and this one is "
                f"{image.width}x{image.height}; crop it to a square first."
            )
        data = png_bytes(image)
        if len(data) > spec.max_input_bytes:
            raise ParameterError(
                f"{self.label} takes images of at most {spec.max_input_bytes // 2**20} MB as PNG, "
                f"and this one is {len(data) / 2**20:.1f} MB; make it smaller (1024x1024, say)."
            )
        return (name, data, "image/png")

    def _check_key(self) -> None:
        host = urlsplit(self._base_url).hostname or ""
        if not self._api_key and (host == "openai.com" or host.endswith(".openai.com")):
            raise ImagesUnavailableError(
                f"{self.label} needs an API key: set {KEY_ENV} (in the environment or .env; it "
                "is never stored), or choose another image_model (STUDIO_IMAGE_MODEL)."
            )

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(
                base_url=self._base_url,
                api_key=self._api_key or "not-needed",  # servers of our own may want none
                timeout=self.timeout,
                max_retries=0,  # our own loop retries, under one deadline per image
            )
        return self._client

    def _call(self, method: str, kwargs: dict[str, Any]) -> Image.Image:
        response = self._request(getattr(self.client.images, method), kwargs)
        data = list(response.data or [])
        if not data:
            raise OpenAIImagesError(
                f"The image server at {self.where()} answered with no image; try again, or "
                "check the server's log."
            )
        item = data[0]
        if not item.b64_json:
            got = "a URL" if item.url else "nothing"
            raise OpenAIImagesError(
                f"The image server at {self.where()} answered with {got} instead of the image's "
                f"data (b64_json); {self.model!r} may not be an image model it serves as OpenAI "
                "does."
            )
        try:
            image = to_rgb(open_image_bytes(base64.b64decode(item.b64_json, validate=True)))
        except (binascii.Error, ValueError, ImageInputError) as exc:
            raise OpenAIImagesError(
                f"The image server at {self.where()} answered with data that is not an image "
                f"({exc}); try again, or check the server's log."
            ) from None
        if item.revised_prompt:
            image.info["revised_prompt"] = item.revised_prompt
        return image

    # Requests: one deadline, a few tries -----------------------------------------------------

    def _say(self, line: str) -> None:
        if self.on_status is None:
            log.warning("%s", line)
            return
        try:
            self.on_status(line)
        except Exception:  # a broken display must not break the call
            log.exception("The images status callback failed on %r", line)

    def _request(self, function: Any, kwargs: dict[str, Any]) -> Any:
        """`function(**kwargs)`, tried up to `self.tries` times within one deadline."""
        import openai

        started = time.monotonic()
        deadline = started + self.deadline
        min_try = min(1.0, self.timeout / 4)
        made = 0
        last: Any = None
        while made < self.tries:
            if last is not None:
                delay = retry_after(last)
                if delay is None:
                    delay = self.backoff * 2 ** (made - 1)
                if time.monotonic() + delay > deadline - min_try:
                    break
                self._say(
                    f"{self.label} at {self.where()}: try {made} {self._what_happened(last)}; "
                    f"trying again in {seconds_text(delay)} s (try {made + 1} of {self.tries})"
                )
                time.sleep(delay)
            try_timeout = min(self.timeout, deadline - time.monotonic())
            if try_timeout < min_try:
                break
            made += 1
            try:
                return function(timeout=try_timeout, **kwargs)
            except openai.APITimeoutError as exc:
                raise self._timed_out(try_timeout) from exc
            except openai.APIConnectionError as exc:
                last = exc
            except openai.APIStatusError as exc:
                if exc.status_code not in _TRANSIENT or exc.code in _NO_QUOTA_CODES:
                    raise self._status_error(exc) from exc
                last = exc
        raise self._gave_up(last, made, time.monotonic() - started) from last

    # Messages --------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        """`text` on one line, without URL credentials or the API key, at most 160 characters."""
        text = redact_text(" ".join(str(text).split()))
        if self._api_key:
            text = text.replace(self._api_key, "***")
        return text if len(text) <= 160 else text[:157] + "..."

    def _server_error(self, exc: Any) -> str:
        """The server's error, briefly: `HTTP 400 content_policy_violation "the message"`."""
        body = exc.body if isinstance(exc.body, dict) else {}
        message = body.get("message") or ""
        if not message:
            try:
                message = exc.response.text
            except Exception:  # noqa: BLE001 - a message is only a nicety here
                message = ""
        code = f" {exc.code}" if exc.code else ""
        message = self._scrub(message)
        return f'HTTP {exc.status_code}{code} "{message}"' if message else f"HTTP {exc.status_code}"

    def _what_happened(self, exc: Any) -> str:
        if hasattr(exc, "status_code"):
            return f"got {self._server_error(exc)}"
        return f"could not connect ({self._connection_problem(exc)})"

    def _connection_problem(self, exc: BaseException) -> str:
        cause = exc.__cause__ or exc
        text = self._scrub(str(cause))
        return f"{cause.__class__.__name__}: {text}" if text else cause.__class__.__name__

    def _timed_out(self, waited: float) -> ImagesUnavailableError:
        name, env = IMAGES_TIMEOUT
        return ImagesUnavailableError(
            f"The image server at {self.where()} did not answer within {seconds_text(waited)} s. "
            "It was not asked again, as it may still be making (and charging for) the image: try "
            "again "
            f"later, raise {name} ({env}), or check {self.url_setting}."
        )

    def _gave_up(self, last: Any, made: int, took: float) -> OpenAIImagesError:
        url, tries = self.where(), f"{tries_text(made)} in {seconds_text(took)} s"
        if last is None:
            return ImagesUnavailableError(
                f"The image server at {url} had no time left to answer ({tries}); try again later."
            )
        if not hasattr(last, "status_code"):
            return ImagesUnavailableError(
                f"No image server answered at {url} ({self._connection_problem(last)}; {tries}). "
                f"Start it or fix {self.url_setting}."
            )
        error = self._server_error(last)
        if last.status_code == 429:
            return RateLimitedError(
                f"The image server at {url} kept answering {error} (too many requests; {tries}): "
                f"try again later, or check the rate limits of your {KEY_ENV}'s account."
            )
        return OpenAIImagesError(
            f"The image server at {url} kept failing with {error} ({tries}); try again later, "
            "or check the server's status or log."
        )

    def _status_error(self, exc: Any) -> OpenAIImagesError:
        """An answer that waiting will not change."""
        url, error = self.where(), self._server_error(exc)
        if exc.code in _REFUSED_CODES:
            return PromptRefusedError(
                f"{self.label} refused the prompt ({error}). Rephrase it and try again; the "
                "same prompt will be refused again."
            )
        if exc.code in _NO_QUOTA_CODES:
            return RateLimitedError(
                f"The image server at {url} says the account is out of credit ({error}): check "
                f"the billing of your {KEY_ENV}'s account."
            )
        if exc.status_code in (401, 403):
            return ImagesUnavailableError(
                f"The image server at {url} refused the request ({error}): check {KEY_ENV} (and, "
                "for gpt-image-1, that the organisation is verified)."
            )
        if exc.status_code == 404:
            return ImagesUnavailableError(
                f"The image server at {url} has no model {self.model!r} or no Images API "
                f"({error}): set image_model (STUDIO_IMAGE_MODEL) to openai:gpt-image-1, "
                f"openai:dall-e-3 or openai:dall-e-2, or fix {self.url_setting}."
            )
        return OpenAIImagesError(
            f"The image server at {url} rejected the request with {error}; retrying will not "
            "help: change what it names."
        )
