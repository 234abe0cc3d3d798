"""The few errors that cross the bus, and how they travel as data.

A worker answers ``{"error": {"type": ..., "message": ...}}``; the caller
rebuilds the known types with :func:`from_wire` and maps them to HTTP.
"""

from __future__ import annotations

# The seed API's two registry messages, sent to clients word for word.
ALREADY_REGISTERED = "This ID has already been registered."
NOT_FOUND = "This ID was not found in connected nodes"


class GridError(Exception):
    """Base of every error the gateway raises on purpose."""

    type = "error"
    # The message when none is given; else the class docstring.
    default = ""

    def __init__(self, message: str = "") -> None:
        self.message = message or self.default or (self.__class__.__doc__ or self.type).strip()
        super().__init__(self.message)

    def to_wire(self) -> dict:
        return {"type": self.type, "message": self.message}


class InvalidRequest(GridError):
    """The request does not match its contract."""

    type = "invalid_request"


class Conflict(GridError):
    """The node id is taken."""

    type = "conflict"
    default = ALREADY_REGISTERED


class NotFound(GridError):
    """No node has this id (and address)."""

    type = "not_found"
    default = NOT_FOUND


class StoreUnavailable(GridError):
    """The node store cannot be reached."""

    type = "store_unavailable"


class BusUnavailable(GridError):
    """The message broker cannot be reached."""

    type = "bus_unavailable"


class NoConsumer(GridError):
    """No worker is consuming the queue."""

    type = "no_consumer"


class DeadlineExceeded(GridError):
    """The worker did not answer in time."""

    type = "deadline_exceeded"


class Overloaded(GridError):
    """The search worker cannot start this search in time: too many node queries in flight."""

    type = "overloaded"


class Unauthorized(GridError):
    """Missing or invalid bearer token."""

    type = "unauthorized"


class Forbidden(GridError):
    """This token may not act for this node id."""

    type = "forbidden"


class BrokerAdminUnavailable(GridError):
    """The broker's management API cannot be reached, or refused the change."""

    type = "broker_admin_unavailable"


class RemoteError(GridError):
    """A worker failed in an unexpected way."""

    type = "remote_error"


_KNOWN = {
    cls.type: cls
    for cls in (
        InvalidRequest,
        Conflict,
        NotFound,
        StoreUnavailable,
        BusUnavailable,
        NoConsumer,
        DeadlineExceeded,
        Overloaded,
        Unauthorized,
        Forbidden,
        BrokerAdminUnavailable,
    )
}


def from_wire(error: object) -> GridError:
    """Rebuild a known error from its wire form; anything else is a RemoteError."""
    if not isinstance(error, dict):
        return RemoteError("malformed error reply")
    cls = _KNOWN.get(str(error.get("type")), RemoteError)
    return cls(str(error.get("message", "")))
