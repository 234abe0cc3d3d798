"""How each node query maps to the original node's HTTP routes, and back to a NodeReply.

The calls are the 2019 PyGrid gateway's (``gateway/app/main/routes.py`` in
OpenMined/PyGrid), and the answers the node's routes (``app/websocket/app/main/routes.py``
and ``model_manager.list_models``):

- list_models, has_model: ``GET <addr>/models/``, answered
  ``{"success": true, "models": [...]}`` (only ``models`` is read; missing: none);
- list_tags: ``GET <addr>/dataset-tags``, answered ``["#tag", ...]``;
- search_tags: ``POST <addr>/search`` with ``{"query": [...]}``, answered ``{"content": bool}``;
- encrypted_model: ``POST <addr>/search-encrypted-models`` with ``{"model_id": ...}``, answered
  ``{"workers": [[id, addr], ...], "crypto_provider": [id, addr]}`` when hosted, else a 404.

Anything else in a 2xx answer (not JSON, another shape) is :class:`Malformed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from pydantic import TypeAdapter, ValidationError

from shared.contracts import EncryptedModelHosts, NodeQuery, NodeReply

_NAMES = TypeAdapter(list[str])


class Malformed(ValueError):
    """The node answered, but not with the shape its route promises."""


@dataclass(frozen=True)
class NodeCall:
    """One HTTP request to a node: method, path below the node's address, JSON body."""

    method: str
    path: str
    body: dict | None = None

    def url(self, address: str) -> str:
        return address.rstrip("/") + self.path

    @cached_property
    def content(self) -> bytes | None:
        """The body as sent, encoded once however many nodes it goes to."""
        return None if self.body is None else orjson.dumps(self.body)


MODELS = NodeCall("GET", "/models/")
TAGS = NodeCall("GET", "/dataset-tags")


def call_for(query: NodeQuery) -> NodeCall:
    """The request that answers ``query``, as the original gateway made it."""
    if query.op in ("list_models", "has_model"):
        return MODELS
    if query.op == "list_tags":
        return TAGS
    if query.op == "search_tags":
        return NodeCall("POST", "/search", {"query": list(query.tags or ())})
    return NodeCall("POST", "/search-encrypted-models", {"model_id": query.model_id})


def reply_for(node_id: str, query: NodeQuery, status: int, body: bytes) -> NodeReply:
    """The NodeReply an AMQP node would have sent, from the HTTP answer (status, body)."""
    if query.op == "encrypted_model" and status == 404:
        return NodeReply(node_id=node_id)  # the original node's "Model ID not found!"
    payload = _json(body)
    if query.op == "encrypted_model":
        return NodeReply(node_id=node_id, encrypted=_encrypted(payload))
    if query.op == "list_tags":
        return NodeReply(node_id=node_id, tags=_names(payload))
    if query.op == "search_tags":
        return NodeReply(node_id=node_id, match=_content(payload))
    models = model_ids(payload)
    if query.op == "has_model":
        return NodeReply(node_id=node_id, match=query.model_id in models)
    return NodeReply(node_id=node_id, models=models)


def model_ids(payload: Any) -> list[str]:
    """``GET /models/``: an object whose ``models`` (missing: none) is a list of strings."""
    if not isinstance(payload, dict):
        raise Malformed("/models/ did not answer an object")
    return _names(payload.get("models", []))


def answered_ok(status: int, query: NodeQuery) -> bool:
    """Whether an HTTP status is an answer: 2xx, or 404 ("not hosted") for encrypted models."""
    return 200 <= status < 300 or (status == 404 and query.op == "encrypted_model")


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise Malformed("the answer is not JSON") from None


def _names(value: Any) -> list[str]:
    try:
        return _NAMES.validate_python(value, strict=True)
    except ValidationError:
        raise Malformed("not a list of strings") from None


def _content(payload: Any) -> bool:
    if not isinstance(payload, dict) or not isinstance(payload.get("content"), bool):
        raise Malformed("/search did not answer {\"content\": bool}")
    return payload["content"]


def _encrypted(payload: Any) -> EncryptedModelHosts | None:
    if not isinstance(payload, dict):
        raise Malformed("/search-encrypted-models did not answer an object")
    # The original gateway counted a node as a host when both keys were present.
    if not {"workers", "crypto_provider"} <= payload.keys():
        return None
    try:
        return EncryptedModelHosts.model_validate(payload)  # other keys are ignored
    except ValidationError:
        raise Malformed("workers or crypto_provider of the wrong shape") from None
