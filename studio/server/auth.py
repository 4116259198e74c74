"""Who may call the server, and how much they may send: an ASGI middleware in front of every route.

With credentials set (`--api-auth USER:PASS[,USER:PASS...]`), each request needs HTTP Basic
credentials (as AUTOMATIC1111 clients send them) or `Authorization: Bearer PASS` (as the `openai`
client sends its API key); anything else gets 401, the docs included. Passwords are compared in
constant time (`hmac.compare_digest` over every pair, so the time does not tell which user
exists) and never appear in a log line, an error message or the catalog. Request bodies over
`max_body` bytes get 413, whether they say their length or stream it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from studio.core.errors import ConfigError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# 50 MB: a 2048x2048 PNG with a mask and a control image, base64-encoded (x 4/3), fits.
MAX_BODY = 50 * 1024 * 1024


@dataclass(frozen=True)
class Account:
    user: str
    password: str

    def __repr__(self) -> str:  # never print a password, even in a traceback's locals
        return f"Account(user={self.user!r}, password=***)"


def parse_accounts(text: str) -> tuple[Account, ...]:
    """`USER:PASS[,USER:PASS...]` as A1111's `--api-auth` takes it; a ConfigError that names the
    entry's position (never its password) for a malformed one."""
    accounts = []
    for number, item in enumerate(text.split(","), 1):
        user, colon, password = item.strip().partition(":")
        if not colon or not user or not password:
            raise ConfigError(
                f"--api-auth entry {number} is not USER:PASS (a user name, a colon, a password); "
                "give e.g. --api-auth alice:s3cret,bob:other."
            )
        accounts.append(Account(user, password))
    return tuple(accounts)


def _authorized(header: str, accounts: Sequence[Account]) -> bool:
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    scheme = scheme.lower()
    if scheme == "basic":
        try:
            user, colon, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if not colon:
            return False
        matches = [
            hmac.compare_digest(user.encode(), a.user.encode())
            & hmac.compare_digest(password.encode(), a.password.encode())
            for a in accounts
        ]
    elif scheme == "bearer":
        matches = [hmac.compare_digest(value.encode(), a.password.encode()) for a in accounts]
    else:
        return False
    return any(matches)


class Guard:
    """The ASGI middleware: credentials (when any are set), then the body cap."""

    def __init__(
        self,
        app: ASGIApp,
        accounts: Sequence[Account] = (),
        max_body: int = MAX_BODY,
        public: Callable[[str, str], bool] | None = None,
    ):
        """`public(path, query)`: whether a GET may go without credentials (an image URL the
        server signed for the client that asked for it)."""
        self.app = app
        self.accounts = tuple(accounts)
        self.max_body = max_body
        self.public = public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if (
            self.accounts
            and not _authorized(headers.get("authorization", ""), self.accounts)
            and not (
                self.public is not None
                and scope["method"] in ("GET", "HEAD")
                and self.public(scope["path"], scope.get("query_string", b"").decode("latin-1"))
            )
        ):
            await _reply(
                send,
                401,
                scope["path"],
                "Authentication required: HTTP Basic credentials or `Authorization: Bearer "
                "<password>` for a user of --api-auth.",
                {"www-authenticate": 'Basic realm="series-studio"'},
            )
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await _reply(send, 413, scope["path"], self._too_large())
            return
        if not length.isdigit() and scope["method"] not in ("GET", "HEAD"):
            # a streamed body: read it here (the app would read it all anyway), so that a body
            # over the cap is refused before the app sees any of it
            chunks, size, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                more = message.get("more_body", False)
                if size > self.max_body:
                    await _reply(send, 413, scope["path"], self._too_large())
                    return
            body = b"".join(chunks)
            sent = False

            async def replay() -> Message:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    def _too_large(self) -> str:
        return f"The request body is over {self.max_body / 1024 / 1024:g} MB; send smaller images."


def error_body(path: str, message: str, status: int) -> dict[str, Any]:
    """An error as the API at `path` shapes it: OpenAI's `{"error": {...}}` under /v1, A1111's
    `{"error", "detail"}` under /sdapi, `{"detail"}` elsewhere (FastAPI's)."""
    if path.startswith("/v1/"):
        kind = {401: "authentication_error", 404: "not_found_error"}.get(
            status, "invalid_request_error" if status < 500 else "server_error"
        )
        return {"error": {"message": message, "type": kind, "param": None, "code": None}}
    if path.startswith("/sdapi/"):
        names = {401: "Unauthorized", 404: "NotFound", 413: "PayloadTooLarge", 422: "BadRequest"}
        return {"error": names.get(status, "HTTPException"), "detail": message, "errors": message}
    return {"detail": message}


async def _reply(
    send: Send, status: int, path: str, message: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(error_body(path, message, status)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
