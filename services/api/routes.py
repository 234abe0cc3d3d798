"""The Grid Gateway REST API: registry routes and search routes.

Each route validates its input, makes one request to a worker over the bus
and maps the reply to the seed API's status codes and bodies.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from services.api import encrypted
from services.api import openapi as doc
from services.api.bodies import Joining, Leaving, ModelQuery, TagQuery, body
from services.api.credentials import bearer, is_admin, node_credential, unauthorized
from services.api.errors import ApiError, JsonResponse
from services.api.gateway import Gateway
from shared.contracts import (
    CHOOSE_HOSTS,
    DELETE,
    JOIN,
    LIST_NODES,
    ChooseHostsRequest,
    DeleteRequest,
    Done,
    HostChoice,
    JoinRequest,
    ListRequest,
    NodeList,
    NodeQuery,
    QueryOp,
    SearchResult,
)
from shared.errors import ALREADY_REGISTERED, Conflict, NotFound
from shared.settings import ApiSettings

# Dependencies are coroutines: FastAPI runs a plain ``def`` dependency in a thread
# pool, a thread hop per request that cost the API about a third of its CPU.


async def get_gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def _check_token(request: Request, settings: ApiSettings) -> None:
    """Constant-time bearer token check; the token itself is never logged."""
    if settings.admin_token is not None and not is_admin(bearer(request), settings):
        raise unauthorized()


async def require_admin(request: Request) -> None:
    _check_token(request, get_settings(request))


async def require_writer(request: Request) -> str | None:
    """Who may join or delete: the admin token (None: any id), or a node token (its hash).

    A node token is checked by the registry against the node id of the body
    (401 unknown or revoked, 403 another node's). Open when no token is
    configured and secure mode is off.
    """
    settings = get_settings(request)
    if settings.admin_token is None and not settings.node_auth:
        return None
    return node_credential(request, settings)


WriterDep = Annotated[str | None, Depends(require_writer)]


async def require_reader(request: Request) -> None:
    settings = get_settings(request)
    if settings.auth_read_routes:
        _check_token(request, settings)


registry = APIRouter(tags=["registry"])
search = APIRouter(tags=["search"], dependencies=[Depends(require_reader)],
                   responses={401: doc.READ_UNAUTHORIZED})
write_guard = [Depends(require_admin)]
read_guard = [Depends(require_reader)]


# --- registry ---------------------------------------------------------------


@registry.post("/join", summary="Register a new grid node.",
               openapi_extra=doc.NODE_BODY, responses=doc.JOIN_RESPONSES)
async def join(gateway: GatewayDep, credential: WriterDep,
               fields: Annotated[Joining, body(Joining)]) -> JsonResponse:
    command = JoinRequest(node_id=fields.node_id, node_address=fields.node_address,
                          request_id=uuid.uuid4().hex, token_hash=credential)
    try:
        await gateway.registry(JOIN, command, Done)
    except Conflict:  # a restarted node carries on: it hears the cadence too
        raise ApiError(409, ALREADY_REGISTERED, headers=gateway.cadence_headers) from None
    gateway.membership.joined_here(command.node_id, command.node_address)
    return JsonResponse({"message": "Successfully Connected!"},
                        headers=gateway.cadence_headers)


@registry.delete("/delete-node",
                 summary="Remove a registered grid node (id and address must both match).",
                 openapi_extra=doc.NODE_BODY, responses=doc.DELETE_RESPONSES)
async def delete_node(gateway: GatewayDep, credential: WriterDep,
                      fields: Annotated[Leaving, body(Leaving)]) -> JsonResponse:
    try:
        command = DeleteRequest(node_id=fields.node_id, node_address=fields.node_address,
                                token_hash=credential)
    except ValidationError:  # an id no node could have registered with
        raise NotFound() from None
    await gateway.registry(DELETE, command, Done)
    gateway.membership.left_here(command.node_id)
    return JsonResponse({"message": "Successfully Deleted!"})


@registry.get(
    "/connected-nodes",
    summary="Ids of the live grid nodes.",
    dependencies=read_guard,
    responses=doc.CONNECTED_NODES_RESPONSES,
)
async def connected_nodes(gateway: GatewayDep) -> Response:
    if gateway.live.ready:  # from this process's view: no request to the registry
        gateway.check_registry()
        return Response(gateway.live.connected_body(), media_type="application/json")
    nodes = await gateway.registry(LIST_NODES, ListRequest(), NodeList)
    return JsonResponse({"grid-nodes": [node.node_id for node in nodes.nodes]})


async def _choose(gateway: Gateway, encrypted: bool) -> JsonResponse:
    if gateway.live.ready:  # from this process's view: no request to the registry
        gateway.check_registry()
        return JsonResponse([list(pair) for pair in gateway.live.choose(encrypted)])
    choice = await gateway.registry(CHOOSE_HOSTS, ChooseHostsRequest(encrypted=encrypted),
                                    HostChoice)
    return JsonResponse([list(pair) for pair in choice.hosts])


@registry.get(
    "/choose-encrypted-model-host",
    summary="4 x N_REPLICA distinct live nodes at random, or [] when there are fewer.",
    dependencies=read_guard,
    responses=doc.ENCRYPTED_HOSTS_RESPONSES,
)
async def choose_encrypted_model_host(gateway: GatewayDep) -> JsonResponse:
    return await _choose(gateway, encrypted=True)


@registry.get(
    "/choose-model-host",
    summary="N_REPLICA distinct live nodes at random (fewer when fewer exist).",
    dependencies=read_guard,
    responses=doc.MODEL_HOSTS_RESPONSES,
)
async def choose_model_host(gateway: GatewayDep) -> JsonResponse:
    return await _choose(gateway, encrypted=False)


# --- search -----------------------------------------------------------------


def searched(result: SearchResult, content: Any) -> JsonResponse:
    """A search answer with the nodes asked / answered / queried and cache headers."""
    queried = result.asked if result.queried is None else result.queried
    return JsonResponse(content, headers={"X-Grid-Nodes-Asked": str(result.asked),
                                          "X-Grid-Nodes-Answered": str(result.answered),
                                          "X-Grid-Nodes-Queried": str(queried),
                                          "X-Grid-Cache": "hit" if result.cached else "miss"})


async def _hosts(gateway: Gateway, op: QueryOp, model_id: str, route: str) -> SearchResult:
    return await gateway.search(NodeQuery(op=op, model_id=model_id), route)


@search.post(
    "/search-encrypted-model",
    summary="Nodes hosting an encrypted model, with their SMPC workers and crypto provider.",
    description="The answer's shape is set by GRID_ENCRYPTED_SEARCH_FORMAT: `api-text` (default) "
                "gives the first hosting node by id as `{id: address}` beside its `nodes`; "
                "`by-node` gives every hosting node as `{id: {\"address\", \"nodes\"}}`, as the "
                "original gateway did. Both are `{}` when no node hosts the model.",
    openapi_extra=doc.ENCRYPTED_MODEL_BODY, responses=doc.SEARCH_ENCRYPTED_RESPONSES,
)
async def search_encrypted_model(request: Request, gateway: GatewayDep,
                                 fields: Annotated[ModelQuery, body(ModelQuery)]) -> JsonResponse:
    result = await _hosts(gateway, "encrypted_model", fields.model_id,
                          "/search-encrypted-model")
    shape = encrypted.SHAPES[get_settings(request).encrypted_search_format]
    return searched(result, shape(result))


@search.post("/search-model", summary="Nodes hosting a (non-encrypted) model.",
             openapi_extra=doc.MODEL_BODY, responses=doc.SEARCH_MODEL_RESPONSES)
async def search_model(gateway: GatewayDep,
                       fields: Annotated[ModelQuery, body(ModelQuery)]) -> JsonResponse:
    result = await _hosts(gateway, "has_model", fields.model_id, "/search-model")
    return searched(result, [list(pair) for pair in result.nodes])


@search.get("/search-available-models", summary="Every model id hosted by a live node.",
            responses=doc.MODELS_RESPONSES)
async def search_available_models(gateway: GatewayDep) -> JsonResponse:
    result = await gateway.search(NodeQuery(op="list_models"), "/search-available-models")
    return searched(result, result.names)


@search.get("/search-available-tags", summary="Every tensor tag held by a live node.",
            responses=doc.TAGS_RESPONSES)
async def search_available_tags(gateway: GatewayDep) -> JsonResponse:
    result = await gateway.search(NodeQuery(op="list_tags"), "/search-available-tags")
    return searched(result, result.names)


@search.post("/search", summary="Nodes holding a tensor that carries every tag of the query.",
             openapi_extra=doc.TAG_QUERY_BODY, responses=doc.SEARCH_TAGS_RESPONSES)
async def search_tags(gateway: GatewayDep,
                      fields: Annotated[TagQuery, body(TagQuery)]) -> JsonResponse:
    result = await gateway.search(NodeQuery(op="search_tags", tags=list(fields.query)),
                                  "/search")
    return searched(result, [list(pair) for pair in result.nodes])
