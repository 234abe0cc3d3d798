"""The search worker's answer cache: hits while nothing changed, misses after any change."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest

from services.node.inventory import Inventory
from services.node.sdk import GridNode
from services.search.worker import SearchWorker
from shared.contracts import NodeQuery, NodeReply
from tests.harness import Gateway, Harness, eventually
from tests.tcp_proxy import TcpProxy

TTL_S = 1.0
FAST = {"node_ttl_s": TTL_S}
FAST_NODE = {"heartbeat_s": 0.2}
ALICE = {"models": ["mnist-cnn"], "tensors": [{"id": "x", "tags": ["#mnist", "#train"]}]}
BOB = {"models": ["resnet18"], "tensors": [{"id": "y", "tags": ["#cifar10"]}]}
MNIST = {"model_id": "mnist-cnn"}


@dataclass
class Network:
    gateway: Gateway
    nodes: dict[str, GridNode]


@pytest.fixture
async def network(harness: Harness) -> Network:
    """A gateway (short TTL) with two versioned nodes, alice and bob, seen by the search worker."""
    gateway = await harness.gateway(registry=FAST, search=FAST)
    nodes = {name: await harness.node(gateway, name, inventory, **FAST_NODE)
             for name, inventory in (("alice", ALICE), ("bob", BOB))}
    await gateway.wait_search_sees(2)
    return Network(gateway, nodes)


async def search_model(gateway: Gateway, body: dict = MNIST) -> tuple[list, str, str]:
    response = await gateway.client.post("/search-model", json=body)
    assert response.status_code == 200
    return response.json(), response.headers["x-grid-cache"], response.headers[
        "x-grid-nodes-answered"]


def cache_count(worker: SearchWorker, outcome: str) -> float:
    return worker.metrics.registry.get_sample_value("grid_search_cache_total",
                                                    {"outcome": outcome}) or 0


def api_hits(gateway: Gateway) -> float:
    return gateway.api.app.state.metrics.get_sample_value(
        "grid_api_search_cache_total", {"outcome": "hit"}) or 0


def searches_handled(worker: SearchWorker) -> float:
    return worker.metrics.registry.get_sample_value(
        "grid_worker_message_seconds_count",
        {"service": "search", "op": "search", "outcome": "ok"}) or 0


async def sees_version(worker: SearchWorker, node: GridNode) -> None:
    async def seen() -> bool:
        return worker.membership.versions.get(node.node_id) == node.version

    await eventually(seen)


async def test_repeated_search_is_answered_from_the_cache(network: Network) -> None:
    gateway = network.gateway
    first = await search_model(gateway)
    second = await search_model(gateway)
    assert first == ([["alice", "http://alice:5000"]], "miss", "2")
    assert second == ([["alice", "http://alice:5000"]], "hit", "2")
    tags = await gateway.client.post("/search", json={"query": ["#train", "#mnist"]})
    again = await gateway.client.post("/search", json={"query": ["#mnist", "#train"]})
    assert again.json() == tags.json() == [["alice", "http://alice:5000"]]
    assert again.headers["x-grid-cache"] == "hit"  # the same query, tags in another order
    assert api_hits(gateway) >= 2


async def test_a_hit_in_the_api_makes_no_round_trip(network: Network) -> None:
    gateway, worker = network.gateway, network.gateway.searches[0]
    await search_model(gateway)
    handled = searches_handled(worker)
    assert [(await search_model(gateway))[1] for _ in range(5)] == ["hit"] * 5
    assert searches_handled(worker) == handled


async def test_the_worker_answers_from_its_cache_when_the_api_keeps_none(
        harness: Harness) -> None:
    gateway = await harness.gateway(search_cache=False)  # the API's own cache off
    await harness.node(gateway, "alice", ALICE)
    await gateway.wait_search_sees(1)
    hits = cache_count(gateway.searches[0], "hit")
    assert [(await search_model(gateway))[1] for _ in range(3)] == ["miss", "hit", "hit"]
    assert cache_count(gateway.searches[0], "hit") == hits + 2
    assert api_hits(gateway) == 0


async def test_inventory_change_is_seen_at_once(network: Network) -> None:
    gateway, worker = network.gateway, network.gateway.searches[0]
    await search_model(gateway)
    assert (await search_model(gateway))[1] == "hit"
    bob = network.nodes["bob"]
    await bob.update_inventory(Inventory.model_validate({**BOB, "models": ["mnist-cnn"]}))
    await sees_version(worker, bob)
    assert await search_model(gateway) == (
        [["alice", "http://alice:5000"], ["bob", "http://bob:5000"]], "miss", "2")
    alice = network.nodes["alice"]
    await alice.update_inventory(Inventory.model_validate({"models": []}))
    await sees_version(worker, alice)
    assert await search_model(gateway) == ([["bob", "http://bob:5000"]], "miss", "2")
    assert (await search_model(gateway))[1] == "hit"


async def test_the_same_inventory_again_keeps_the_cache(network: Network) -> None:
    gateway = network.gateway
    await search_model(gateway)
    await network.nodes["bob"].update_inventory(Inventory.model_validate(BOB))
    assert (await search_model(gateway))[1] == "hit"


async def test_offline_online_join_and_delete_each_invalidate(
        network: Network, harness: Harness) -> None:
    gateway = network.gateway

    async def repeated(expected: list, count: str) -> None:
        assert await search_model(gateway) == (expected, "miss", count)
        assert await search_model(gateway) == (expected, "hit", count)

    await repeated([["alice", "http://alice:5000"]], "2")
    await network.nodes["alice"].stop()  # silent: offline after the TTL
    await eventually(lambda: answered(gateway, "1"), within=TTL_S * 5)
    assert await search_model(gateway) == ([], "hit", "1")
    alice = await harness.node(gateway, "alice", ALICE, **FAST_NODE)  # heard again
    await gateway.wait_search_sees(2)
    await repeated([["alice", "http://alice:5000"]], "2")
    await harness.node(gateway, "carol", {"models": ["mnist-cnn"]}, **FAST_NODE)
    await gateway.wait_search_sees(3)
    await repeated([["alice", "http://alice:5000"], ["carol", "http://carol:5000"]], "3")
    await alice.stop(leave=True)
    await gateway.wait_search_sees(2)
    await repeated([["carol", "http://carol:5000"]], "2")


async def answered(gateway: Gateway, count: str) -> bool:
    return (await search_model(gateway))[2] == count


async def test_a_node_without_a_version_is_asked_every_time(
        network: Network, harness: Harness) -> None:
    gateway = network.gateway
    await harness.node(gateway, "plain", lambda node_id, _: NodeReply(node_id=node_id,
                                                                      match=False))
    await gateway.wait_search_sees(3)
    for _ in range(3):
        assert (await search_model(gateway))[1] == "miss"
    assert cache_count(gateway.searches[0], "uncacheable") >= 3


async def test_a_reply_without_the_announced_version_is_not_kept(
        network: Network, harness: Harness) -> None:
    gateway = network.gateway

    def stale(node_id: str, query: NodeQuery) -> NodeReply:
        return NodeReply(node_id=node_id, match=False, version="old")

    await harness.node(gateway, "stale", stale, version="new", **FAST_NODE)
    await gateway.wait_search_sees(3)
    for _ in range(3):
        assert (await search_model(gateway))[1] == "miss"


async def test_a_partial_answer_is_not_kept(harness: Harness) -> None:
    gateway = await harness.gateway(registry=FAST, search={**FAST, "search_timeout_s": 0.3})
    await harness.node(gateway, "alice", ALICE, **FAST_NODE)
    never = asyncio.Event()

    async def hang(node_id: str, query: NodeQuery) -> NodeReply:
        await never.wait()
        raise AssertionError("unreachable")

    await harness.node(gateway, "hung", hang, version="v1", **FAST_NODE)
    await eventually(lambda: _asked(gateway, "2"))
    for _ in range(2):
        assert await search_model(gateway) == ([["alice", "http://alice:5000"]], "miss", "1")
    never.set()


async def _asked(gateway: Gateway, count: str) -> bool:
    response = await gateway.client.post("/search-model", json=MNIST)
    return response.headers["x-grid-nodes-asked"] == count


async def test_cache_can_be_turned_off(harness: Harness) -> None:
    gateway = await harness.gateway(search={"search_cache": False}, search_cache=False)
    await harness.node(gateway, "alice", ALICE)
    await gateway.wait_search_sees(1)
    assert [(await search_model(gateway))[1] for _ in range(3)] == ["miss"] * 3


async def test_two_search_workers_keep_their_own_caches(harness: Harness) -> None:
    # The API's own cache off, so that every search reaches a worker.
    gateway = await harness.gateway(searches=2, registry=FAST, search=FAST, search_cache=False)
    node = await harness.node(gateway, "alice", ALICE, **FAST_NODE)
    await gateway.wait_search_sees(1)

    async def both_hit() -> bool:
        await asyncio.gather(*(search_model(gateway) for _ in range(8)))
        return all(cache_count(worker, "hit") > 0 for worker in gateway.searches)

    await eventually(both_hit)
    await node.update_inventory(Inventory.model_validate({"models": ["other"]}))
    for worker in gateway.searches:
        await sees_version(worker, node)
    answers = await asyncio.gather(*(search_model(gateway) for _ in range(16)))
    assert {str(answer[0]) for answer in answers} == {"[]"}


async def test_an_inventory_change_is_sent_without_waiting_for_the_batch(
        harness: Harness) -> None:
    # A batch window twice the wait below: only a delta sent at once can be seen within it.
    gateway = await harness.gateway(registry={**FAST, "membership_batch_s": 12.0}, search=FAST)
    alice = await harness.node(gateway, "alice", ALICE, **FAST_NODE)
    worker = gateway.searches[0]
    await eventually(lambda: _sees(worker, alice), within=30)  # the join waits for the batch
    assert await search_model(gateway) == ([["alice", "http://alice:5000"]], "miss", "1")
    await alice.update_inventory(Inventory.model_validate({"models": []}))
    await eventually(lambda: _sees(worker, alice), within=6)
    assert await search_model(gateway) == ([], "miss", "1")


async def _sees(worker: SearchWorker, node: GridNode) -> bool:
    return worker.membership.versions.get(node.node_id) == node.version


async def test_a_version_changed_while_the_broker_is_away_is_announced_once_it_is_back(
        harness: Harness, amqp_url: str) -> None:
    # The node reaches the broker through a proxy that the test cuts; its own heartbeat
    # interval (60 s) is far longer than the wait below, and its TTL longer still.
    gateway = await harness.gateway(registry={"node_ttl_s": 300.0}, search={"node_ttl_s": 300.0})
    parts = urlsplit(amqp_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await proxy.start()
    try:
        proxied = urlunsplit(parts._replace(netloc=f"{parts.netloc.rsplit(':', 1)[0]}:"
                                                   f"{proxy.port}"))
        alice = await harness.node(gateway, "alice", ALICE, amqp_url=proxied, heartbeat_s=60.0)
        worker = gateway.searches[0]
        await eventually(lambda: _sees(worker, alice))
        await proxy.cut()
        await eventually(lambda: _true(not alice.bus.ready))
        await alice.update_inventory(Inventory.model_validate({"models": []}))
        await proxy.restore()
        await eventually(lambda: _sees(worker, alice), within=20)
        assert await search_model(gateway) == ([], "miss", "1")
    finally:
        await proxy.close()


async def _true(value: bool) -> bool:
    return value
