"""The bridge's parts without a broker: answer parsing, the roster, settings, the HTTP node."""

from __future__ import annotations

import httpx
import orjson
import pytest

from services.bridge.answers import Malformed, answered_ok, call_for, reply_for
from services.bridge.roster import Roster, speaks_http
from services.node.httpnode import HttpNodeApp, node_ids, parse_args
from services.node.inventory import Inventory
from shared.contracts import (
    MembershipDelta,
    MembershipSnapshot,
    NodeQuery,
    NodeReply,
    NodeState,
)
from shared.membership import Membership
from shared.settings import BridgeSettings

HOSTS = {"workers": [["bob", "http://bob:5000"], ["carol", "http://carol:5000"]],
         "crypto_provider": ["dave", "http://dave:5000"]}
LIST_MODELS = NodeQuery(op="list_models")
HAS_MODEL = NodeQuery(op="has_model", model_id="m")
LIST_TAGS = NodeQuery(op="list_tags")
SEARCH_TAGS = NodeQuery(op="search_tags", tags=["#a", "#b"])
ENCRYPTED = NodeQuery(op="encrypted_model", model_id="m")


def test_each_query_calls_the_original_route() -> None:
    assert (call_for(LIST_MODELS).method, call_for(LIST_MODELS).path) == ("GET", "/models/")
    assert call_for(HAS_MODEL).path == "/models/"
    assert call_for(LIST_TAGS).path == "/dataset-tags"
    assert (call_for(SEARCH_TAGS).method, call_for(SEARCH_TAGS).body) == (
        "POST", {"query": ["#a", "#b"]})
    assert (call_for(ENCRYPTED).path, call_for(ENCRYPTED).body) == (
        "/search-encrypted-models", {"model_id": "m"})
    assert call_for(LIST_TAGS).url("http://n:5000/n/x/") == "http://n:5000/n/x/dataset-tags"


@pytest.mark.parametrize(("query", "status", "body", "reply"), [
    (LIST_MODELS, 200, {"success": True, "models": ["m", "k"]}, {"models": ["m", "k"]}),
    (LIST_MODELS, 200, {"success": False, "error": "db down"}, {"models": []}),
    (HAS_MODEL, 200, {"models": ["m"]}, {"match": True}),
    (HAS_MODEL, 200, {"models": ["k"]}, {"match": False}),
    (LIST_TAGS, 200, ["#a"], {"tags": ["#a"]}),
    (SEARCH_TAGS, 200, {"content": True}, {"match": True}),
    (SEARCH_TAGS, 200, {"content": False}, {"match": False}),
    (ENCRYPTED, 200, HOSTS, {"encrypted": HOSTS}),
    (ENCRYPTED, 404, {"error": "Model ID not found!"}, {}),
    (ENCRYPTED, 200, {"error": "no"}, {}),
])
def test_answers_become_the_reply_an_amqp_node_sends(query, status, body, reply) -> None:
    assert answered_ok(status, query)
    assert reply_for("n", query, status, orjson.dumps(body)) == NodeReply(node_id="n", **reply)


def test_a_404_without_json_says_not_hosted() -> None:
    assert reply_for("n", ENCRYPTED, 404, b"<html>") == NodeReply(node_id="n")


@pytest.mark.parametrize(("query", "body"), [
    (LIST_MODELS, b"\xff not json"),
    (LIST_MODELS, b'["m"]'),
    (LIST_MODELS, b'{"models": "m"}'),
    (HAS_MODEL, b'{"models": [1, 2]}'),
    (LIST_TAGS, b'{"tags": ["#a"]}'),
    (LIST_TAGS, b'["#a", null]'),
    (SEARCH_TAGS, b'{"content": "yes"}'),
    (SEARCH_TAGS, b"{}"),
    (SEARCH_TAGS, b"true"),
    (ENCRYPTED, b'{"workers": 3, "crypto_provider": ["x"]}'),
    (ENCRYPTED, b'{"workers": [["a", "b"]], "crypto_provider": ["x"]}'),
    (ENCRYPTED, b"[]"),
])
def test_wrong_shapes_are_malformed(query: NodeQuery, body: bytes) -> None:
    with pytest.raises(Malformed):
        reply_for("n", query, 200, body)


@pytest.mark.parametrize("status", [301, 400, 404, 500, 503])
def test_other_statuses_are_no_answer(status: int) -> None:
    assert not answered_ok(status, LIST_MODELS)
    assert answered_ok(404, ENCRYPTED)


# --- which nodes are bridged ----------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def roster_of(addresses: dict[str, str], settle_s: float = 1.0) -> tuple[Roster, Clock]:
    clock = Clock()
    membership = Membership(clock=clock)
    membership.load(MembershipSnapshot(epoch="e", seq=0, nodes=[
        NodeState(node_id=node_id, node_address=address) for node_id, address in addresses.items()
    ]))
    return Roster(membership, settle_s, ttl_s=3.0, clock=clock), clock


def change(roster: Roster, *states: NodeState, left: tuple[str, ...] = ()) -> None:
    """The liveness owner's next delta."""
    membership = roster.membership
    assert membership.apply(MembershipDelta(epoch="e", seq=membership.seq + 1,
                                            nodes=list(states), left=list(left)))


def heard(roster: Roster, node_id: str, own: bool, heard: bool = True) -> NodeState:
    address = roster.membership.addresses[node_id]
    return NodeState(node_id=node_id, node_address=address, heard=heard, own=own and heard)


def test_only_http_nodes_not_heard_by_themselves_are_bridged() -> None:
    roster, clock = roster_of({"amqp": "http://amqp:5000", "plain": "HTTPS://plain/n/x",
                               "socket": "ws://socket:5000"})
    change(roster, heard(roster, "amqp", own=True))
    assert roster.bridged() == {}  # not settled yet
    clock.now += 1.0
    assert roster.bridged() == {"plain": "HTTPS://plain/n/x"}
    assert roster.answering() == {}  # not heard at all: probes only
    change(roster, heard(roster, "plain", own=False))
    assert roster.answering() == {"plain": "HTTPS://plain/n/x"}
    assert roster.membership.expected() == {"amqp": "http://amqp:5000",
                                            "plain": "HTTPS://plain/n/x"}
    change(roster, heard(roster, "amqp", own=True, heard=False),
           heard(roster, "plain", own=False, heard=False))  # both fall silent
    assert sorted(roster.bridged()) == ["amqp", "plain"]
    assert roster.answering() == {}


def test_a_node_that_speaks_for_itself_stops_being_bridged() -> None:
    roster, clock = roster_of({"n": "http://n:5000"})
    clock.now += 1.0
    change(roster, heard(roster, "n", own=False))
    assert "n" in roster.answering()
    change(roster, heard(roster, "n", own=True))
    assert roster.bridged() == {}


def test_a_node_is_answered_for_once_the_owner_says_it_is_heard() -> None:
    roster, clock = roster_of({"n": "http://n:5000"})
    clock.now += 1.0
    roster.beat("n")  # a heartbeat sent: not answered for before the owner's delta
    assert roster.answering() == {}
    change(roster, heard(roster, "n", own=False))
    assert roster.answering() == {"n": "http://n:5000"}


def test_joins_settle_and_leaves_are_forgotten() -> None:
    roster, clock = roster_of({})
    membership = roster.membership
    change(roster, NodeState(node_id="n", node_address="http://n"))
    assert roster.bridged() == {}
    clock.now += 1.0
    assert roster.bridged() == {"n": "http://n"}
    change(roster, left=("n",))
    assert (roster.bridged(), membership.expected(), membership.known_for("n")) == ({}, {}, 0.0)


def test_beats_are_due_once_per_interval() -> None:
    roster, clock = roster_of({"n": "http://n"})
    assert roster.beat_due("n", 0.5)
    roster.beat("n")
    clock.now += 0.4
    assert not roster.beat_due("n", 0.5)
    clock.now += 0.1
    assert roster.beat_due("n", 0.5)


def test_a_snapshot_drops_nodes_deleted_meanwhile() -> None:
    roster, clock = roster_of({"a": "http://a", "b": "http://b"})
    roster.membership.load(MembershipSnapshot(epoch="e", seq=5, nodes=[
        NodeState(node_id="a", node_address="http://a", heard=True)]))
    clock.now += 1.0
    assert roster.bridged() == {"a": "http://a"} and roster.answering() == {"a": "http://a"}


def test_speaks_http() -> None:
    assert speaks_http("http://x") and speaks_http("Https://x:1/p")
    assert not speaks_http("ws://x") and not speaks_http("wss://x") and not speaks_http("x")


# --- settings ---------------------------------------------------------------------------


def test_bridge_runs_in_secure_mode_under_either_name() -> None:
    # It answers only for nodes enrolled --bridged there (tests/secure/test_enrollment.py).
    assert BridgeSettings(verify_node_user=True).node_auth
    assert BridgeSettings(GRID_NODE_AUTH=True).node_auth


def test_probe_interval_defaults_to_the_heartbeat() -> None:
    assert BridgeSettings(heartbeat_s=2.5).probe_s == 2.5
    assert BridgeSettings(heartbeat_s=2.5, bridge_probe_s=1).probe_s == 1


# --- the HTTP node -----------------------------------------------------------------------


@pytest.fixture
async def node_client():
    alice = Inventory(models=["m"], encrypted_models={"e": HOSTS},
                      tensors=[{"id": "t", "tags": ["#a", "#b"]}])
    app = HttpNodeApp({"alice": alice, "bob": Inventory()})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as client:
        client.app = app
        yield client


async def test_http_node_routes_under_prefixes(node_client: httpx.AsyncClient) -> None:
    get, post = node_client.get, node_client.post
    assert (await get("/n/alice/models/")).json() == {"success": True, "models": ["m"]}
    assert (await get("/n/bob/models/")).json() == {"success": True, "models": []}
    assert (await get("/n/alice/dataset-tags")).json() == ["#a", "#b"]
    # bodies as the original gateway sent them: data=json.dumps(...), no content type
    assert (await post("/n/alice/search", content='{"query": ["#b", "#a"]}')).json() == {
        "content": True}
    assert (await post("/n/bob/search", content='{"query": ["#a"]}')).json() == {
        "content": False}
    response = await post("/n/alice/search-encrypted-models", content='{"model_id": "e"}')
    assert (response.status_code, response.json()) == (200, HOSTS)
    response = await post("/n/alice/search-encrypted-models", content='{"model_id": "x"}')
    assert (response.status_code, response.json()) == (404, {"error": "Model ID not found!"})
    assert (await get("/n/alice/identity/")).text == "OpenGrid"
    assert node_client.app.requests == {"alice": 5, "bob": 2}


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("GET", "/models/", None, 404),  # two nodes: none at the root
    ("GET", "/n/nobody/models/", None, 404),
    ("GET", "/n/alice/nothing", None, 404),
    ("POST", "/n/alice/models/", None, 405),
    ("GET", "/n/alice/search", None, 405),
    ("POST", "/n/alice/search", b"not json", 400),
    ("POST", "/n/alice/search", b'{"query": []}', 400),
    ("POST", "/n/alice/search", b'{"query": [1]}', 400),
    ("POST", "/n/alice/search-encrypted-models", b"{}", 400),
    ("POST", "/n/alice/search", b"x" * (1024 * 1024 + 1), 413),
])
async def test_http_node_errors_are_json(node_client: httpx.AsyncClient, method: str,
                                         path: str, body: bytes | None, status: int) -> None:
    response = await node_client.request(method, path, content=body)
    assert response.status_code == status
    assert "error" in response.json()


async def test_one_node_is_served_at_the_root_too() -> None:
    app = HttpNodeApp({"solo": Inventory(models=["m"])})
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as client:
        assert (await client.get("/models/")).json()["models"] == ["m"]
        assert (await client.get("/n/solo/models/")).json()["models"] == ["m"]


def test_http_node_ids() -> None:
    assert node_ids(parse_args(["--inventory", "examples/alice.json"])) == ["alice"]
    args = parse_args(["--inventory", "x.json", "--id", "a", "--count", "2", "--id-prefix", "h"])
    assert node_ids(args) == ["a", "h0", "h1"]
