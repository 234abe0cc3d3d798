"""OpenAPI fragments for the routes: request bodies and answers with the seed's examples.

The routes read their bodies raw (see ``http.read_json``), so their request
schemas are declared here rather than inferred from parameters.
"""

from __future__ import annotations

from typing import Any

MESSAGE = {
    "type": "object",
    "properties": {"message": {"type": "string"}},
    "required": ["message"],
}
PAIR = {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2}
PAIRS = {"type": "array", "items": PAIR}
STRINGS = {"type": "array", "items": {"type": "string"}}
ENCRYPTED_MODEL = {
    "type": "object",
    "properties": {
        "nodes": {
            "type": "object",
            "properties": {"workers": PAIRS, "crypto_provider": PAIR},
            "required": ["workers", "crypto_provider"],
        }
    },
    "additionalProperties": {},
}
NODE_FIELDS = {
    "type": "object",
    "properties": {
        "node-id": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"},
        "node-address": {"type": "string", "format": "uri", "maxLength": 2048},
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
UNAVAILABLE = {
    "description": "The broker or a worker is down, or did not answer in time.",
    "content": {"application/json": {"schema": MESSAGE,
                                     "example": {"message": "No registry worker is running; "
                                                 "try again shortly."}}},
}
TOO_LARGE = {
    "description": "Body over the size cap.",
    "content": {"application/json": {"schema": MESSAGE,
                                     "example": {"message": "Request body too large."}}},
}
UNAUTHORIZED = {
    "description": "An admin token is configured and the request does not carry it.",
    "content": {"application/json": {"schema": MESSAGE,
                                     "example": {"message": "Missing or invalid bearer token."}}},
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


def error(description: str, text: str) -> dict:
    return answer(description, MESSAGE, {"message": text})
