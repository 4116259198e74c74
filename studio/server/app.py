"""The FastAPI application: the three APIs' routers behind the guard, and every error as a 4xx in
the shape its API's clients read (OpenAI's under /v1, A1111's under /sdapi/v1, FastAPI's
`{"detail": ...}` elsewhere), never a traceback.

    app = create_app(ServerState(load_settings()), parse_accounts("alice:s3cret"))
    uvicorn.run(app, host="127.0.0.1", port=7860)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from studio.core.errors import (
    CatalogError,
    ContentRefusedError,
    ImageInputError,
    ImagesUnavailableError,
    LLMError,
    ParameterError,
    RateLimitedError,
    RenderCancelledError,
    RenderError,
    StudioError,
)
from studio.core.version import __version__
from studio.server.auth import MAX_BODY, Account, Guard, error_body
from studio.server.state import ServerState

log = logging.getLogger("studio.server")


def status_of(error: StudioError) -> int:
    """The HTTP status of an expected failure: the client's mistake is 4xx, ours 5xx."""
    if isinstance(error, ParameterError | ImageInputError | ContentRefusedError):
        return 422
    if isinstance(error, RenderCancelledError):
        return 409
    if isinstance(error, RateLimitedError):
        return 429
    if isinstance(error, ImagesUnavailableError | LLMError):
        return 503
    if isinstance(error, RenderError | CatalogError):
        return 500  # the model or the catalog failed: not the request's fault
    return 422  # a setting, a name, a brief: the message says what to send instead


def _field(location: Sequence[Any]) -> str:
    parts = [str(part) for part in location if part not in ("body", "query", "path", "form")]
    return ".".join(parts)


def validation_message(error: RequestValidationError) -> str:
    """Pydantic's first complaint as one sentence that names the field: `steps`: Input should
    be a valid integer (got 'many')."""
    problems = error.errors()
    if not problems:
        return "The request is not valid."
    first = problems[0]
    if first.get("type") == "json_invalid":
        reason = (first.get("ctx") or {}).get("error", "")
        return f"The body is not valid JSON ({reason}); send a JSON object."
    field = _field(first.get("loc", ()))
    text = first.get("msg", "invalid")
    given = first.get("input")
    shown = "" if isinstance(given, dict | list) or given is None else f" (got {given!r:.60})"
    more = f"; {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    return f"`{field}`: {text}{shown}{more}." if field else f"{text}{more}."


def create_app(
    state: ServerState, accounts: Sequence[Account] = (), max_body: int = MAX_BODY
) -> Any:
    """The ASGI app: the FastAPI routes wrapped in the guard (credentials and the body cap)."""
    from studio.server import a1111, openai_images, series

    api = FastAPI(
        title="Series Art Studio",
        version=__version__,
        description=(
            "AUTOMATIC1111's `/sdapi/v1`, OpenAI's Images API under `/v1`, and the series' own "
            "endpoints under `/studio/v1`. Every image is made by the studio's one image service "
            "and kept in its catalog."
        ),
    )
    api.state.studio = state
    api.include_router(a1111.router)
    api.include_router(openai_images.router)
    api.include_router(series.router)

    def reply(request: Request, status: int, message: str) -> JSONResponse:
        path = request.url.path
        if status == 422 and path.startswith("/v1/"):  # OpenAI answers bad requests with 400
            status = 400
        return JSONResponse(error_body(path, message, status), status_code=status)

    @api.exception_handler(StudioError)
    async def studio_error(request: Request, error: StudioError) -> JSONResponse:
        status = status_of(error)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, error)
        return reply(request, status, str(error))

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        return reply(request, 422, validation_message(error))

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return reply(request, error.status_code, str(error.detail))

    @api.exception_handler(Exception)
    async def bug(request: Request, error: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return reply(
            request,
            500,
            f"The studio failed on this request ({type(error).__name__}); see its log.",
        )

    return Guard(
        api, accounts, max_body, public=lambda path, query: openai_images.signed(state, path, query)
    )
