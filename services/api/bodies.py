"""The routes' request bodies, typed, and the one dependency that reads them.

A route names its body as ``Annotated[Model, body(Model)]``. The raw body is
parsed as JSON whatever the Content-Type (see ``http.read_json``): over
GRID_MAX_BODY_BYTES it is a 413; not JSON, not an object, or not fitting the
model, it is a 400 with the route's seed message (``Model.invalid``). Unknown
fields are ignored, as the original gateway did. The HTTP names (``node-id``)
are aliases; the routes build the bus contracts from the checked fields.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.api.errors import INVALID_FIELDS, INVALID_JSON, ApiError
from services.api.http import NotJson, read_json
from shared.contracts import ModelId, NodeAddress, NodeId, Tag


class Body(BaseModel):
    """A request body; ``invalid`` is the route's 400 message."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    invalid: ClassVar[str] = INVALID_JSON


B = TypeVar("B", bound=Body)


def body(model: type[B]) -> Any:
    """The dependency that reads a ``model`` from the request body, else the seed's 400."""

    async def parse(request: Request) -> B:
        limit = request.app.state.settings.max_body_bytes
        try:
            return model.model_validate(await read_json(request, limit))
        except (NotJson, ValidationError):
            raise ApiError(400, model.invalid) from None

    return Depends(parse)


class Joining(Body):
    """POST /join: an id and an address a node may register with."""

    node_id: NodeId = Field(alias="node-id")
    node_address: NodeAddress = Field(alias="node-address")


class Leaving(Body):
    """DELETE /delete-node: any non-empty id and address (an id no node has is a 404)."""

    node_id: str = Field(alias="node-id", min_length=1)
    node_address: str = Field(alias="node-address", min_length=1)


class ModelQuery(Body):
    """POST /search-model and /search-encrypted-model."""

    invalid = INVALID_FIELDS
    model_id: ModelId


class TagQuery(Body):
    """POST /search: at least one tag."""

    invalid = INVALID_FIELDS
    query: list[Tag] = Field(min_length=1)


class Enrolling(Body):
    """POST /admin/enroll."""

    invalid = INVALID_FIELDS
    node_id: NodeId = Field(alias="node-id")
    node_address: NodeAddress | None = Field(default=None, alias="node-address")
    bridged: bool = False


class Revoking(Body):
    """POST /admin/revoke."""

    invalid = INVALID_FIELDS
    node_id: NodeId = Field(alias="node-id")


class BridgeUser(Body):
    """POST /admin/bridge-user."""

    invalid = INVALID_FIELDS
    user: NodeId
