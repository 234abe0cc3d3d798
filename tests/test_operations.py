"""Health, readiness, metrics, poison messages and graceful shutdown."""

from __future__ import annotations

import asyncio
import signal
import uuid

import aio_pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared import codec
from shared.contracts import NodeQuery, NodeReply
from shared.topology import Names
from tests.harness import Harness, eventually, spawn, stop_processes


async def test_readyz_follows_the_workers(harness: Harness) -> None:
    server = await harness.api()
    client = await harness.client(server)
    assert (await client.get("/healthz")).json() == {"status": "ok"}

    def reason_names(worker: str):
        async def check() -> bool:
            response = await client.get("/readyz")
            return response.status_code == 503 and worker in response.json()["reason"]

        return check

    await eventually(reason_names("registry"))
    await harness.registry()
    await eventually(reason_names("search"))
    await harness.search()

    async def ready() -> bool:
        return (await client.get("/readyz")).json() == {"status": "ready"}

    await eventually(ready)


async def test_metrics_after_traffic(harness: Harness) -> None:
    gateway = await harness.gateway()
    inventory = {"models": ["m"], "tensors": [{"id": "t", "tags": ["#a"]}]}
    await harness.node(gateway, "alice", inventory)
    await gateway.wait_search_sees(1)
    await gateway.client.post("/search", json={"query": ["#a"]})
    await gateway.client.post("/join", content=b"junk")
    await gateway.client.get("/nowhere/at/all")
    text = (await gateway.client.get("/metrics")).text
    assert 'grid_http_request_seconds_count{method="POST",route="/search",status="200"}' in text
    assert 'grid_http_request_seconds_count{method="POST",route="/join",status="400"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "/nowhere" not in text
    assert 'grid_api_rpc_seconds_count{op="search",outcome="ok"}' in text
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    asked = samples[("grid_api_search_nodes_total", (("outcome", "asked"),))]
    answered = samples[("grid_api_search_nodes_total", (("outcome", "answered"),))]
    assert asked == answered >= 1
    assert "grid_registry_nodes 1.0" in text
    assert "grid_registry_live_nodes 1.0" in text
    search = gateway.searches[0].metrics.registry
    assert search.get_sample_value("grid_search_nodes_total", {"outcome": "answered"}) >= 1
    registry = gateway.registries[0].metrics.registry
    assert registry.get_sample_value("grid_registry_nodes") == 1
    assert registry.get_sample_value("grid_registry_live_nodes") == 1


@pytest.mark.parametrize("queue", ["registry", "search"])
@pytest.mark.parametrize(
    ("body", "op"),
    [(b"\xff not json", "list"), (b'{"op": "nonsense"}', "search"), (b"{}", "no-such-op"),
     (b"[]", "join"), (b'{"node_id": 5}', "delete")],
)
async def test_poison_is_dead_lettered(harness: Harness, amqp_url: str, namespace: str,
                                       queue: str, body: bytes, op: str) -> None:
    gateway = await harness.gateway()
    names = Names(namespace)
    connection = await aio_pika.connect(amqp_url)
    harness._stoppers.append(connection.close)
    channel = await connection.channel()
    replies = await channel.declare_queue(exclusive=True)
    target = names.registry_queue if queue == "registry" else names.search_queue
    await channel.default_exchange.publish(
        aio_pika.Message(body, type=op, reply_to=replies.name, correlation_id="c1"),
        routing_key=target)
    reply = await replies.iterator(timeout=5).__anext__()
    await reply.ack()
    assert codec.loads(reply.body)["error"]["type"] == "invalid_request"
    dead = await channel.declare_queue(names.dead_letter_queue, passive=True)
    message = await eventually(lambda: dead.get(fail=False))
    assert message.body == body
    await message.ack()
    # the worker still serves
    assert (await gateway.client.get("/connected-nodes")).status_code == 200
    assert (await gateway.client.get("/search-available-tags")).status_code == 200


async def test_poison_on_the_broadcast_and_events_paths_harms_nothing(
        harness: Harness, amqp_url: str, namespace: str) -> None:
    """Node queues and event queues are no-ack: poison there is logged and dropped, not fatal."""
    # No cache and no index: the one search below reaches the node, and nothing else does.
    gateway = await harness.gateway(search={"search_cache": False, "search_index": False},
                                    search_cache=False)
    node = await harness.node(gateway, "alice", {"models": ["m"]})
    await gateway.wait_search_sees(1)
    answered_before = node.queries_answered
    names = Names(namespace)
    connection = await aio_pika.connect(amqp_url)
    harness._stoppers.append(connection.close)
    channel = await connection.channel()
    broadcast = await channel.get_exchange(names.broadcast_exchange)
    events = await channel.get_exchange(names.events_exchange)
    replies = await channel.declare_queue(exclusive=True)
    poison = [b"\xff not json", b"[]", b'{"op": "nonsense"}', b'{"op": "has_model"}']
    for body in poison:  # to every node queue, with and without a reply_to
        await broadcast.publish(aio_pika.Message(body, reply_to=replies.name), routing_key="")
        await broadcast.publish(aio_pika.Message(body), routing_key="")
    for body in poison:  # to the registry's and search worker's event queues
        await events.publish(aio_pika.Message(body), routing_key="heartbeat.alice")
        await events.publish(aio_pika.Message(body), routing_key="node.joined")
    # every consumer is still there and answers; the node answered none of the poison
    response = await gateway.client.post("/search-model", json={"model_id": "m"})
    assert response.json() == [["alice", "http://alice:5000"]]
    assert (await gateway.client.get("/connected-nodes")).json() == {"grid-nodes": ["alice"]}
    assert await replies.get(fail=False) is None
    assert node.queries_answered == answered_before + 1


async def test_sigterm_of_a_search_worker_loses_no_request(
        harness: Harness, amqp_url: str, namespace: str) -> None:
    """With requests in flight, SIGTERM one of two search workers: every request is answered."""
    gateway = await harness.gateway(searches=0, wait=False)
    workers = [spawn("services.search", amqp_url, namespace, GRID_SEARCH_TIMEOUT_S="5")
               for _ in range(2)]
    try:
        await gateway.wait_ready()
        received = []

        async def slow_answer(node_id: str, query: NodeQuery) -> NodeReply:
            received.append(query)
            await asyncio.sleep(0.3)  # the node's own work, so searches stay in flight
            return NodeReply(node_id=node_id, match=True)

        await harness.node(gateway, "alice", slow_answer)
        await gateway.wait_search_sees(1)
        requests = [asyncio.create_task(gateway.client.post(
            "/search-model", json={"model_id": f"m-{uuid.uuid4().hex}"})) for _ in range(40)]
        await eventually(lambda: _true(len(received) >= 10))  # both workers hold searches
        workers[0].send_signal(signal.SIGTERM)
        responses = await asyncio.gather(*requests)
        assert [response.status_code for response in responses] == [200] * 40
        assert all(response.json() == [["alice", "http://alice:5000"]] for response in responses)
        assert await asyncio.to_thread(workers[0].wait, 15) == 0
    finally:
        stop_processes(workers)


async def _true(value: bool) -> bool:
    return value
