"""OpenAPI fragments for the routes: request bodies and answers with the seed's examples.

The routes read their bodies raw (see ``bodies.body``), so their request
schemas are declared here rather than inferred from parameters. Each route's
request body and answers are named at the end, for its decorator.
"""

from __future__ import annotations

from typing import Any

from services.api.errors import (
    ADMIN_OFF_TEXT,
    INVALID_FIELDS,
    INVALID_JSON,
    TOO_LARGE_TEXT,
    UNAUTHORIZED_TEXT,
)
from shared.contracts import NODE_ADDRESS_PATTERN, NODE_ID_PATTERN
from shared.errors import ALREADY_REGISTERED, NOT_FOUND

# The API checks node addresses with pydantic, whose regex engine reads \s as Unicode
# White_Space. A JSON Schema pattern is an ECMA-262 regex, where \s is another set (it
# has U+FEFF and lacks U+0085), so the document spells the set out to mean what the API does.
_WHITE_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NODE_ADDRESS = (NODE_ADDRESS_PATTERN.replace(r"\S", f"[^{_WHITE_SPACE}]")
                .replace(r"\s", _WHITE_SPACE))
MESSAGE = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}
PAIR = {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}
PAIRS = {"type": "array", "items": PAIR}
STRINGS = {"type": "array", "items": {"type": "string"}}
MODEL_NODES = {
    "type": "object",
    "properties": {"workers": PAIRS, "crypto_provider": PAIR},
    "required": ["workers", "crypto_provider"],
}
ENCRYPTED_MODEL = {
    "type": "object",  # FastAPI merges its own default type into a response schema without one
    "anyOf": [
        {"title": "api-text", "type": "object",
         "description": "The first hosting node by id as {id: address}, and its nodes.",
         "properties": {"nodes": MODEL_NODES}, "additionalProperties": {"type": "string"}},
        {"title": "by-node", "type": "object",
         "description": "Every hosting node as {id: {address, nodes}}.",
         "additionalProperties": {
             "type": "object",
             "properties": {"address": {"type": "string"}, "nodes": MODEL_NODES},
             "required": ["address", "nodes"]}},
    ]
}
_ALICE_NODES = {"workers": [["bob", "http://bob:5000"], ["carol", "http://carol:5000"]],
                "crypto_provider": ["dave", "http://dave:5000"]}
_CAROL_NODES = {"workers": [["alice", "http://alice:5000"], ["bob", "http://bob:5000"]],
                "crypto_provider": ["dave", "http://dave:5000"]}
ENCRYPTED_EXAMPLES = {
    "api-text": ("GRID_ENCRYPTED_SEARCH_FORMAT=api-text (default): the first host by id",
                 {"alice": "http://alice:5000", "nodes": _ALICE_NODES}),
    "by-node": ("GRID_ENCRYPTED_SEARCH_FORMAT=by-node: every host",
                {"alice": {"address": "http://alice:5000", "nodes": _ALICE_NODES},
                 "carol": {"address": "http://carol:5000", "nodes": _CAROL_NODES}}),
    "none": ("No node hosts the model (either format)", {}),
}
NODE_FIELDS = {
    "type": "object",
    "properties": {
        # What the API accepts: an address is an http(s):// or ws(s):// URL.
        "node-id": {"type": "string", "pattern": NODE_ID_PATTERN},
        "node-address": {"type": "string", "pattern": NODE_ADDRESS, "maxLength": 2048},
    },
    "required": ["node-id", "node-address"],
}
MODEL_ID = {
    "type": "object",
    "properties": {"model_id": {"type": "string", "minLength": 1, "maxLength": 512}},
    "required": ["model_id"],
}
TAG_QUERY = {
    "type": "object",
    "properties": {
        "query": {
            "type": "array",
            "minItems": 1,
            "items": {"type": "string", "minLength": 1, "maxLength": 512},
        }
    },
    "required": ["query"],
}
STATUS = {
    "type": "object",
    "properties": {"status": {"type": "string"}, "reason": {"type": "string"}},
    "required": ["status"],
}
UNAVAILABLE = {
    "description": "The broker or a worker is down, or did not answer in time.",
    "content": {"application/json": {"schema": MESSAGE,
                                     "example": {"message": "No registry worker is running; "
                                                 "try again shortly."}}},
}
FORBIDDEN = {
    "description": "A node token used for another node's id.",
    "content": {"application/json": {"schema": MESSAGE, "example": {
        "message": "This token may not act for this node id."}}},
}
TOO_LARGE = {
    "description": "Body over the size cap.",
    "content": {"application/json": {"schema": MESSAGE,
                                     "example": {"message": TOO_LARGE_TEXT}}},
}
UNAUTHORIZED = {
    "description": "An admin token is configured (or secure mode is on) and the request "
                   "carries neither it nor a valid node token.",
    "content": {"application/json": {"schema": MESSAGE,
                                     "example": {"message": UNAUTHORIZED_TEXT}}},
}
READ_UNAUTHORIZED = {
    **UNAUTHORIZED,
    "description": "An admin token is configured, the read routes are closed "
                   "(GRID_AUTH_READ_ROUTES) and the request does not carry the token.",
}


def request_body(schema: dict, example: Any) -> dict:
    """``openapi_extra`` for a JSON request body."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": schema, "example": example}},
        }
    }


def answer(description: str, schema: dict, example: Any) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": schema, "example": example}}}


def answers(description: str, schema: dict, examples: dict[str, tuple[str, Any]]) -> dict:
    """An answer with named examples: ``{name: (summary, value)}``."""
    named = {name: {"summary": summary, "value": value}
             for name, (summary, value) in examples.items()}
    return {"description": description,
            "content": {"application/json": {"schema": schema, "examples": named}}}


def error(description: str, text: str) -> dict:
    return answer(description, MESSAGE, {"message": text})


# --- each route's request body and answers ----------------------------------

NODE_BODY = request_body(NODE_FIELDS, {"node-id": "alice", "node-address": "http://alice:5000"})
JOIN_RESPONSES = {
    200: error("Registered.", "Successfully Connected!"),
    400: error("Not JSON, or a field missing, empty or invalid.", INVALID_JSON),
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    409: error("The id is taken.", ALREADY_REGISTERED),
    413: TOO_LARGE,
    503: UNAVAILABLE,
}
DELETE_RESPONSES = {
    200: error("Deleted.", "Successfully Deleted!"),
    400: error("Not JSON, or a field missing, empty or invalid.", INVALID_JSON),
    401: UNAUTHORIZED,
    403: FORBIDDEN,
    404: error("No node with this id and address.", NOT_FOUND),
    413: TOO_LARGE,
    503: UNAVAILABLE,
}
CONNECTED_NODES_RESPONSES = {
    200: answer("Live node ids, sorted.",
                {"type": "object", "properties": {"grid-nodes": STRINGS},
                 "required": ["grid-nodes"]},
                {"grid-nodes": ["node1", "node2", "node3"]}),
    401: READ_UNAUTHORIZED,
    503: UNAVAILABLE,
}
ENCRYPTED_HOSTS_RESPONSES = {
    200: answer("[id, address] pairs.", PAIRS,
                [["node_id1", "node_address1"], ["node_id2", "node_address2"]]),
    401: READ_UNAUTHORIZED,
    503: UNAVAILABLE,
}
MODEL_HOSTS_RESPONSES = {
    200: answer("[id, address] pairs.", PAIRS, [["node_id1", "node_address1"]]),
    401: READ_UNAUTHORIZED,
    503: UNAVAILABLE,
}
_SEARCH_ERRORS = {
    400: error("Not JSON, or the field is missing or invalid.", INVALID_FIELDS),
    413: TOO_LARGE,
    503: UNAVAILABLE,
}
_NODE_PAIRS = answer("[id, address] pairs, sorted by id.", PAIRS,
                     [["alice", "http://alice:5000"]])
ENCRYPTED_MODEL_BODY = request_body(MODEL_ID, {"model_id": "convnet"})
SEARCH_ENCRYPTED_RESPONSES = {
    200: answers("The hosting nodes ({} when none does).", ENCRYPTED_MODEL, ENCRYPTED_EXAMPLES),
    **_SEARCH_ERRORS,
}
MODEL_BODY = request_body(MODEL_ID, {"model_id": "mnist-cnn"})
SEARCH_MODEL_RESPONSES = {200: _NODE_PAIRS, **_SEARCH_ERRORS}
MODELS_RESPONSES = {200: answer("Model ids, sorted.", STRINGS, ["mnist-cnn", "toy-linear"]),
                    503: UNAVAILABLE}
TAGS_RESPONSES = {200: answer("Tags, sorted.", STRINGS, ["#labels", "#mnist", "#train"]),
                  503: UNAVAILABLE}
TAG_QUERY_BODY = request_body(TAG_QUERY, {"query": ["#mnist", "#train"]})
SEARCH_TAGS_RESPONSES = {200: _NODE_PAIRS, **_SEARCH_ERRORS}

# --- the operator's routes (/admin) -----------------------------------------

_ADMIN_ERRORS = {
    400: error("Not JSON, or a field missing or invalid.", INVALID_FIELDS),
    401: UNAUTHORIZED,
    403: error("No admin token is configured.", ADMIN_OFF_TEXT),
    413: TOO_LARGE,
    503: UNAVAILABLE,
}
_CREDENTIALS = {"type": "object", "properties": {
    "node-id": {"type": "string"}, "amqp-url": {"type": "string"},
    "token": {"type": "string"}, "node-address": {"type": ["string", "null"]}},
    "required": ["node-id", "amqp-url", "token"]}
ENROLL_BODY = request_body(
    {"type": "object", "required": ["node-id"], "properties": {
        "node-id": NODE_FIELDS["properties"]["node-id"],
        "node-address": NODE_FIELDS["properties"]["node-address"],
        "bridged": {"type": "boolean"}}},
    {"node-id": "alice", "node-address": "http://alice:5000"})
ENROLL_RESPONSES = {
    200: answer("The node's credentials (shown only here).", _CREDENTIALS,
                {"node-id": "alice", "amqp-url": "amqp://alice:...@broker/",
                 "token": "...", "node-address": None}),
    **_ADMIN_ERRORS,
}
REVOKE_BODY = request_body({"type": "object", "required": ["node-id"],
                            "properties": {"node-id": {"type": "string"}}}, {"node-id": "alice"})
REVOKE_RESPONSES = {200: error("Revoked.", "Revoked."),
                    404: error("Not enrolled.", NOT_FOUND),
                    **_ADMIN_ERRORS}
ENROLLED_RESPONSES = {
    200: answer("Enrolled nodes, sorted by id.", {"type": "object"},
                {"nodes": [{"node_id": "alice", "bridged": False}]}),
    **_ADMIN_ERRORS,
}
BRIDGE_USER_BODY = request_body({"type": "object", "required": ["user"],
                                 "properties": {"user": {"type": "string"}}}, {"user": "bridge"})
BRIDGE_USER_RESPONSES = {
    200: answer("The bridge's broker URL.", _CREDENTIALS,
                {"node-id": "bridge", "amqp-url": "amqp://...", "token": ""}),
    **_ADMIN_ERRORS,
}
