"""docs/asyncapi.yaml must describe the contracts in shared/contracts.py (no broker needed)."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from services.node.inventory import Inventory, Tensor
from shared import contracts
from shared.auth import REPLY_EXCHANGE_HEADER
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
from shared.logs import REQUEST_ID_HEADER
from shared.rpc import DEADLINE_HEADER, SENT_HEADER
from shared.settings import NodeSettings
from shared.topology import HEARTBEAT_KEY, Names, node_queue_arguments, work_queue_arguments

ROOT = Path(__file__).resolve().parent.parent
DOC_PATH = ROOT / "docs" / "asyncapi.yaml"
PROTOCOL_PATH = ROOT / "docs" / "protocol.md"
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
# Not bus messages, but what a node author needs: the SDK's inventory (the demo node's file).
NODE_SIDE = [Inventory, Tensor]


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


@pytest.mark.parametrize("model", MODELS + NODE_SIDE, ids=lambda m: m.__name__)
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


def reply_queue_owners_in_code() -> set[str]:
    """Every ``owner`` the code names a reply queue with: ``RpcClient(bus, names, "<owner>")``
    and ``names.reply_queue("<owner>", ...)``."""
    owners = set()
    for path in [*ROOT.glob("services/**/*.py"), *ROOT.glob("shared/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            position = {"RpcClient": 2, "reply_queue": 0}.get(name)
            if position is None or len(node.args) <= position:
                continue
            arg = node.args[position]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                owners.add(arg.value)
    return owners


def test_reply_queue_owners_match_code() -> None:
    owners = reply_queue_owners_in_code()
    assert {"api", "search"} <= owners, "the scan of the code found too little"
    assert set(DOC["components"]["parameters"]["owner"]["schema"]["enum"]) == owners


def test_headers_the_code_sends_are_documented() -> None:
    documented = set(SCHEMAS["RequestHeaders"]["properties"])
    assert {DEADLINE_HEADER, SENT_HEADER, REQUEST_ID_HEADER, REPLY_EXCHANGE_HEADER} <= documented


def test_node_queue_arguments_match_the_sdk() -> None:
    ttl_s = NodeSettings.model_fields["node_queue_ttl_s"].default
    channel = DOC["channels"][NAMES.node_queue("{nodeId}")]
    assert channel["x-queue-arguments"] == node_queue_arguments(ttl_s)


def test_queries_documented_as_dropped_are_invalid() -> None:
    message = MESSAGES["node_query"]
    assert message["x-invalid-examples"]
    for example in message["x-invalid-examples"]:
        with pytest.raises(ValidationError):
            contracts.NodeQuery.model_validate(example["payload"])
    for example in message["examples"]:
        contracts.NodeQuery.model_validate(example["payload"])


@pytest.mark.parametrize("model", [contracts.NodeQuery, contracts.NodeReply, contracts.Heartbeat,
                                   Inventory, Tensor], ids=lambda m: m.__name__)
def test_protocol_page_names_every_field_a_node_sees(model: type[BaseModel]) -> None:
    text = PROTOCOL_PATH.read_text(encoding="utf-8")
    missing = [name for name in model.model_fields if f"`{name}`" not in text
               and f'"{name}"' not in text]
    assert not missing, f"docs/protocol.md does not name {model.__name__} fields {missing}"
