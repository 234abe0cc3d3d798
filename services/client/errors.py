"""The client's exceptions: the gateway's JSON ``message`` and the HTTP status, by kind."""

from __future__ import annotations


class GatewayError(Exception):
    """The gateway refused or failed a request; ``status`` is None when no answer came."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return self.message if self.status is None else f"{self.message} (HTTP {self.status})"


class BadRequest(GatewayError):
    """400: the gateway rejected the input (bad JSON, id, address, model id or tags)."""


class Unauthorized(GatewayError):
    """401: the route needs the admin token and the request did not carry the right one."""


class Forbidden(GatewayError):
    """403: the token may not do this (another node's id, or the admin routes are off)."""


class NotFound(GatewayError):
    """404: no node with this id and address (or an unknown route)."""


class Conflict(GatewayError):
    """409: the node id is registered already."""


class Unavailable(GatewayError):
    """503: the broker or a gateway worker is down or busy; try again shortly."""


class TransportError(GatewayError):
    """No answer: the connection was refused or broke, or the call timed out."""


class UnexpectedAnswer(GatewayError):
    """The server answered, but not with what the gateway answers (not a grid gateway?)."""


BY_STATUS: dict[int, type[GatewayError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
    503: Unavailable,
}
