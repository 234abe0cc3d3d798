"""A Python client for the grid gateway's HTTP API (``GridClient``, ``AsyncGridClient``).

::

    from services.client import GridClient

    with GridClient("http://127.0.0.1:8000") as grid:
        for node in grid.search("#mnist", "#train"):
            print(node.id, node.address)

``python -m services.client --help`` is a small command line on it.
"""

from services.client.client import AsyncGridClient, GridClient
from services.client.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    TransportError,
    Unauthorized,
    Unavailable,
    UnexpectedAnswer,
)
from services.client.models import (
    EncryptedHost,
    EncryptedModel,
    EncryptedPlacement,
    Names,
    NodeAddress,
    NodeCredentials,
    NodeMatches,
)

__all__ = [
    "AsyncGridClient", "GridClient",
    "BadRequest", "Conflict", "Forbidden", "GatewayError", "NotFound", "TransportError",
    "Unauthorized", "Unavailable", "UnexpectedAnswer",
    "EncryptedHost", "EncryptedModel", "EncryptedPlacement", "NodeAddress", "NodeCredentials",
    "NodeMatches", "Names",
]
