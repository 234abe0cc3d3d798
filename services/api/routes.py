"""The Grid Gateway REST API: registry routes and search routes.

Each route validates its input, makes one request to a worker over the bus
and maps the reply to the seed API's status codes and bodies.
"""

from __future__ import annotations

import hmac
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import ValidationError

from services.api import encrypted
from services.api import openapi as doc
from services.api.credentials import node_credential
from services.api.errors import (
    ALREADY_REGISTERED,
    INVALID_FIELDS,
    INVALID_JSON,
    ApiError,
    JsonResponse,
)
from services.api.gateway import Gateway
from services.api.http import NotJson, read_json
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
    SearchResult,
)
from shared.errors import Conflict
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
    token = settings.admin_token
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise ApiError(401, "Missing or invalid bearer token.",
                       headers={"WWW-Authenticate": "Bearer"})


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


async def read_object(request: Request, invalid: str) -> dict[str, Any]:
    """The body as a JSON object, else a 400 with the route's seed message."""
    try:
        data = await read_json(request, get_settings(request).max_body_bytes)
    except NotJson:
        raise ApiError(400, invalid) from None
    if not isinstance(data, dict):
        raise ApiError(400, invalid)
    return data


# --- registry ---------------------------------------------------------------


@registry.post(
    "/join",
    summary="Register a new grid node.",
    openapi_extra=doc.request_body(
        doc.NODE_FIELDS, {"node-id": "alice", "node-address": "http://alice:5000"}),
    responses={
        200: doc.error("Registered.", "Successfully Connected!"),
        400: doc.error("Not JSON, or a field missing, empty or invalid.", INVALID_JSON),
        401: doc.UNAUTHORIZED,
        403: doc.FORBIDDEN,
        409: doc.error("The id is taken.", "This ID has already been registered."),
        413: doc.TOO_LARGE,
        503: doc.UNAVAILABLE,
    },
)
async def join(request: Request, gateway: GatewayDep, credential: WriterDep) -> JsonResponse:
    data = await read_object(request, INVALID_JSON)
    try:
        command = JoinRequest(node_id=data.get("node-id"), node_address=data.get("node-address"),
                              request_id=uuid.uuid4().hex, token_hash=credential)
    except ValidationError:
        raise ApiError(400, INVALID_JSON) from None
    try:
        await gateway.registry(JOIN, command, Done)
    except Conflict:  # a restarted node carries on: it hears the cadence too
        raise ApiError(409, ALREADY_REGISTERED, headers=gateway.cadence_headers) from None
    gateway.membership.joined_here(command.node_id, command.node_address)
    return JsonResponse({"message": "Successfully Connected!"},
                        headers=gateway.cadence_headers)


@registry.delete(
    "/delete-node",
    summary="Remove a registered grid node (id and address must both match).",
    openapi_extra=doc.request_body(
        doc.NODE_FIELDS, {"node-id": "alice", "node-address": "http://alice:5000"}),
    responses={
        200: doc.error("Deleted.", "Successfully Deleted!"),
        400: doc.error("Not JSON, or a field missing, empty or invalid.", INVALID_JSON),
        401: doc.UNAUTHORIZED,
        403: doc.FORBIDDEN,
        404: doc.error("No node with this id and address.",
                       "This ID was not found in connected nodes"),
        413: doc.TOO_LARGE,
        503: doc.UNAVAILABLE,
    },
)
async def delete_node(request: Request, gateway: GatewayDep,
                      credential: WriterDep) -> JsonResponse:
    data = await read_object(request, INVALID_JSON)
    node_id, address = data.get("node-id"), data.get("node-address")
    if not (isinstance(node_id, str) and node_id and isinstance(address, str) and address):
        raise ApiError(400, INVALID_JSON)
    try:
        command = DeleteRequest(node_id=node_id, node_address=address, token_hash=credential)
    except ValidationError:  # an id no node could have registered with
        raise ApiError(404, "This ID was not found in connected nodes") from None
    await gateway.registry(DELETE, command, Done)
    gateway.membership.left_here(command.node_id)
    return JsonResponse({"message": "Successfully Deleted!"})


@registry.get(
    "/connected-nodes",
    summary="Ids of the live grid nodes.",
    dependencies=read_guard,
    responses={
        200: doc.answer("Live node ids, sorted.",
                        {"type": "object", "properties": {"grid-nodes": doc.STRINGS},
                         "required": ["grid-nodes"]},
                        {"grid-nodes": ["node1", "node2", "node3"]}),
        401: doc.READ_UNAUTHORIZED,
        503: doc.UNAVAILABLE,
    },
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
    responses={200: doc.answer("[id, address] pairs.", doc.PAIRS,
                               [["node_id1", "node_address1"], ["node_id2", "node_address2"]]),
               401: doc.READ_UNAUTHORIZED,
               503: doc.UNAVAILABLE},
)
async def choose_encrypted_model_host(gateway: GatewayDep) -> JsonResponse:
    return await _choose(gateway, encrypted=True)


@registry.get(
    "/choose-model-host",
    summary="N_REPLICA distinct live nodes at random (fewer when fewer exist).",
    dependencies=read_guard,
    responses={200: doc.answer("[id, address] pairs.", doc.PAIRS,
                               [["node_id1", "node_address1"]]),
               401: doc.READ_UNAUTHORIZED,
               503: doc.UNAVAILABLE},
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


async def _query(request: Request, gateway: Gateway, op: str, field: str) -> SearchResult:
    data = await read_object(request, INVALID_FIELDS)
    try:
        if field == "model_id":
            query = NodeQuery(op=op, model_id=data.get("model_id"))
        else:
            query = NodeQuery(op=op, tags=data.get("query"))
    except ValidationError:
        raise ApiError(400, INVALID_FIELDS) from None
    return await gateway.search(query)


SEARCH_ERRORS = {
    400: doc.error("Not JSON, or the field is missing or invalid.", INVALID_FIELDS),
    413: doc.TOO_LARGE,
    503: doc.UNAVAILABLE,
}


@search.post(
    "/search-encrypted-model",
    summary="Nodes hosting an encrypted model, with their SMPC workers and crypto provider.",
    description="The answer's shape is set by GRID_ENCRYPTED_SEARCH_FORMAT: `api-text` (default) "
                "gives the first hosting node by id as `{id: address}` beside its `nodes`; "
                "`by-node` gives every hosting node as `{id: {\"address\", \"nodes\"}}`, as the "
                "original gateway did. Both are `{}` when no node hosts the model.",
    openapi_extra=doc.request_body(doc.MODEL_ID, {"model_id": "convnet"}),
    responses={200: doc.answers("The hosting nodes ({} when none does).", doc.ENCRYPTED_MODEL,
                                doc.ENCRYPTED_EXAMPLES),
               **SEARCH_ERRORS},
)
async def search_encrypted_model(request: Request, gateway: GatewayDep) -> JsonResponse:
    result = await _query(request, gateway, "encrypted_model", "model_id")
    shape = encrypted.SHAPES[get_settings(request).encrypted_search_format]
    return searched(result, shape(result))


@search.post(
    "/search-model",
    summary="Nodes hosting a (non-encrypted) model.",
    openapi_extra=doc.request_body(doc.MODEL_ID, {"model_id": "mnist-cnn"}),
    responses={200: doc.answer("[id, address] pairs, sorted by id.", doc.PAIRS,
                               [["alice", "http://alice:5000"]]), **SEARCH_ERRORS},
)
async def search_model(request: Request, gateway: GatewayDep) -> JsonResponse:
    result = await _query(request, gateway, "has_model", "model_id")
    return searched(result, [list(pair) for pair in result.nodes])


@search.get(
    "/search-available-models",
    summary="Every model id hosted by a live node.",
    responses={200: doc.answer("Model ids, sorted.", doc.STRINGS, ["mnist-cnn", "toy-linear"]),
               503: doc.UNAVAILABLE},
)
async def search_available_models(gateway: GatewayDep) -> JsonResponse:
    result = await gateway.search(NodeQuery(op="list_models"))
    return searched(result, result.names)


@search.get(
    "/search-available-tags",
    summary="Every tensor tag held by a live node.",
    responses={200: doc.answer("Tags, sorted.", doc.STRINGS, ["#labels", "#mnist", "#train"]),
               503: doc.UNAVAILABLE},
)
async def search_available_tags(gateway: GatewayDep) -> JsonResponse:
    result = await gateway.search(NodeQuery(op="list_tags"))
    return searched(result, result.names)


@search.post(
    "/search",
    summary="Nodes holding a tensor that carries every tag of the query.",
    openapi_extra=doc.request_body(doc.TAG_QUERY, {"query": ["#mnist", "#train"]}),
    responses={200: doc.answer("[id, address] pairs, sorted by id.", doc.PAIRS,
                               [["alice", "http://alice:5000"]]), **SEARCH_ERRORS},
)
async def search_tags(request: Request, gateway: GatewayDep) -> JsonResponse:
    result = await _query(request, gateway, "search_tags", "query")
    return searched(result, [list(pair) for pair in result.nodes])
