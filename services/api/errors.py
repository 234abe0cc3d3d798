"""Every error the API answers with, as JSON ``{"message": ...}``; never a traceback."""

from __future__ import annotations

import logging

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from shared.errors import (
    ALREADY_REGISTERED,
    NOT_FOUND,
    BrokerAdminUnavailable,
    BusUnavailable,
    Conflict,
    DeadlineExceeded,
    Forbidden,
    GridError,
    InvalidRequest,
    NoConsumer,
    NotFound,
    Overloaded,
    StoreUnavailable,
    Unauthorized,
)

log = logging.getLogger(__name__)


class JsonResponse(Response):
    """A JSON response encoded with orjson."""

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


# The seed API's exact bodies (the registry's two are in shared.errors).
INVALID_JSON = "Invalid json."
INVALID_FIELDS = "Invalid json fields."
TOO_LARGE_TEXT = "Request body too large."
UNAUTHORIZED_TEXT = "Missing or invalid bearer token."
ADMIN_OFF_TEXT = "The admin routes are off: the gateway has no GRID_ADMIN_TOKEN."

_STATUS = {
    Conflict: 409,
    NotFound: 404,
    InvalidRequest: 400,
    StoreUnavailable: 503,
    BusUnavailable: 503,
    NoConsumer: 503,
    DeadlineExceeded: 503,
    Overloaded: 503,
    Forbidden: 403,
    BrokerAdminUnavailable: 503,
}
_FIXED_MESSAGE = {
    Conflict: ALREADY_REGISTERED,
    NotFound: NOT_FOUND,
    StoreUnavailable: "The node store is unavailable; try again shortly.",
    DeadlineExceeded: "The gateway's workers did not answer in time; try again shortly.",
    Overloaded: "The gateway is busy with other searches; try again shortly.",
}


class ApiError(Exception):
    """An HTTP error with the body ``{"message": message}``."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        self.status = status
        self.message = message
        self.headers = headers


def message(status: int, text: str, headers: dict | None = None) -> JsonResponse:
    return JsonResponse({"message": text}, status_code=status, headers=headers)


async def _api_error(_: Request, exc: ApiError) -> JsonResponse:
    return message(exc.status, exc.message, exc.headers)


async def _grid_error(request: Request, exc: GridError) -> JsonResponse:
    """Map the errors that come back from the bus to HTTP."""
    if isinstance(exc, Unauthorized):  # a node token the registry does not know
        return message(401, UNAUTHORIZED_TEXT, {"WWW-Authenticate": "Bearer"})
    status = _STATUS.get(type(exc), 502)
    text = _FIXED_MESSAGE.get(type(exc), exc.message)
    if status == 502:
        text = "A gateway worker failed to process the request."
    if status >= 500:
        log.warning("request failed", extra={"path": request.url.path, "error": exc.message})
    return message(status, text)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JsonResponse:
    return message(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _validation_error(_: Request, exc: RequestValidationError) -> JsonResponse:
    return message(400, "Invalid request.")


async def _unexpected(request: Request, exc: Exception) -> JsonResponse:
    log.exception("unhandled error", extra={"path": request.url.path})
    return message(500, "Internal error.")


def install(app: FastAPI) -> None:
    """Register the handlers so that no error leaves the API as HTML or a traceback."""
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(GridError, _grid_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
