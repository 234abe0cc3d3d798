"""Every gateway call as data: what to send and how to read the answer.

The sync and async clients share this module; each only sends a :class:`Call`
with its own httpx client and hands the response back to :func:`answer`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from services.client.errors import BY_STATUS, GatewayError, TransportError, UnexpectedAnswer
from services.client.models import (
    EncryptedHost,
    EncryptedModel,
    EncryptedPlacement,
    Names,
    NodeAddress,
    NodeCredentials,
    NodeMatches,
)

T = TypeVar("T")
Pair = tuple[str, str]
PAIRS = TypeAdapter(list[Pair])
STRINGS = TypeAdapter(list[str])
SMPC_HOST_CHUNK = 4  # per replica: 2 SMPC workers, 1 crypto provider, 1 host


@dataclass(frozen=True)
class Call(Generic[T]):
    method: str
    path: str
    body: dict[str, Any] | None
    read: Callable[[httpx.Response], T]


# --- the calls ------------------------------------------------------------------


def search(tags: tuple[str, ...]) -> Call[NodeMatches]:
    return Call("POST", "/search", {"query": list(tags)}, _matches)


def search_model(model_id: str) -> Call[NodeMatches]:
    return Call("POST", "/search-model", {"model_id": model_id}, _matches)


def search_encrypted_model(model_id: str) -> Call[EncryptedModel]:
    return Call("POST", "/search-encrypted-model", {"model_id": model_id}, _encrypted)


def available_models() -> Call[Names]:
    return Call("GET", "/search-available-models", None, _names)


def available_tags() -> Call[Names]:
    return Call("GET", "/search-available-tags", None, _names)


def connected_nodes() -> Call[tuple[str, ...]]:
    return Call("GET", "/connected-nodes", None, _node_ids)


def choose_model_host() -> Call[tuple[NodeAddress, ...]]:
    return Call("GET", "/choose-model-host", None, lambda r: _addresses(_body(r, PAIRS)))


def choose_encrypted_model_host() -> Call[tuple[EncryptedPlacement, ...]]:
    return Call("GET", "/choose-encrypted-model-host", None, _placements)


def join(node_id: str, address: str) -> Call[str]:
    return Call("POST", "/join", {"node-id": node_id, "node-address": address}, _message)


def delete(node_id: str, address: str) -> Call[str]:
    return Call("DELETE", "/delete-node", {"node-id": node_id, "node-address": address},
                _message)


def enroll(node_id: str, address: str | None, bridged: bool) -> Call[NodeCredentials]:
    body = {"node-id": node_id, "bridged": bridged}
    if address is not None:
        body["node-address"] = address
    return Call("POST", "/admin/enroll", body, _credentials)


def revoke(node_id: str) -> Call[str]:
    return Call("POST", "/admin/revoke", {"node-id": node_id}, _message)


# --- sending and answering --------------------------------------------------------


@contextlib.contextmanager
def transport_errors(call: Call, base_url: httpx.URL) -> Iterator[None]:
    """Turn httpx's timeouts and connection failures into :class:`TransportError`."""
    where = f"{call.method} {base_url.join(call.path)}"
    try:
        yield
    except httpx.TimeoutException:
        raise TransportError(f"{where}: no answer within the timeout") from None
    except httpx.RequestError as exc:  # refused, reset, bad protocol, undecodable body
        raise TransportError(f"{where}: {exc or type(exc).__name__}") from None


def answer(call: Call[T], response: httpx.Response) -> T:
    """The call's result, or the gateway's refusal as a :class:`GatewayError`."""
    if response.status_code != 200:
        kind = BY_STATUS.get(response.status_code, GatewayError)
        raise kind(_error_message(response), response.status_code)
    return call.read(response)


def _error_message(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError):
        body = response.json()
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return body["message"]
    return response.text.strip()[:200] or response.reason_phrase


# --- reading answers --------------------------------------------------------------


def _unexpected(response: httpx.Response) -> UnexpectedAnswer:
    return UnexpectedAnswer(f"{response.request.url.path} answered an unexpected body: "
                            f"{response.text[:200]!r}", response.status_code)


def _body(response: httpx.Response, shape: TypeAdapter[T]) -> T:
    try:
        return shape.validate_json(response.content)
    except ValidationError:
        raise _unexpected(response) from None


def _counts(response: httpx.Response) -> dict[str, int | None]:
    def header(name: str) -> int | None:
        value = response.headers.get(name, "")
        return int(value) if value.isdigit() else None

    return {"asked": header("x-grid-nodes-asked"), "answered": header("x-grid-nodes-answered")}


def _addresses(pairs: list[Pair]) -> tuple[NodeAddress, ...]:
    return tuple(NodeAddress(node_id, address) for node_id, address in pairs)


def _matches(response: httpx.Response) -> NodeMatches:
    return NodeMatches(**_counts(response), nodes=_addresses(_body(response, PAIRS)))


def _names(response: httpx.Response) -> Names:
    return Names(**_counts(response), names=tuple(_body(response, STRINGS)))


class _NodeList(BaseModel):
    grid_nodes: list[str] = Field(alias="grid-nodes")


class _Message(BaseModel):
    message: str


class _Credentials(BaseModel):
    node_id: str = Field(alias="node-id")
    amqp_url: str = Field(alias="amqp-url")
    token: str
    node_address: str | None = Field(default=None, alias="node-address")


NODE_LIST = TypeAdapter(_NodeList)
MESSAGE = TypeAdapter(_Message)


def _node_ids(response: httpx.Response) -> tuple[str, ...]:
    return tuple(_body(response, NODE_LIST).grid_nodes)


def _message(response: httpx.Response) -> str:
    return _body(response, MESSAGE).message


def _credentials(response: httpx.Response) -> NodeCredentials:
    given = _body(response, TypeAdapter(_Credentials))
    return NodeCredentials(given.node_id, given.amqp_url, given.token, given.node_address)


def _placements(response: httpx.Response) -> tuple[EncryptedPlacement, ...]:
    nodes = _addresses(_body(response, PAIRS))
    if len(nodes) % SMPC_HOST_CHUNK:
        raise UnexpectedAnswer(f"{len(nodes)} hosts is not a multiple of {SMPC_HOST_CHUNK}",
                               response.status_code)
    return tuple(EncryptedPlacement(workers=(nodes[i], nodes[i + 1]), crypto_provider=nodes[i + 2],
                                    host=nodes[i + 3])
                 for i in range(0, len(nodes), SMPC_HOST_CHUNK))


# The two shapes of /search-encrypted-model (GRID_ENCRYPTED_SEARCH_FORMAT on the gateway).


class _Shares(BaseModel):
    workers: list[Pair]
    crypto_provider: Pair


class _ByNodeEntry(BaseModel):
    address: str
    nodes: _Shares


BY_NODE = TypeAdapter(dict[str, _ByNodeEntry])  # {id: {"address", "nodes"}} per host
API_TEXT = TypeAdapter(dict[str, str | _Shares])  # {id: address, "nodes": shares}


def _encrypted_host(node_id: str, address: str, shares: _Shares) -> EncryptedHost:
    return EncryptedHost(host=NodeAddress(node_id, address), workers=_addresses(shares.workers),
                         crypto_provider=NodeAddress(*shares.crypto_provider))


def _encrypted(response: httpx.Response) -> EncryptedModel:
    counts = _counts(response)
    with contextlib.suppress(ValidationError):
        entries = BY_NODE.validate_json(response.content)
        hosts = (_encrypted_host(node_id, entry.address, entry.nodes)
                 for node_id, entry in sorted(entries.items()))
        return EncryptedModel(**counts, hosts=tuple(hosts))
    body = _body(response, API_TEXT)
    shares = body.pop("nodes", None)
    hosts = [(node_id, address) for node_id, address in body.items() if isinstance(address, str)]
    if not isinstance(shares, _Shares) or len(body) != 1 or len(hosts) != 1:
        raise _unexpected(response)
    (node_id, address), = hosts
    return EncryptedModel(**counts, hosts=(_encrypted_host(node_id, address, shares),))
