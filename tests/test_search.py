"""The search routes with real nodes on the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path

import aio_pika
import pytest

from services.node.sdk import GridNode
from shared import codec
from shared.contracts import SEARCH, NodeQuery, NodeReply, SearchRequest, SearchResult
from shared.topology import Names, declare_broadcast
from tests.harness import WAIT_S, Gateway, Harness, eventually

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
INVALID_FIELDS = {"message": "Invalid json fields."}
SEARCH_TIMEOUT_S = 0.6
# The search path is the bus's busiest: run on both bus paths (docs/fast-paths.md).
pytestmark = pytest.mark.both_bus_paths


def inventory(name: str) -> dict:
    return json.loads((EXAMPLES / f"{name}.json").read_text())


@pytest.fixture
async def network(harness: Harness) -> Gateway:
    """A gateway with the three example nodes, all live."""
    gateway = await harness.gateway(search={"search_timeout_s": SEARCH_TIMEOUT_S})
    for name in ("alice", "bob", "carol"):
        await harness.node(gateway, name, inventory(name))
    await gateway.wait_search_sees(3)
    return gateway


def counts(response) -> tuple[str, str]:
    return response.headers["x-grid-nodes-asked"], response.headers["x-grid-nodes-answered"]


async def test_available_models_and_tags(network: Gateway) -> None:
    response = await network.client.get("/search-available-models")
    assert response.json() == ["bert-tiny", "mnist-cnn", "resnet18", "toy-linear"]
    assert counts(response) == ("3", "3")
    response = await network.client.get("/search-available-tags")
    assert response.json() == ["#cifar10", "#labels", "#mnist", "#test", "#text", "#train"]


async def test_search_model(network: Gateway) -> None:
    response = await network.client.post("/search-model", json={"model_id": "mnist-cnn"})
    assert response.json() == [["alice", "http://alice:5000"], ["bob", "http://bob:5000"]]
    assert counts(response) == ("3", "3")
    response = await network.client.post("/search-model", json={"model_id": "nope"})
    assert response.json() == []


async def test_search_tags_are_anded_within_one_tensor(network: Gateway) -> None:
    search = network.client.post
    assert (await search("/search", json={"query": ["#mnist"]})).json() == [
        ["alice", "http://alice:5000"], ["bob", "http://bob:5000"]]
    assert (await search("/search", json={"query": ["#train", "#mnist"]})).json() == [
        ["alice", "http://alice:5000"]]
    assert (await search("/search", json={"query": ["#train"]})).json() == [
        ["alice", "http://alice:5000"], ["bob", "http://bob:5000"], ["carol", "http://carol:5000"]]
    # bob has #test and #train, but on different tensors
    assert (await search("/search", json={"query": ["#test", "#train"]})).json() == []


async def test_search_encrypted_model(network: Gateway) -> None:
    response = await network.client.post("/search-encrypted-model", json={"model_id": "convnet"})
    assert response.json() == {  # alice and carol host it: the first by id answers
        "alice": "http://alice:5000",
        "nodes": {"workers": [["bob", "http://bob:5000"], ["carol", "http://carol:5000"]],
                  "crypto_provider": ["dave", "http://dave:5000"]},
    }
    response = await network.client.post("/search-encrypted-model", json={"model_id": "lstm"})
    assert list(response.json()) == ["carol", "nodes"]
    response = await network.client.post("/search-encrypted-model", json={"model_id": "x"})
    assert response.json() == {}


@pytest.mark.parametrize("path", ["/search-model", "/search-encrypted-model"])
@pytest.mark.parametrize("body", [b"", b"[]", b"{}", b'{"model_id": ""}', b'{"model_id": 3}',
                                  b'{"model_id": null}', b"nope"])
async def test_model_search_bad_input(gateway: Gateway, path: str, body: bytes) -> None:
    response = await gateway.client.post(path, content=body)
    assert (response.status_code, response.json()) == (400, INVALID_FIELDS)


@pytest.mark.parametrize("body", [b"{}", b'{"query": []}', b'{"query": "#a"}',
                                  b'{"query": [1]}', b'{"query": [""]}', b'{"query": null}',
                                  b'["#a"]', b"#a"])
async def test_tag_search_bad_input(gateway: Gateway, body: bytes) -> None:
    response = await gateway.client.post("/search", content=body)
    assert (response.status_code, response.json()) == (400, INVALID_FIELDS)


async def test_no_nodes_answers_at_once(gateway: Gateway) -> None:
    response = await gateway.client.get("/search-available-models")
    assert (response.status_code, response.json(), counts(response)) == (200, [], ("0", "0"))


async def test_hung_node_costs_at_most_the_deadline(harness: Harness, network: Gateway) -> None:
    never = asyncio.Event()

    async def hang(node_id: str, query: NodeQuery) -> NodeReply:
        await never.wait()
        raise AssertionError("unreachable")

    await harness.node(network, "zed", hang)
    await eventually(lambda: _asked(network, 4))
    started = time.monotonic()
    response = await network.client.post("/search-model", json={"model_id": "mnist-cnn"})
    elapsed = time.monotonic() - started
    assert response.json() == [["alice", "http://alice:5000"], ["bob", "http://bob:5000"]]
    assert counts(response) == ("4", "3")
    assert SEARCH_TIMEOUT_S * 0.9 <= elapsed < SEARCH_TIMEOUT_S + 1.0
    never.set()


async def _asked(gateway: Gateway, count: int) -> bool:
    response = await gateway.client.get("/search-available-models")
    return response.headers["x-grid-nodes-asked"] == str(count)


class GarbageNode(GridNode):
    """Answers every query with bytes that are not JSON."""

    async def _on_query(self, message) -> None:
        properties = message.header.properties  # the SDK consumes through aiormq
        await self.bus.fast.default_exchange.publish(
            aio_pika.Message(b"\xff\x00 not json", correlation_id=properties.correlation_id),
            routing_key=properties.reply_to)


async def test_garbage_node_is_ignored(harness: Harness, network: Gateway, settings) -> None:
    from shared.settings import NodeSettings

    node = GarbageNode(settings(NodeSettings, gateway_url=network.api.url), "junk",
                       "http://junk:5000", lambda *_: None)
    harness._stoppers.append(node.stop)
    await node.start()
    await eventually(lambda: _asked(network, 4))
    response = await network.client.get("/search-available-tags")
    assert response.status_code == 200
    assert response.json() == ["#cifar10", "#labels", "#mnist", "#test", "#text", "#train"]
    assert counts(response) == ("4", "3")
    dropped = network.searches[0].metrics.registry.get_sample_value(
        "grid_search_replies_dropped_total", {"reason": "malformed"})
    assert dropped >= 1


async def test_node_that_leaves_is_not_asked(network: Gateway, harness: Harness) -> None:
    node = await harness.node(network, "dave", {"models": ["dave-model"]})
    await network.wait_search_sees(4)
    assert "dave-model" in (await network.client.get("/search-available-models")).json()
    await node.stop(leave=True)
    await network.wait_search_sees(3)
    assert "dave-model" not in (await network.client.get("/search-available-models")).json()


async def test_node_that_never_spoke_on_the_bus_is_not_waited_for(network: Gateway) -> None:
    body = {"node-id": "silent", "node-address": "http://silent:5000"}
    assert (await network.client.post("/join", json=body)).status_code == 200
    assert "silent" in (await network.client.get("/connected-nodes")).json()["grid-nodes"]
    started = time.monotonic()
    response = await network.client.get("/search-available-models")
    assert counts(response) == ("3", "3")
    assert time.monotonic() - started < SEARCH_TIMEOUT_S


async def test_reply_from_a_node_that_never_joined_is_not_counted(
        harness: Harness, amqp_url: str, namespace: str) -> None:
    """A rogue consumer on the broadcast exchange answers as mallory, who never joined.

    Node dave answers each search only once the rogue's reply is in the reply
    queue (confirmed by the broker), so every search is still open when it is
    read: it is judged, never merely late. No cache and no index, so that every
    search is a broadcast the rogue hears. (A rogue answering as a registered
    node races that node's own reply in the open mode; GRID_VERIFY_NODE_USER
    stops it: tests/test_node_identity.py.)
    """
    direct = {"search_timeout_s": 5.0, "search_cache": False, "search_index": False}
    network = await harness.gateway(search=direct, search_cache=False)
    rogue_replied = asyncio.Condition()
    rogue_count = dave_count = 0

    async def dave(node_id: str, query: NodeQuery) -> NodeReply:
        nonlocal dave_count
        dave_count += 1
        async with rogue_replied:
            await asyncio.wait_for(rogue_replied.wait_for(lambda: rogue_count >= dave_count),
                                   WAIT_S)
        return NodeReply(node_id=node_id, models=["dave-model"])

    for name in ("alice", "bob"):
        await harness.node(network, name, inventory(name))
    await harness.node(network, "dave", dave, join=True)
    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()  # with publisher confirms
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(await declare_broadcast(channel, Names(namespace)))

        async def rogue(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal rogue_count
            reply = NodeReply(node_id="mallory", models=["evil-model"])
            await channel.default_exchange.publish(
                aio_pika.Message(codec.dumps(reply), correlation_id=message.correlation_id),
                routing_key=message.reply_to)
            async with rogue_replied:
                rogue_count += 1
                rogue_replied.notify_all()

        await queue.consume(rogue, no_ack=True)
        await network.wait_search_sees(3)
        responses = [await network.client.get("/search-available-models") for _ in range(5)]
    assert all(counts(response) == ("3", "3") for response in responses)
    assert not any("evil-model" in response.json() for response in responses)
    search = network.searches[0].metrics.registry
    # One per search at least (the wait above made some searches too).
    assert search.get_sample_value("grid_search_replies_dropped_total",
                                   {"reason": "unexpected"}) >= 5


async def test_fifty_concurrent_searches(network: Gateway) -> None:
    requests = []
    for i in range(50):
        if i % 3 == 0:
            requests.append(("/search-model", {"model_id": "mnist-cnn"},
                             [["alice", "http://alice:5000"], ["bob", "http://bob:5000"]]))
        elif i % 3 == 1:
            requests.append(("/search", {"query": ["#text"]}, [["carol", "http://carol:5000"]]))
        else:
            requests.append(("/search-model", {"model_id": f"m{i}"}, []))
    responses = await asyncio.gather(
        *(network.client.post(path, json=body) for path, body, _ in requests))
    for (_, _, expected), response in zip(requests, responses, strict=True):
        assert response.status_code == 200
        assert response.json() == expected
        assert counts(response) == ("3", "3")


async def test_identical_searches_in_flight_share_one_broadcast(
        harness: Harness, network: Gateway) -> None:
    metrics = network.searches[0].metrics.registry

    def coalesced() -> float:
        return metrics.get_sample_value("grid_search_coalesced_total") or 0.0

    async def gate(node_id: str, query: NodeQuery) -> NodeReply:
        # Keeps the first search in flight until a second joined it (bounded by the
        # search deadline), so that it cannot be answered and cached before the rest arrive.
        with contextlib.suppress(AssertionError):
            await eventually(lambda: _true(query.op != "search_tags" or coalesced() >= 1),
                             within=SEARCH_TIMEOUT_S / 2, interval=0.005)
        return NodeReply(node_id=node_id, match=False)

    await harness.node(network, "gate", gate)
    await eventually(lambda: _asked(network, 4))
    body = {"query": ["#mnist"]}
    responses = await asyncio.gather(*(network.client.post("/search", json=body)
                                       for _ in range(30)))
    assert {str(response.json()) for response in responses} == {
        str([["alice", "http://alice:5000"], ["bob", "http://bob:5000"]])}
    assert coalesced() >= 1


async def _true(value: bool) -> bool:
    return value


class FloodNode(GridNode):
    """Answers every query 300 times over."""

    async def _on_query(self, message) -> None:
        reply = codec.dumps(NodeReply(node_id=self.node_id, models=["flood-model"], match=True))
        properties = message.header.properties
        for _ in range(300):
            await self.bus.fast.default_exchange.publish(
                aio_pika.Message(reply, correlation_id=properties.correlation_id),
                routing_key=properties.reply_to)


async def test_flooding_node_is_counted_once(harness: Harness, network: Gateway, settings) -> None:
    from shared.settings import NodeSettings

    node = FloodNode(settings(NodeSettings, gateway_url=network.api.url), "flood",
                     "http://flood:5000", lambda *_: None)
    harness._stoppers.append(node.stop)
    await node.start()
    await eventually(lambda: _asked(network, 4))
    for _ in range(5):
        response = await network.client.post("/search-model", json={"model_id": "mnist-cnn"})
        assert response.json() == [["alice", "http://alice:5000"], ["bob", "http://bob:5000"],
                                   ["flood", "http://flood:5000"]]
        assert counts(response) == ("4", "4")
    models = (await network.client.get("/search-available-models")).json()
    assert models.count("flood-model") == 1
    metrics = network.searches[0].metrics.registry

    async def extra_replies_dropped() -> bool:
        return sum(metrics.get_sample_value("grid_search_replies_dropped_total",
                                            {"reason": reason}) or 0
                   for reason in ("late", "unexpected")) >= 299 * 6

    await eventually(extra_replies_dropped)


async def test_a_search_for_given_nodes_names_each_node_and_is_not_broadcast(
        harness: Harness, network: Gateway, amqp_url: str) -> None:
    await harness.node(network, "spy",
                       lambda node_id, _: NodeReply(node_id=node_id, models=["spy", "spy"]))
    await network.wait_search_sees(4)
    worker = network.searches[0]
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        tap = await channel.declare_queue(exclusive=True, auto_delete=True)
        await tap.bind(worker.names.broadcast_exchange)
        result = await worker.registry.call(
            worker.names.search_queue, SEARCH,
            SearchRequest(op="list_models", nodes=["spy", "alice", "nobody"]), SearchResult, 5)
        # Asked on their own queues: the broker routed nothing to the broadcast exchange.
        assert await tap.get(fail=False) is None
    plain = await worker.registry.call(worker.names.search_queue, SEARCH,
                                       SearchRequest(op="list_models"), SearchResult, 5)
    assert result.by_node == {"spy": ["spy"], "alice": ["mnist-cnn", "toy-linear"]}
    assert (result.asked, result.answered) == (2, 2)  # "nobody" is no live node
    assert plain.by_node == {} and set(result.names) < set(plain.names)
    # What reaches a node is the NodeQuery alone.
    assert SearchRequest(op="list_models", nodes=["spy"]).node_query() == {
        "op": "list_models", "model_id": None, "tags": None}


class HeaderNode(GridNode):
    """A node that keeps the headers of every query it receives, and answers as alice does."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.headers: list[dict] = []
        self.routing_keys: list[str] = []

    async def _on_query(self, message) -> None:
        self.headers.append(dict(message.header.properties.headers or {}))
        self.routing_keys.append(message.delivery.routing_key)
        await super()._on_query(message)


async def test_nodes_asked_directly_each_get_the_query_and_see_no_other_node(
        harness: Harness, network: Gateway, settings) -> None:
    from shared.settings import NodeSettings

    nodes = [HeaderNode(settings(NodeSettings, gateway_url=network.api.url), name,
                        f"http://{name}:5000", lambda node_id, _: NodeReply(
                            node_id=node_id, models=[node_id]))
             for name in ("h1", "h2")]
    for node in nodes:
        harness._stoppers.append(node.stop)
        await node.start()
    await network.wait_search_sees(5)
    worker = network.searches[0]
    for node in nodes:
        node.headers.clear()  # the searches that saw them join were broadcasts
        node.routing_keys.clear()
    result = await worker.registry.call(
        worker.names.search_queue, SEARCH,
        SearchRequest(op="list_models", nodes=["h1", "h2"]), SearchResult, 5)
    assert result.by_node == {"h1": ["h1"], "h2": ["h2"]}
    # Each got the query (one publish, routed to both queues by BCC), without the BCC list.
    assert all(len(node.headers) == 1 and "BCC" not in node.headers[0]
               and "x-deadline-ms" in node.headers[0] for node in nodes)
    assert [node.routing_keys for node in nodes] == [[""], [""]]  # no other node's queue


def test_bcc_batches_keep_every_header_within_a_frame() -> None:
    from services.search.worker import BCC_MAX_BYTES, bcc_batches

    queues = [f"grid.node.{'x' * 120}-{n}" for n in range(2500)]  # 10,000 nodes' quarter
    batches = bcc_batches(queues)
    assert [queue for batch in batches for queue in batch] == queues
    assert len(batches) > 1
    assert all(sum(len(queue) + 5 for queue in batch) <= BCC_MAX_BYTES for batch in batches)
    assert bcc_batches(["one"]) == [["one"]]
