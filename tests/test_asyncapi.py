"""docs/asyncapi.yaml must describe the contracts in shared/contracts.py (no broker needed)."""

from __future__ import annotations

import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from shared import contracts
from shared.errors import (
    BrokerAdminUnavailable,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RemoteError,
    StoreUnavailable,
    Unauthorized,
)
from shared.topology import HEARTBEAT_KEY, Names, work_queue_arguments

DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "asyncapi.yaml"
DOC = yaml.safe_load(DOC_PATH.read_text(encoding="utf-8"))
SCHEMAS = DOC["components"]["schemas"]
MESSAGES = DOC["components"]["messages"]
NAMES = Names("{namespace}")

# Every message model; the first seven are the ones a node author relies on most.
MODELS = [
    contracts.NodeQuery, contracts.NodeReply, contracts.MembershipEvent, contracts.Heartbeat,
    contracts.JoinRequest, contracts.DeleteRequest, contracts.SearchRequest, contracts.SearchResult,
    contracts.Done, contracts.ListRequest, contracts.NodeRecord, contracts.NodeList,
    contracts.ChooseHostsRequest, contracts.HostChoice, contracts.EncryptedModelHosts,
    contracts.EncryptedHost, contracts.EnrollRequest, contracts.Enrolled,
    contracts.RevokeRequest, contracts.EnrolledNode, contracts.EnrolledList,
    contracts.BridgeUserRequest,
    contracts.NodeState, contracts.MembershipDelta,
    contracts.MembershipRequest, contracts.MembershipSnapshot,
]


def resolve(schema: dict, root: dict, prefix: str) -> dict:
    while "$ref" in schema:
        schema = root[schema["$ref"].removeprefix(prefix)]
    return schema


def json_types(schema: dict, root: dict, prefix: str) -> set[str]:
    """The JSON types a schema allows, through $ref, anyOf and oneOf."""
    schema = resolve(schema, root, prefix)
    for union in ("anyOf", "oneOf"):
        if union in schema:
            return set().union(*(json_types(s, root, prefix) for s in schema[union]))
    kind = schema["type"]
    return {kind} if isinstance(kind, str) else set(kind)


def test_every_contract_is_documented() -> None:
    defined = {
        obj for obj in vars(contracts).values()
        if isinstance(obj, type) and issubclass(obj, contracts.Contract)
        and obj is not contracts.Contract
    }
    assert defined == set(MODELS)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_schema_matches_model(model: type[BaseModel]) -> None:
    schema = SCHEMAS[model.__name__]
    assert schema["type"] == "object"
    documented = schema.get("properties", {})
    assert set(documented) == set(model.model_fields)
    required = {name for name, field in model.model_fields.items() if field.is_required()}
    assert set(schema.get("required", [])) == required
    code = model.model_json_schema()
    for name, prop in code["properties"].items():
        assert json_types(documented[name], SCHEMAS, "#/components/schemas/") == json_types(
            prop, code.get("$defs", {}), "#/$defs/"
        ), f"{model.__name__}.{name}"


def test_enums_match_literals() -> None:
    op = SCHEMAS["NodeQuery"]["properties"]["op"]["enum"]
    assert op == list(typing.get_args(contracts.QueryOp))
    kind = SCHEMAS["MembershipEvent"]["properties"]["kind"]["enum"]
    assert kind == list(typing.get_args(contracts.EventKind))
    events = DOC["channels"]["{namespace}.events"]["subscribe"]["bindings"]["amqp"]["cc"]
    assert events == [f"node.{k}" for k in typing.get_args(contracts.EventKind)]
    wire_errors = {InvalidRequest, Conflict, NotFound, StoreUnavailable, RemoteError,
                   Unauthorized, Forbidden, BrokerAdminUnavailable}
    assert set(SCHEMAS["Error"]["properties"]["type"]["enum"]) == {e.type for e in wire_errors}


def test_operation_types() -> None:
    text = DOC_PATH.read_text(encoding="utf-8")
    operations = [contracts.JOIN, contracts.DELETE, contracts.LIST_NODES, contracts.CHOOSE_HOSTS,
                  contracts.MEMBERSHIP, contracts.SEARCH, contracts.NODE_QUERY]
    enrollment = [contracts.ENROLL, contracts.REVOKE, contracts.LIST_ENROLLED,
                  contracts.BRIDGE_USER]
    for op in operations:
        assert op in text
    channels = DOC["channels"]

    def types(channel: str, action: str) -> list[str]:
        message = channels[channel][action]["message"]
        refs = message.get("oneOf", [message])
        return [resolve(ref, MESSAGES, "#/components/messages/")["bindings"]["amqp"]["messageType"]
                for ref in refs]

    assert types(NAMES.registry_queue, "publish") == operations[:5] + enrollment
    assert types(NAMES.search_queue, "publish") == [contracts.SEARCH]
    assert types(NAMES.broadcast_exchange, "subscribe") == [contracts.NODE_QUERY]
    assert types(NAMES.node_queue("{nodeId}"), "subscribe") == [contracts.NODE_QUERY]


def test_names_and_arguments() -> None:
    channels = DOC["channels"]
    for name in (*NAMES.work_queues(), NAMES.broadcast_exchange, NAMES.events_exchange,
                 NAMES.replies_exchange,
                 NAMES.dead_letter_queue, NAMES.node_queue("{nodeId}"),
                 NAMES.reply_queue("{owner}", "{unique}")):
        assert name in channels
    for queue in NAMES.work_queues():
        assert channels[queue]["x-queue-arguments"] == work_queue_arguments(NAMES)
    dead_letters = channels[NAMES.dead_letter_queue]
    assert dead_letters["x-bound-to"] == NAMES.dead_letter_exchange
    assert channels[NAMES.node_queue("{nodeId}")]["x-bound-to"] == NAMES.broadcast_exchange
    heartbeat = channels[NAMES.events_exchange]["publish"]["bindings"]["amqp"]["cc"]
    assert heartbeat == [HEARTBEAT_KEY]


def test_patterns_match_code() -> None:
    assert SCHEMAS["NodeId"]["pattern"] == contracts.NODE_ID_PATTERN
    portable = re.compile(SCHEMAS["NodeAddress"]["pattern"])
    code = re.compile(contracts.NODE_ADDRESS_PATTERN)
    samples = ["http://a", "HTTPS://a:5000/x?y", "ws://n", "WsS://n/p", "ftp://a", "http:///x",
               "http://a b", "alice", "httpx://a", "http://", "https://a/#f"]
    for sample in samples:
        assert bool(portable.match(sample)) == bool(code.match(sample)), sample


def test_examples_are_valid_messages() -> None:
    checked = 0
    for message in MESSAGES.values():
        ref = message["payload"].get("$ref", "")
        model = getattr(contracts, ref.removeprefix("#/components/schemas/"), None)
        for example in message.get("examples", []):
            if model is not None:
                model.model_validate(example["payload"])
                checked += 1
    assert checked >= 6
