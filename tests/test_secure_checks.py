"""Secure mode's decisions, without a broker: who may ask, who may speak for a node."""

from __future__ import annotations

from services.registry.enrollment import bridge_grant, node_grant, url_for_user
from shared.auth import RequestGate, SpeakerCheck, reply_exchange, stamp, token_hash
from shared.contracts import DELETE, JOIN, LIST_NODES
from shared.settings import BaseGridSettings, BridgeSettings

GATEWAY = "amqp://gw:pw@broker:5672/"


def secure(**overrides: object) -> BaseGridSettings:
    return BaseGridSettings(amqp_url=GATEWAY, node_auth=True, **overrides)


def test_open_mode_admits_everyone() -> None:
    gate = RequestGate(BaseGridSettings(amqp_url=GATEWAY))
    assert gate.admits(None, DELETE) and gate.from_gateway("anyone")
    assert SpeakerCheck(BaseGridSettings()).may_speak_for("mallory", "alice")


def test_the_old_name_turns_secure_mode_on() -> None:
    assert BaseGridSettings(GRID_VERIFY_NODE_USER=True).node_auth
    assert BaseGridSettings(verify_node_user=True).verify_node_user


def test_workers_act_only_for_gateway_users_and_bridges_only_list() -> None:
    gate = RequestGate(secure(bridge_users="bridge"))
    assert gate.admits("gw", JOIN) and gate.admits("gw", DELETE)
    assert not gate.admits(None, JOIN) and not gate.admits("alice", DELETE)
    assert gate.admits("bridge", LIST_NODES) and not gate.admits("bridge", JOIN)
    assert gate.from_gateway("gw") and not gate.from_gateway("bridge")


def test_gateway_users_default_to_the_processes_own() -> None:
    assert secure().gateway_user_set == {"gw"}
    assert secure(gateway_users="api, workers").gateway_user_set == {"api", "workers"}


def test_only_the_node_or_a_bridge_for_a_bridged_node_may_speak_for_it() -> None:
    check = SpeakerCheck(secure(bridge_users="bridge"), lambda: {"carol"})
    assert check.may_speak_for("alice", "alice")
    assert not check.may_speak_for("mallory", "alice") and not check.may_speak_for(None, "alice")
    assert check.may_speak_for("bridge", "carol") and not check.may_speak_for("bridge", "alice")
    assert "b2" not in secure(bridge_users="b1").bridge_user_set
    assert BridgeSettings(amqp_url="amqp://b2:x@h/").bridge_user_set == {"b2"}


def test_what_a_gateway_process_stamps_and_where_nodes_reply() -> None:
    assert stamp(secure()) == "gw"
    assert stamp(BaseGridSettings(amqp_url="amqps://h:5671/?auth=external")) is None
    assert reply_exchange({"x-reply-exchange": "ns.replies"}) == "ns.replies"
    assert reply_exchange({"x-reply-exchange": b"ns.replies"}) == "ns.replies"
    assert reply_exchange(None) == "" and reply_exchange({"x-reply-exchange": 3}) == ""
    assert token_hash("t") == token_hash("t") != token_hash("u") and len(token_hash("t")) == 64


def test_a_nodes_grant_names_only_its_own_queue_and_the_reply_path() -> None:
    grant = node_grant("grid", "a.b")
    assert grant.configure == r"^grid\.node\.a\.b$"
    assert grant.write == r"^(grid\.node\.a\.b|grid\.replies|grid\.events)$"
    assert grant.read == r"^(grid\.node\.a\.b|grid\.broadcast)$"
    assert grant.topic_write == r"^heartbeat\.a\.b$" and grant.topic_read == "^$"
    assert "amq\\.default" in bridge_grant("grid").write


def test_enrolled_urls_carry_the_nodes_own_user_to_every_address() -> None:
    urls = url_for_user("amqp://gw:pw@h1:5672/,amqps://gw:pw@h2:5671/vh", "a@b", "p/w")
    assert urls == "amqp://a%40b:p%2Fw@h1:5672/,amqps://a%40b:p%2Fw@h2:5671/vh"
