"""Serving the API with uvicorn: one process, or ``GRID_API_WORKERS`` processes on one port.

With several workers, uvicorn's supervisor binds the port once and starts
that many processes sharing the listening socket; it restarts any that dies.
Each process builds its own app from the environment (:func:`app_from_environment`),
hence its own broker connection and its own reply queue: a request is
answered by the process that received it, and a process that dies loses
only the requests it was holding.
"""

from __future__ import annotations

import os

import orjson
import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from services.api.app import create_app
from shared.logs import setup_logging
from shared.settings import ApiSettings

PROCESS_HEADER = b"x-grid-api-pid"


class JsonErrorsHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing a request it cannot parse with a JSON body.

    Such a request (a malformed Content-Length or header, a bad chunk, an unknown
    method) never reaches the app, and uvicorn answers it itself in plain text; the
    API answers every error as JSON ``{"message": ...}``.
    """

    def send_400_response(self, msg: str) -> None:
        body = orjson.dumps({"message": "Invalid HTTP request."})
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\n",
                 b"content-length: %d\r\n" % len(body),
                 b"connection: close\r\n\r\n"]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class ProcessHeader:
    """ASGI middleware: every response says which API process answered (``X-Grid-Api-Pid``)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.value = str(os.getpid()).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_pid(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (PROCESS_HEADER, self.value)]
            await send(message)

        await self.app(scope, receive, send_with_pid)


def app_from_environment() -> ASGIApp:
    """The app of one API process, from its environment (uvicorn calls it in each worker)."""
    settings = ApiSettings()
    setup_logging(settings.log_level, settings.log_format)
    return ProcessHeader(create_app(settings))


def serve(settings: ApiSettings) -> None:
    """Run uvicorn with ``settings.api_workers`` processes on ``api_host:api_port``."""
    uvicorn.run(
        f"{__name__}:app_from_environment",
        factory=True,
        workers=settings.api_workers,
        host=settings.api_host,
        port=settings.api_port,
        loop="uvloop",
        http=JsonErrorsHttpToolsProtocol,
        log_config=None,
        access_log=False,
        # On SIGTERM uvicorn stops accepting, then drains in-flight requests.
        timeout_graceful_shutdown=10,
    )
