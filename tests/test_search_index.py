"""The search index: a search asks only the nodes whose answer does not follow from their lists."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from services.node.inventory import Inventory
from services.search.worker import SearchWorker
from shared.contracts import NodeQuery, NodeReply
from tests.harness import Gateway, Harness, eventually

INVENTORIES = {
    "alice": {"models": ["mnist-cnn"], "tensors": [{"id": "x", "tags": ["#mnist", "#train"]}]},
    "bob": {"models": ["resnet18"], "tensors": [{"id": "y", "tags": ["#cifar10", "#train"]}]},
    **{f"n{i}": {"models": [f"m{i}"], "tensors": [{"id": "z", "tags": [f"#t{i}"]}]}
       for i in range(6)},
}


async def indexed(worker: SearchWorker, count: int) -> bool:
    index, membership = worker.index, worker.membership
    return all(index.unindexed(op, membership.view()) == 0
               for op in ("list_models", "list_tags")) and len(membership.expected()) == count


@pytest.fixture
async def network(harness: Harness) -> Gateway:
    """Eight versioned nodes, all indexed by the search worker; the API's own cache off."""
    gateway = await harness.gateway(search_cache=False)
    for name, inventory in INVENTORIES.items():
        await harness.node(gateway, name, inventory)
    await gateway.wait_search_sees(len(INVENTORIES))
    await eventually(lambda: indexed(gateway.searches[0], len(INVENTORIES)))
    return gateway


def headers(response) -> tuple[str, str, str]:
    return tuple(response.headers[f"x-grid-nodes-{name}"]
                 for name in ("asked", "answered", "queried"))


async def test_a_model_search_asks_nobody(network: Gateway) -> None:
    response = await network.client.post("/search-model", json={"model_id": "mnist-cnn"})
    assert response.json() == [["alice", "http://alice:5000"]]
    assert headers(response) == ("8", "8", "0")
    response = await network.client.get("/search-available-models")
    assert "resnet18" in response.json() and headers(response) == ("8", "8", "0")


async def test_a_tag_search_asks_only_the_nodes_listing_every_tag(network: Gateway,
                                                                 amqp_url: str) -> None:
    worker = network.searches[0]
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        tap = await (await connection.channel()).declare_queue(exclusive=True)
        await tap.bind(worker.names.broadcast_exchange)
        response = await network.client.post("/search", json={"query": ["#train", "#mnist"]})
        assert response.json() == [["alice", "http://alice:5000"]]
        assert headers(response) == ("8", "8", "1")  # alice alone lists both tags
        response = await network.client.post("/search", json={"query": ["#train"]})
        assert headers(response) == ("8", "8", "2")
        assert await tap.get(fail=False) is None  # each went to its nodes' own queues


async def test_a_changed_node_is_asked_until_it_is_indexed_again(
        network: Gateway, harness: Harness) -> None:
    worker = network.searches[0]
    alice = next(n for n in harness._stoppers if getattr(n, "__self__", None) is not None
                 and getattr(n.__self__, "node_id", "") == "alice").__self__
    await alice.update_inventory(Inventory.model_validate({"models": ["gpt-small"]}))
    await eventually(lambda: _version_seen(worker, alice.node_id, alice.version))
    response = await network.client.post("/search-model", json={"model_id": "gpt-small"})
    assert response.json() == [["alice", "http://alice:5000"]]
    await eventually(lambda: indexed(worker, len(INVENTORIES)))
    response = await network.client.post("/search-model", json={"model_id": "mnist-cnn"})
    assert response.json() == [] and headers(response) == ("8", "8", "0")


async def _version_seen(worker: SearchWorker, node_id: str, version: str | None) -> bool:
    return worker.membership.versions.get(node_id) == version


async def test_a_node_without_a_version_is_always_asked(network: Gateway,
                                                       harness: Harness) -> None:
    await harness.node(network, "plain",
                       lambda node_id, _: NodeReply(node_id=node_id, match=True, models=["p"]))
    await network.wait_search_sees(9)
    response = await network.client.post("/search-model", json={"model_id": "mnist-cnn"})
    assert response.json() == [["alice", "http://alice:5000"], ["plain", "http://plain:5000"]]
    assert headers(response) == ("9", "9", "1")


async def test_the_index_can_be_turned_off(harness: Harness) -> None:
    gateway = await harness.gateway(search={"search_index": False, "search_cache": False})
    for name in ("alice", "bob"):
        await harness.node(gateway, name, INVENTORIES[name])
    await gateway.wait_search_sees(2)
    for _ in range(3):
        response = await gateway.client.post("/search-model", json={"model_id": "resnet18"})
        assert headers(response) == ("2", "2", "2")


async def test_a_node_silent_at_its_first_index_pass_is_asked_again(harness: Harness) -> None:
    """No membership change follows the pass it missed: the indexer asks it again anyway."""
    gateway = await harness.gateway(search_cache=False, search={"search_timeout_s": 0.5})
    inventory = Inventory.model_validate(INVENTORIES["alice"])
    missed: set[str] = set()

    def answer_after_missing_one_of_each(node_id: str, query: NodeQuery) -> NodeReply:
        if query.op in ("list_models", "list_tags") and query.op not in missed:
            missed.add(query.op)
            raise RuntimeError("no answer this time, as from a node too busy to reply")
        return inventory.answer(node_id, query)

    await harness.node(gateway, "alice", answer_after_missing_one_of_each,
                       version=inventory.version())
    await gateway.wait_search_sees(1)
    worker = gateway.searches[0]
    await eventually(lambda: _missed_both(missed))
    generation = worker.membership.generation
    await eventually(lambda: indexed(worker, 1))
    assert worker.membership.generation == generation  # nothing changed: a retry, not a change
    response = await gateway.client.post("/search-model", json={"model_id": "mnist-cnn"})
    assert response.json() == [["alice", "http://alice:5000"]]
    assert headers(response) == ("1", "1", "0")


async def _missed_both(missed: set[str]) -> bool:
    return missed == {"list_models", "list_tags"}


async def test_a_list_answer_after_the_deadline_still_indexes_its_node(
        harness: Harness) -> None:
    """A node always slower than the search deadline is indexed from its late answers."""
    gateway = await harness.gateway(search_cache=False, search={"search_timeout_s": 0.3})
    inventory = Inventory.model_validate(INVENTORIES["bob"])

    async def answer_lists_late(node_id: str, query: NodeQuery) -> NodeReply:
        if query.op in ("list_models", "list_tags"):
            await asyncio.sleep(0.6)  # a slow node, past every deadline
        return inventory.answer(node_id, query)

    await harness.node(gateway, "bob", answer_lists_late, version=inventory.version())
    await gateway.wait_search_sees(1)
    await eventually(lambda: indexed(gateway.searches[0], 1))
    response = await gateway.client.post("/search-model", json={"model_id": "resnet18"})
    assert response.json() == [["bob", "http://bob:5000"]]
    assert headers(response) == ("1", "1", "0")


def _lists(node_id: str, version: str | None, models: list[str], tags: list[str]):
    return (NodeReply(node_id=node_id, version=version, models=models),
            NodeReply(node_id=node_id, version=version, tags=tags))


def test_the_index_answers_by_name_and_asks_whom_it_cannot_answer_for() -> None:
    from services.search.index import InventoryIndex
    from shared.contracts import SearchRequest
    from shared.membership import MembershipView

    index = InventoryIndex()
    for node_id, models, tags in (("a", ["m1"], ["#x", "#y"]), ("b", ["m2"], ["#x"]),
                                  ("c", ["m1"], ["#y"])):
        models_reply, tags_reply = _lists(node_id, "1", models, tags)
        index.learn("list_models", models_reply)
        index.learn("list_tags", tags_reply)
    expected = {name: f"http://{name}" for name in ("a", "b", "c", "d")}
    view = MembershipView(1, expected, {"a": "1", "b": "1", "c": "2", "d": None})
    has_m1 = index.split(SearchRequest(op="has_model", model_id="m1"), expected, view)
    # c moved to version 2 and d announces none: only they are asked; a is known to host m1.
    assert (set(has_m1.known), set(has_m1.ask)) == ({"a"}, {"c", "d"})
    tags = index.split(SearchRequest(op="search_tags", tags=["#x", "#y"]), expected, view)
    assert (tags.known, set(tags.ask)) == ({}, {"a", "c", "d"})  # a may match: only a can say
    # c answers at version 2 without m1: the index follows, and forgets who left.
    models_reply, tags_reply = _lists("c", "2", ["m3"], ["#y"])
    index.learn("list_models", models_reply)
    assert set(index.split(SearchRequest(op="has_model", model_id="m1"), expected,
                           view).ask) == {"d"}
    index.forget_except({"b": "http://b", "c": "http://c"})
    assert set(index.split(SearchRequest(op="has_model", model_id="m1"), expected,
                           view).ask) == {"a", "d"}
    # A search naming nodes goes node by node, with the same answers.
    named = index.split(SearchRequest(op="has_model", model_id="m3", nodes=["c", "b"]),
                        {"c": "http://c", "b": "http://b"}, view)
    assert (set(named.known), named.ask) == ({"c"}, {})
