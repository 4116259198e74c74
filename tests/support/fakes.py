"""A fake chat backend at the llm.py boundary: valid, deterministic answers from the input."""

from __future__ import annotations

import base64
import email.parser
import email.policy
import hashlib
import io
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from studio.llm.base import ChatRequest


def _users(request: ChatRequest) -> str:
    """The user messages, the last first (a season style's data is in the one before it)."""
    return "\n".join(text for role, text in reversed(request.messages) if role == "user")


def _data_title(request: ChatRequest) -> str:
    user = _users(request)
    match = re.search(r'"title": "([^"]*)"', user)
    return match.group(1) if match else "untitled"


def _data_value(request: ChatRequest, key: str) -> str:
    """A string value from the JSON data in the user messages ("" when absent)."""
    user = _users(request)
    match = re.search(rf'"{key}": ("(?:[^"\\]|\\.)*")', user)
    return json.loads(match.group(1)) if match else ""


def _cast_names(schema: dict[str, Any]) -> list[str]:
    return list(schema.get("items", {}).get("enum", []))


# Things worn or carried that a description may name in English: the fake's looks keep them.
WORN = ("cap", "hat", "bonnet", "cloak", "coat", "overcoat", "pipe", "ring", "glasses",
        "spectacles", "scarf", "cane", "umbrella", "boots", "helmet", "dress", "gown", "suit",
        "uniform", "beard", "moustache", "mustache", "braid", "lantern", "necklace")  # fmt: skip


class FakeBackend:
    """Answers the studio's schemas; `bad_answers` are returned first, one per call."""

    def __init__(
        self,
        bad_answers: list[str] | None = None,
        name: str = "fake-llm",
        by_seed: bool = False,
        long_posts: bool = False,
    ):
        self.requests: list[ChatRequest] = []
        self.bad_answers = list(bad_answers or [])
        self.name = name
        self.by_seed = by_seed  # episode subjects name the sampling seed, as a rewrite would vary
        self.long_posts = long_posts  # posts as long as allowed, with long hashtags: over X's 280

    def identity(self) -> str:
        return self.name

    def complete(self, request: ChatRequest) -> str:
        self.requests.append(request)
        if self.bad_answers:
            return self.bad_answers.pop(0)
        return json.dumps(self.answer(request))

    def answer(self, request: ChatRequest) -> dict[str, Any]:
        properties = request.schema.get("properties", {})
        if request.messages[0][1].startswith("You translate the fields"):
            return self._translate(request)
        title = _data_title(request)
        if "person" in properties:  # a character's look
            name = _data_value(request, "name")
            described = _data_value(request, "description").lower()
            worn = [w for w in WORN if re.search(rf"\b{w}\b", described)]  # as a good LLM keeps
            return {
                "person": f"man in his thirties called up for {name}"[:60],
                "face": "sharp grey eyes, thin lips",
                "hair": "short dark hair",
                "clothing": ", ".join(["dark frock coat, white collar", *worn]),
                "palette": "charcoal, ivory",
                "expression": "calm, attentive",
                "background": "plain dark backdrop",
                "lighting": "soft window light",
            }
        if "moments" in properties:  # a storyboard
            moments = properties["moments"]
            names = _cast_names(moments["items"]["properties"]["cast"])
            return {
                "moments": [
                    {
                        "title": f"Moment {i + 1} of {title}",
                        "cast": names[:2],
                        "subject": f"a man at moment {i + 1} of {title}",
                        "setting": "Victorian London street",
                        "lighting": "gaslight",
                        "composition": "wide shot",
                    }
                    for i in range(moments["minItems"])
                ]
            }
        if list(properties) == ["clothing"]:  # a look's clothing, with the items it lost
            items = re.search(r"colours and materials: (.*?)\. Keep", request.messages[0][1], re.S)
            named = " ".join(items.group(1).split()).split(", ") if items else []
            return {"clothing": ", ".join(f"worn {item}" for item in named) or "plain clothes"}
        if set(properties) == {"subject", "setting", "lighting", "composition"}:  # a moment again
            moment = _data_value(request, "this_moment")
            return {
                "subject": f"another picture of {moment}"[:150],
                "setting": "a narrow alley at night",
                "lighting": "a single lantern",
                "composition": "close-up",
            }
        if "meaning" in properties:  # a change request, by chain-of-thought
            change = _data_value(request, "change_request")
            return {
                "meaning": f"The user wants: {change}"[:200],
                "change": "the lighting and the time of day",
                "keep": "the people, the place and the composition",
                "subject": f"a detective examining a clue, changed {len(change)}",
                "setting": "Victorian London street at night",
                "details": "gas lamps, wet cobblestones",
                "lighting": "moonlight, cold blue",
                "composition": "wide shot, low angle",
                "style": "oil painting",
                "cast": _cast_names(properties["cast"])[:2],
            }
        if "costume" in properties:  # an alternate reality
            reality = _data_value(request, "reality")
            return {
                "costume": f"clothes of {reality}"[:100],
                "setting": f"a place in {reality}"[:100],
                "details": "props of the era",
                "lighting": "dramatic light",
                "style": f"{reality} style"[:100],
            }
        if "idea_in_english" in properties:  # the prompt library's Improve
            idea = _data_value(request, "idea")
            user = request.messages[-1][1]
            examples = json.loads(user[user.index("{") :])["examples"]
            first = examples[0] if examples else "no example"
            takes = [key for key in properties if key != "idea_in_english"]
            return {
                "idea_in_english": f"in English: {idea[:80]}",
                **{
                    take: {
                        "reasoning": f"{take}: from the example '{first[:60]}'",
                        "subject": f"{take.replace('_', ' ')} of {idea[:80]}",
                        "setting": "a city street",
                        "details": "wet cobblestones",
                        "lighting": "cinematic lighting",
                        "composition": take.replace("_", " "),
                        "style": "oil painting",
                    }
                    for take in takes
                },
            }
        if "follow_ups" in properties:
            topics = ["key events", "recurring characters", "mood", "visual motifs"]
            return {
                "follow_ups": [
                    {"question": f"What are the {t} of {title}?", "answer": f"The {t} of {title}."}
                    for t in topics
                ]
            }
        if "hook" in properties:
            return {
                "hook": f"Who is behind {title}?",
                "key_message": f"{title} is the case nobody saw coming.",
                "hashtag_strategy": "the series, the case, the genre",
                "hashtags": ["#SherlockHolmes", "#Mystery", "#" + "".join(title.split())],
            }
        if "posts" in properties:
            return self._posts(request)
        if list(properties) == ["text"]:  # shorten a post
            limit = properties["text"]["maxLength"]
            text = json.loads(request.messages[-1][1].split("\n", 1)[1])["text"]
            return {"text": text[: limit - 1].rsplit(" ", 1)[0]}
        if "prompt" in properties and "negative_prompt" in properties:
            post = json.loads(request.messages[-1][1].split("Post (JSON data): ", 1)[1])["text"]
            return {
                "prompt": f"poster for the post: {' '.join(post.split()[:8])}, gaslit street",
                "negative_prompt": "text, watermark",
            }
        if "rationale" in properties:
            return {
                "rationale": f"The turning point of {title}.",
                "subject": f"detective examining a clue from {title}"
                + (f", take {request.seed}" if self.by_seed else ""),
                "setting": "Victorian London street, foggy night",
                "details": "gas lamps, wet cobblestones, hansom cab",
                "lighting": "warm gaslight, cold blue fog",
                "composition": "wide shot, low angle",
                "style": "oil painting",
                "cast": _cast_names(properties.get("cast", {}))[:2],
                "negative_prompt": "blurry, modern cars",
            }
        if list(properties) == ["subject", "setting", "details"]:  # one season style, again
            style = re.search(r"Style: (.*)", request.messages[-1][1]).group(1)
            return {"subject": f"{style} scene of {title}", "setting": f"a {style} harbour",
                    "details": f"{style} kites and lanterns"}  # fmt: skip
        places = ["Baker Street at dusk", "a moor at noon", "a river bank in spring",
                  "a railway station at night", "a country house garden"]  # fmt: skip
        things = ["violin, pipe, magnifying glass", "hansom cab, top hat", "rowing boat, reeds",
                  "steam engine, lamps", "hedge maze, roses"]  # fmt: skip
        return {
            key: {
                part: text
                for part, text in {
                    "subject": f"{key} poster of {title}",
                    "setting": places[number % len(places)],
                    "details": things[number % len(things)],
                    "lighting": "dramatic side light",
                    "composition": "medium shot",
                }.items()
                if part in properties[key].get("properties", {part: 0})
            }
            for number, key in enumerate(properties)
        }

    # Spanish and Portuguese words the fakes write, in English (the translation call's answer)
    ENGLISH = {"mujer": "woman", "ingeniera": "engineer", "minas": "mines", "pelo": "hair",
               "negro": "black", "trenza": "braid", "capa": "raincoat", "chuva": "", "amarela":
               "yellow", "faroleira": "lighthouse keeper", "túnel": "tunnel", "cristales":
               "crystals", "niebla": "fog", "invierno": "winter", "ilha": "island", "vento":
               "wind", "noche": "night", "luz": "light"}  # fmt: skip

    def _translate(self, request: ChatRequest) -> dict[str, Any]:
        """The fields word for word through ENGLISH; other foreign words left out, names kept."""
        user = request.messages[-1][1]
        fields = json.loads(user[user.index("{") :])
        english = {}
        for key, text in fields.items():
            words = []
            for word in re.findall(r"[\w'-]+|,", text):
                lower = word.lower()
                if lower in self.ENGLISH:
                    words.append(self.ENGLISH[lower])
                elif word == "," or word[:1].isupper() or lower.isascii():
                    words.append(word)
            english[key] = " ".join(w for w in words if w).replace(" ,", ",") or "a scene"
        return english

    def _posts(self, request: ChatRequest) -> dict[str, Any]:
        user = request.messages[-1][1]
        platform = re.search(r"Platform: (\w+)", user).group(1)
        hook = re.search(r'"hook": "([^"]*)"', user).group(1)
        action = re.search(r"Call to action: (.*)", user).group(1)
        post_schema = request.schema["properties"]["posts"]["items"]["properties"]
        count = request.schema["properties"]["posts"]["minItems"]
        posts = []
        for number in range(1, count + 1):
            text = f"{hook} Post {number} for {platform}. {action}"
            tags = ["#SherlockHolmes", "#Mystery"]
            if self.long_posts:
                limit = post_schema["text"]["maxLength"]
                text = (text + " " + "The game is afoot." * 40)[:limit]
                tags = ["#" + chr(65 + i) * 38 for i in range(post_schema["hashtags"]["maxItems"])]
            posts.append({"text": text, "hashtags": tags})
        return {"posts": posts}


def _schema_of(body: dict[str, Any]) -> dict[str, Any]:
    """The schema a chat request asks for, in any structured-output mode of studio.llm."""
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return response_format.get("json_schema", {}).get("schema", {})
    if response_format.get("type") == "json_object":
        return response_format.get("schema", {})
    for message in reversed(body["messages"]):  # plain: stated in a system message
        content = message["content"]
        if message["role"] == "system" and "{" in content:
            try:
                schema, _ = json.JSONDecoder().raw_decode(content[content.index("{") :])
            except json.JSONDecodeError:
                continue
            if isinstance(schema, dict) and schema.get("type") == "object":
                return schema
    return {}


def _mode_of(body: dict[str, Any]) -> str:
    return (body.get("response_format") or {}).get("type", "plain")


@dataclass(frozen=True)
class ImageFailure:
    """An error answer of the fake Images API, as OpenAI words them."""

    status: int
    code: str | None = None
    message: str = ""
    retry_after: float | None = None  # seconds, sent as a Retry-After header


CONTENT_POLICY = ImageFailure(
    400,
    "content_policy_violation",
    "Your request was rejected as a result of our safety system. Your prompt may contain text "
    "that is not allowed by our safety system.",
)
MODERATION_BLOCKED = ImageFailure(
    400, "moderation_blocked", "Your request was rejected by the safety system."
)
RATE_LIMITED = ImageFailure(429, "rate_limit_exceeded", "Rate limit reached for images per minute.")


@dataclass
class ImageCall:
    """One request to the fake Images API, as the server read it."""

    endpoint: str  # generations, edits or variations
    fields: dict[str, Any]  # the JSON body, or the form's text fields
    files: dict[str, Image.Image] = field(default_factory=dict)  # uploads: image, mask
    authorization: str = ""


def fake_image_colour(text: str) -> tuple[int, int, int]:
    """The solid colour the fake paints for `text` (a prompt, or an image's bytes)."""
    digest = hashlib.sha256(text.encode()).digest()
    return digest[0], digest[1], digest[2]


def _png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _form(content_type: str, body: bytes) -> tuple[dict[str, Any], dict[str, Image.Image]]:
    """The text fields and the image files of a multipart/form-data body."""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    fields: dict[str, Any] = {}
    files: dict[str, Image.Image] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True)
        if part.get_filename() is not None:
            image = Image.open(io.BytesIO(data))
            image.load()
            files[name.removesuffix("[]")] = image
        else:
            fields[name] = data.decode()
    return fields, files


class FakeImagesAPI:
    """OpenAI's Images API, played by FakeOpenAIServer (`server.images`).

    `/v1/images/generations` (JSON), `/v1/images/edits` and `/v1/images/variations`
    (multipart forms) answer one solid-colour PNG per image (`fake_image_colour` of the prompt)
    at the size asked for; an edit keeps the uploaded image where the mask is opaque (and
    everywhere without a mask, tinted) and paints the colour where it is transparent; a
    variation is the image, resized. As OpenAI: dall-e models answer with a URL unless asked for
    `response_format=b64_json`, gpt-image models always with base64 and refuse
    `response_format`; dall-e-3 adds a `revised_prompt`. Options:
    - `models`: the models served (others: 404 model_not_found); None: any;
    - `key`: the only API key accepted (else 401, whose message quotes the key it got, as a
      careless server might); None: any;
    - `fail_next`: `ImageFailure`s (or bare statuses) for the next requests, one each;
      `fail_always`: one for every request after those.
    Every request is recorded in `calls`.
    """

    def __init__(
        self,
        *,
        models: list[str] | None = None,
        key: str | None = None,
        fail_next: list[ImageFailure | int] | None = None,
        fail_always: ImageFailure | int | None = None,
    ):
        self.models = models
        self.key = key
        self.fail_next = list(fail_next or [])
        self.fail_always = fail_always
        self.calls: list[ImageCall] = []
        self._lock = threading.Lock()

    def answer(
        self, path: str, headers: Any, body: bytes
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON payload, extra headers) for one request to `/v1/images/...`."""
        endpoint = path.removeprefix("/v1/images/")
        if endpoint not in {"generations", "edits", "variations"}:
            return _image_error(ImageFailure(404, None, f"Invalid URL (POST {path})"))
        content_type = headers.get("Content-Type", "")
        if content_type.startswith("multipart/form-data"):
            fields, files = _form(content_type, body)
        else:
            fields, files = json.loads(body or b"{}"), {}
        authorization = headers.get("Authorization", "")
        with self._lock:
            self.calls.append(ImageCall(endpoint, fields, files, authorization))
            failure = self.fail_next.pop(0) if self.fail_next else self.fail_always
        if self.key is not None and authorization != f"Bearer {self.key}":
            got = authorization.removeprefix("Bearer ")
            return _image_error(
                ImageFailure(401, "invalid_api_key", f"Incorrect API key provided: {got}.")
            )
        if failure is not None:
            return _image_error(failure)
        model = fields.get("model") or "dall-e-2"
        if self.models is not None and model not in self.models:
            return _image_error(
                ImageFailure(404, "model_not_found", f"The model `{model}` does not exist.")
            )
        gpt_image = model.startswith("gpt-image")
        if gpt_image and "response_format" in fields:
            return _image_error(
                ImageFailure(400, "unknown_parameter", "Unknown parameter: 'response_format'.")
            )
        width, height = (int(v) for v in str(fields.get("size", "1024x1024")).split("x"))
        image = self._draw(endpoint, fields, files, (width, height))
        item: dict[str, Any] = {}
        if gpt_image or fields.get("response_format") == "b64_json":
            item["b64_json"] = _png_b64(image)
        else:
            item["url"] = "https://images.example/fake.png"
        if model == "dall-e-3":
            item["revised_prompt"] = f"A detailed picture of {fields.get('prompt', '')}"
        return 200, {"created": 0, "data": [item]}, {}

    @staticmethod
    def _draw(
        endpoint: str, fields: dict[str, Any], files: dict[str, Image.Image], size: tuple[int, int]
    ) -> Image.Image:
        colour = fake_image_colour(str(fields.get("prompt", "")))
        painted = Image.new("RGB", size, colour)
        if endpoint == "generations":
            return painted
        original = files["image"].convert("RGB").resize(size)
        if endpoint == "variations":
            return original
        if "mask" not in files:
            return Image.blend(original, painted, 0.5)
        keep = files["mask"].getchannel("A").resize(size)  # opaque = keep
        return Image.composite(original, painted, keep)


def _image_error(failure: ImageFailure | int) -> tuple[int, dict[str, Any], dict[str, str]]:
    if isinstance(failure, int):
        failure = ImageFailure(failure, None, f"failing on purpose with {failure}")
    headers = {} if failure.retry_after is None else {"Retry-After": f"{failure.retry_after:g}"}
    error = {"code": failure.code, "message": failure.message, "param": None, "type": "error"}
    return failure.status, {"error": error}, headers


class FakeOpenAIServer:
    """An OpenAI-compatible chat server on localhost that answers with FakeBackend's answers.

    For tests that run the app in another process (the browser test): set OPENAI_BASE_URL to
    `.url`, OPENAI_API_KEY to anything and STUDIO_LLM_MODEL to "fake-llm".

    It serves `/v1/models`, `/v1/chat/completions` and the Images API (`/v1/images/...`, played
    by `images`, a FakeImagesAPI: `.images`), 404 elsewhere (`.root` is the URL without /v1).
    Options, to play servers that differ:
    - `reject_json_schema_status`, `reject_json_object_status`, `reject_plain_status`: answer
      chat requests in that structured-output mode with this HTTP status (llama-cpp-python's
      server answers json_schema with 500);
    - `fail_next`: HTTP statuses for the next chat requests, one each (e.g. [503, 503]); the
      list is `.fail_next`, which a test may extend while the server runs;
    - `models`: the model names served; when given, a chat request for another model is a 404;
    - `latency`: seconds each chat answer takes (requests are answered concurrently; the most
      that were in flight at once is `.max_in_flight`);
    - `slots`: answer at most this many chat requests at once and queue the rest, as llama.cpp's
      and llama-cpp-python's servers do (a queued request's wait counts towards its client's
      timeout); with `advertise_slots`, `GET /props` says `{"total_slots": slots}` as llama.cpp's
      server does (else 404, as llama-cpp-python's).
    """

    def __init__(
        self,
        backend: FakeBackend | None = None,
        *,
        reject_json_schema_status: int | None = None,
        reject_json_object_status: int | None = None,
        reject_plain_status: int | None = None,
        fail_next: list[int] | None = None,
        models: list[str] | None = None,
        images: FakeImagesAPI | None = None,
        latency: float = 0.0,
        slots: int | None = None,
        advertise_slots: bool = False,
    ):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        fake = backend or FakeBackend()
        bodies: list[dict[str, Any]] = []
        requests: list[tuple[str, str]] = []
        authorizations: list[str] = []
        rejects = {
            "json_schema": reject_json_schema_status,
            "json_object": reject_json_object_status,
            "plain": reject_plain_status,
        }
        failures = list(fail_next or [])
        served = list(models) if models is not None else [fake.name]
        check_model = models is not None
        images_api = images or FakeImagesAPI()
        lock = threading.Lock()
        server_state = self
        self.in_flight = 0
        self.max_in_flight = 0
        queue = threading.Semaphore(slots) if slots else None

        class Handler(BaseHTTPRequestHandler):
            def _send(
                self, payload: dict[str, Any], status: int = 200, headers: dict | None = None
            ) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str) -> None:
                self._send({"error": {"code": status, "message": message, "type": "error"}}, status)

            def _seen(self) -> str:
                path = self.path.split("?", 1)[0].rstrip("/")
                with lock:
                    requests.append((self.command, path))
                    authorizations.append(self.headers.get("Authorization", ""))
                return path

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self._seen()
                if path == "/props" and slots and advertise_slots:
                    self._send({"total_slots": slots})
                    return
                if path != "/v1/models":
                    self._error(404, "File Not Found")
                    return
                self._send(
                    {
                        "object": "list",
                        "data": [
                            {"id": name, "object": "model", "created": 0, "owned_by": "tests"}
                            for name in served
                        ],
                    }
                )

            def do_POST(self) -> None:  # noqa: N802
                path = self._seen()
                data = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if path.startswith("/v1/images/"):
                    status, payload, headers = images_api.answer(path, self.headers, data)
                    self._send(payload, status, headers)
                    return
                body = json.loads(data)
                if path != "/v1/chat/completions":
                    self._error(404, "File Not Found")
                    return
                with lock:
                    bodies.append(body)
                    failure = failures.pop(0) if failures else None
                if queue is not None:
                    queue.acquire()
                try:
                    if latency:
                        with lock:
                            server_state.in_flight += 1
                            server_state.max_in_flight = max(
                                server_state.max_in_flight, server_state.in_flight
                            )
                        time.sleep(latency)
                        with lock:
                            server_state.in_flight -= 1
                finally:
                    if queue is not None:
                        queue.release()
                if failure is not None:
                    self._error(failure, f"failing on purpose with {failure}")
                    return
                if check_model and body.get("model") not in served:
                    self._error(404, f"The model `{body.get('model')}` does not exist.")
                    return
                mode = _mode_of(body)
                if rejects.get(mode):
                    self._error(rejects[mode], f"1 validation error: response_format {mode}")
                    return
                request = ChatRequest(
                    messages=tuple((m["role"], m["content"]) for m in body["messages"]),
                    schema=_schema_of(body),
                    max_tokens=body.get("max_tokens", 512),
                    seed=body.get("seed", 0),
                )
                self._send({
                    "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
                    "model": fake.name,
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": fake.complete(request)}}],
                })  # fmt: skip

            def log_message(self, *args: Any) -> None:
                pass

        self.backend = fake
        self.bodies = bodies  # every chat request's JSON body, as the server received it
        self.requests = requests  # (method, path) of every request
        self.fail_next = failures  # extend it to fail the next chat requests
        self.authorizations = authorizations  # every request's Authorization header
        self.images = images_api  # the Images API: its options and the calls it got
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.root = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.url = f"{self.root}/v1"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def modes(self) -> list[str]:
        """The structured-output mode of every chat request, in order."""
        return [_mode_of(body) for body in self.bodies]

    def __enter__(self) -> FakeOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
