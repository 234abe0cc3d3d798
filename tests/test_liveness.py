"""Node liveness: a silent node goes offline within the TTL and comes back when heard."""

from __future__ import annotations

import asyncio

import aio_pika

from shared import codec
from shared.contracts import MembershipEvent
from shared.topology import Names, declare_events
from tests.harness import Gateway, Harness, eventually

TTL_S = 1.0
FAST = {"node_ttl_s": TTL_S}
FAST_NODE = {"heartbeat_s": 0.2}


async def connected(gateway: Gateway) -> list[str]:
    return (await gateway.client.get("/connected-nodes")).json()["grid-nodes"]


async def asked(gateway: Gateway) -> int:
    response = await gateway.client.get("/search-available-models")
    return int(response.headers["x-grid-nodes-asked"])


async def test_killed_node_goes_offline_and_comes_back(
        harness: Harness, amqp_url: str, namespace: str) -> None:
    gateway = await harness.gateway(registry=FAST, search=FAST)
    events: asyncio.Queue[MembershipEvent] = asyncio.Queue()
    connection = await aio_pika.connect(amqp_url)
    harness._stoppers.append(connection.close)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(await declare_events(channel, Names(namespace)), routing_key="node.*")

    async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        events.put_nowait(codec.decode(MembershipEvent, message.body))

    await queue.consume(on_event, no_ack=True)

    await harness.node(gateway, "alice", {"models": ["a"]}, **FAST_NODE)
    node = await harness.node(gateway, "bob", {"models": ["b"]}, **FAST_NODE)
    await gateway.wait_search_sees(2)
    assert await connected(gateway) == ["alice", "bob"]

    await node.stop()  # bob dies: no more heartbeats, no delete
    await eventually(lambda: _equals(connected(gateway), ["alice"]), within=TTL_S * 5)
    assert await asked(gateway) == 1
    for _ in range(5):  # an offline node is never chosen to host
        assert (await gateway.client.get("/choose-model-host")).json() == [
            ["alice", "http://alice:5000"]]
    assert await _next_event(events, "offline") == "bob"

    await harness.node(gateway, "bob", {"models": ["b"]}, **FAST_NODE)  # restarts
    await eventually(lambda: _equals(connected(gateway), ["alice", "bob"]), within=TTL_S * 5)
    await gateway.wait_search_sees(2)
    assert await _next_event(events, "online") == "bob"


async def test_offline_node_stays_registered(harness: Harness) -> None:
    gateway = await harness.gateway(registry=FAST, search=FAST)
    node = await harness.node(gateway, "carol", {}, **FAST_NODE)
    await node.stop()
    await eventually(lambda: _equals(connected(gateway), []), within=TTL_S * 5)
    body = {"node-id": "carol", "node-address": "http://carol:5000"}
    # Still registered: a repeated join is a 409, and it does not count as heard.
    assert (await gateway.client.post("/join", json=body)).status_code == 409
    assert await connected(gateway) == []
    assert (await gateway.client.request("DELETE", "/delete-node", json=body)).status_code == 200
    assert (await gateway.client.post("/join", json=body)).status_code == 200
    assert await connected(gateway) == ["carol"]  # a successful join counts as heard


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def _next_event(events: asyncio.Queue[MembershipEvent], kind: str) -> str:
    async def find() -> str:
        while True:
            event = await events.get()
            if event.kind == kind:
                return event.node_id

    return await asyncio.wait_for(find(), TTL_S * 5)


async def test_a_follower_checks_it_is_current_and_reads_everything_only_when_it_is_not(
        harness: Harness) -> None:
    gateway = await harness.gateway(registry=FAST, search={**FAST, "membership_refresh_s": 0.2})
    await harness.node(gateway, "alice", {"models": ["m"]}, **FAST_NODE)
    owner, feed = gateway.registries[0].owner, gateway.searches[0].feed

    async def caught_up() -> bool:
        return feed.membership.synced and feed.membership.seq == owner.seq

    await eventually(caught_up)
    resyncs, checks = feed.resyncs, feed.checks
    await eventually(lambda: _true(feed.checks >= checks + 3))  # the periodic looks
    assert feed.resyncs == resyncs  # each answered "current": no snapshot sent
    owner.skip()  # a last delta lost, and nothing after it to show the gap
    await eventually(caught_up)
    assert feed.resyncs > resyncs  # the next look found the view behind and read it all


async def _true(value: bool) -> bool:
    return value
