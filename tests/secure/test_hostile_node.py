"""A hostile node in secure mode: everything mallory tries is refused or ignored.

A private broker with the management plugin (tests/secure/managed_broker.py); the
gateway runs with GRID_NODE_AUTH on, nodes are enrolled through the admin
routes, and mallory uses exactly the credentials her enrollment gave her.
Each attempt is refused by the broker (the channel is closed with
ACCESS_REFUSED or PRECONDITION_FAILED) or ignored by the gateway; after each,
alice is still registered and answering, and the gateway keeps serving.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aio_pika
import aiormq
import httpx
import pytest
from aio_pika.abc import AbstractChannel

from services.client import NodeCredentials
from shared import codec
from shared.contracts import (
    DELETE,
    JOIN,
    DeleteRequest,
    Heartbeat,
    JoinRequest,
    MembershipDelta,
    MembershipEvent,
    NodeReply,
    SearchRequest,
)
from tests.harness import eventually
from tests.secure.gateway import ADMIN, Secure

ALICE = {"models": ["alice-model"], "tensors": [{"id": "a1", "tags": ["#alice"]}]}
MALLORY = {"models": ["mallory-model"]}
REFUSED = (aiormq.exceptions.ChannelAccessRefused, aiormq.exceptions.ChannelPreconditionFailed)
Attempt = Callable[[AbstractChannel], Awaitable[object]]


async def refused(connection: aio_pika.abc.AbstractConnection, attempt: Attempt,
                  what: str = "") -> None:
    """The broker refuses ``attempt`` (on a fresh channel with publisher confirms)."""
    channel = await connection.channel(publisher_confirms=True)
    with pytest.raises(REFUSED):
        await attempt(channel)
        pytest.fail(f"not refused: {what}")


async def alice_unharmed(secure: Secure, alice: NodeCredentials) -> None:
    """Alice is registered, live and answering; the gateway serves searches."""
    client = secure.gateway.client
    assert alice.node_id in (await client.get("/connected-nodes")).json()["grid-nodes"]
    response = await client.post("/search", json={"query": ["#alice"]})
    assert response.json() == [[alice.node_id, f"http://{alice.node_id}:5000"]]
    assert "mallory-model" not in (await client.get("/search-available-models")).json()


async def two_nodes(secure: Secure) -> tuple[NodeCredentials, NodeCredentials]:
    """A secure gateway; alice serving; mallory enrolled (not running a node)."""
    await secure.start()
    alice, mallory = await secure.enroll("alice"), await secure.enroll("mallory")
    await secure.node(alice, ALICE)
    await secure.gateway.wait_search_sees(1)
    return alice, mallory


def request(op: str, body: object, reply_to: str = "nowhere") -> aio_pika.Message:
    return aio_pika.Message(codec.dumps(body), type=op, reply_to=reply_to, correlation_id="x")


async def test_a_node_cannot_reach_the_work_queues(secure: Secure) -> None:
    alice, mallory = await two_nodes(secure)
    names = secure.names
    delete = request(DELETE, DeleteRequest(node_id=alice.node_id,
                                           node_address=f"http://{alice.node_id}:5000"))
    join = request(JOIN, JoinRequest(node_id="intruder", node_address="http://x:1",
                                     request_id="r1"))
    search = request("search", SearchRequest(op="list_models"))
    async with await aio_pika.connect(mallory.amqp_url) as connection:
        for message, queue in ((delete, names.registry_queue), (join, names.registry_queue),
                               (search, names.search_queue)):
            await refused(connection, lambda ch, m=message, q=queue:
                          ch.default_exchange.publish(m, routing_key=q))
        # Through the exchanges she may write to, a work queue is out of reach (unroutable).
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.get_exchange(names.replies_exchange, ensure=False)
        result = await replies.publish(delete, routing_key=names.registry_queue,
                                       mandatory=False)
        assert result is not None  # confirmed, and routed nowhere
    await alice_unharmed(secure, alice)
    assert "intruder" not in (await secure.gateway.client.get("/connected-nodes")).json()[
        "grid-nodes"]


async def test_requests_from_a_broker_user_outside_the_gateway_are_dead_lettered(
        secure: Secure) -> None:
    """A user that may write to the default exchange (an old-style node user, here a
    bridge's): its delete reaches the registry, which dead-letters it unanswered."""
    await secure.start()
    alice = await secure.enroll("alice")
    await secure.node(alice, ALICE)
    await secure.gateway.wait_search_sees(1)
    bridge = await bridge_user(secure, "bridge")
    names, registry = secure.names, secure.gateway.registries[0]
    async with await aio_pika.connect(bridge["amqp-url"]) as connection:
        channel = await connection.channel()
        replies = await channel.declare_queue(f"{names.namespace}.reply.bridge.x",
                                              exclusive=True)
        delete = request(DELETE, DeleteRequest(node_id=alice.node_id,
                                               node_address=f"http://{alice.node_id}:5000"),
                         replies.name)
        await channel.default_exchange.publish(delete, routing_key=names.registry_queue)
        await eventually(lambda: settled(registry.server.refused == 1))
        assert await replies.get(fail=False) is None  # never answered
    assert registry.metrics.registry.get_sample_value(
        "grid_worker_refused_requests_total", {"service": "registry", "op": DELETE}) == 1
    async with await aio_pika.connect(secure.broker.url) as connection:
        dead = await (await connection.channel()).declare_queue(names.dead_letter_queue,
                                                                passive=True)
        assert dead.declaration_result.message_count == 1
    await alice_unharmed(secure, alice)


async def settled(value: bool) -> bool:
    return value


async def bridge_user(secure: Secure, name: str) -> dict:
    response = await secure.gateway.client.post(
        "/admin/bridge-user", json={"user": secure.id(name)},
        headers={"Authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_node_cannot_speak_in_another_nodes_name(secure: Secure) -> None:
    alice, mallory = await two_nodes(secure)
    names = secure.names
    search = secure.gateway.searches[0]
    beat = codec.dumps(Heartbeat(node_id=alice.node_id))
    left = codec.dumps(MembershipEvent(kind="left", node_id=alice.node_id))
    async with await aio_pika.connect(mallory.amqp_url) as connection:
        async def on_events(channel: AbstractChannel, body: bytes, key: str) -> None:
            events = await channel.get_exchange(names.events_exchange, ensure=False)
            await events.publish(aio_pika.Message(body), routing_key=key)

        await refused(connection, lambda ch: on_events(ch, beat, f"heartbeat.{alice.node_id}"))
        await refused(connection, lambda ch: on_events(ch, left, "node.left"))
        # Her own heartbeat key, naming alice in the body: ignored by the gateway.
        channel = await connection.channel()
        events = await channel.get_exchange(names.events_exchange, ensure=False)
        await events.publish(aio_pika.Message(beat, user_id=mallory.node_id),
                             routing_key=f"heartbeat.{mallory.node_id}")
        # A user_id not her own: the broker closes the channel.
        await refused(connection, lambda ch: ch.default_exchange.publish(
            aio_pika.Message(beat, user_id=alice.node_id), routing_key="x"))
        # Her own node, answering every query in alice's name through the replies exchange.
        queue = await channel.declare_queue(names.node_queue(mallory.node_id))
        await queue.bind(names.broadcast_exchange)
        replies = await channel.get_exchange(names.replies_exchange, ensure=False)

        async def impersonate(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            reply = NodeReply(node_id=alice.node_id, models=["mallory-model"])
            await replies.publish(aio_pika.Message(
                codec.dumps(reply), correlation_id=message.correlation_id,
                user_id=mallory.node_id), routing_key=message.reply_to)

        await queue.consume(impersonate, no_ack=True)
        for _ in range(3):
            await alice_unharmed(secure, alice)

        async def impostor_counted() -> bool:
            return (search.metrics.registry.get_sample_value(
                "grid_search_replies_dropped_total", {"reason": "impostor"}) or 0) >= 1

        await eventually(impostor_counted)
    await alice_unharmed(secure, alice)


async def test_a_node_cannot_slip_events_or_deltas_in_through_bcc(secure: Secure) -> None:
    """Her own heartbeat key, with more routing keys in CC/BCC: a broker before RabbitMQ 4.0.3
    checks topic permissions on the routing key alone, so the copies are routed; the gateway
    takes events and deltas only from its own broker users."""
    alice, mallory = await two_nodes(secure)
    names = secure.names
    owner = secure.gateway.registries[0].owner
    left = codec.dumps(MembershipEvent(kind="left", node_id=alice.node_id))
    delta = codec.dumps(MembershipDelta(epoch=owner.epoch, seq=owner.seq + 1,
                                        left=[alice.node_id]))
    async with await aio_pika.connect(mallory.amqp_url) as connection:
        channel = await connection.channel()
        events = await channel.get_exchange(names.events_exchange, ensure=False)
        for body, key in ((left, "node.left"), (delta, "membership.delta")):
            for header in ("CC", "BCC"):
                await events.publish(aio_pika.Message(body, user_id=mallory.node_id,
                                                      headers={header: [key]}),
                                     routing_key=f"heartbeat.{mallory.node_id}")
        await channel.close()
    followers = [secure.gateway.api.app.state.gateway.feed, secure.gateway.searches[0].feed]

    async def all_ignored() -> bool:
        return all(feed.ignored >= 2 for feed in followers)

    await eventually(all_ignored)
    assert alice.node_id in owner.nodes
    for _ in range(3):
        await alice_unharmed(secure, alice)


async def test_a_node_cannot_touch_another_nodes_queue_or_the_gateways_exchanges(
        secure: Secure) -> None:
    alice, mallory = await two_nodes(secure)
    names = secure.names
    theirs = names.node_queue(alice.node_id)
    query = aio_pika.Message(codec.dumps({"op": "list_models"}), reply_to="x")
    async with await aio_pika.connect(mallory.amqp_url) as connection:
        for number, attempt in enumerate((
            lambda ch: _consume(ch, theirs),
            lambda ch: _purge(ch, theirs),
            lambda ch: ch.queue_delete(theirs),
            lambda ch: ch.default_exchange.publish(query, routing_key=theirs),
            lambda ch: _publish_to(ch, names.broadcast_exchange, query),
            lambda ch: ch.declare_queue(names.node_queue(secure.id("someone-else"))),
            lambda ch: ch.exchange_delete(names.broadcast_exchange),
            lambda ch: ch.exchange_delete(names.replies_exchange),
            lambda ch: ch.exchange_delete(names.events_exchange),
            lambda ch: ch.queue_delete(names.registry_queue),
            lambda ch: _bind_own(ch, names, mallory, names.replies_exchange),
            lambda ch: _bind_own(ch, names, mallory, names.events_exchange),
        )):
            await refused(connection, attempt, f"attempt {number}")
    await alice_unharmed(secure, alice)


async def _consume(channel: AbstractChannel, queue: str) -> None:
    async def steal(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()

    await (await channel.get_queue(queue, ensure=False)).consume(steal)


async def _purge(channel: AbstractChannel, queue: str) -> None:
    await (await channel.get_queue(queue, ensure=False)).purge()


async def _publish_to(channel: AbstractChannel, exchange: str, message) -> None:
    await (await channel.get_exchange(exchange, ensure=False)).publish(message, routing_key="")


async def _bind_own(channel: AbstractChannel, names, mallory: NodeCredentials,
                    exchange: str) -> None:
    """Her own queue bound to an exchange she may not read: to overhear replies or events."""
    queue = await channel.declare_queue(names.node_queue(mallory.node_id))
    await queue.bind(exchange, routing_key="#")


async def test_over_http_a_node_token_acts_only_for_its_own_node(secure: Secure) -> None:
    alice, mallory = await two_nodes(secure)
    client = secure.gateway.client
    hers = {"Authorization": f"Bearer {mallory.token}"}
    as_alice = {"node-id": alice.node_id, "node-address": f"http://{alice.node_id}:5000"}
    forbidden = {"message": "This token may not act for this node id."}
    response = await client.request("DELETE", "/delete-node", json=as_alice, headers=hers)
    assert (response.status_code, response.json()) == (403, forbidden)
    response = await client.post("/join", json={**as_alice, "node-id": secure.id("new")},
                                 headers=hers)
    assert (response.status_code, response.json()) == (403, forbidden)
    assert (await client.post("/join", json=as_alice)).status_code == 401
    assert (await client.post("/admin/enroll", json={"node-id": "x"}, headers=hers)
            ).status_code == 401  # a node token is no admin token
    own = {"node-id": mallory.node_id, "node-address": "http://mallory:5000"}
    assert (await client.post("/join", json=own, headers=hers)).status_code == 200
    assert (await client.request("DELETE", "/delete-node", json=own, headers=hers)
            ).status_code == 200
    await alice_unharmed(secure, alice)


async def test_after_revocation_nothing_of_the_node_works(secure: Secure) -> None:
    alice, mallory = await two_nodes(secure)
    node = await secure.node(mallory, MALLORY)
    await secure.gateway.wait_search_sees(2)
    client = secure.gateway.client
    assert await secure.operator.revoke(mallory.node_id) == "Revoked."
    # Gone at once: not listed by the API that revoked her; not asked by a search once the
    # owner's delta (published before the revocation's reply) is in, which is bounded here.
    assert mallory.node_id not in (await client.get("/connected-nodes")).json()["grid-nodes"]

    async def searched_without_her() -> httpx.Response | None:
        response = await client.get("/search-available-models")
        return response if response.headers["x-grid-nodes-asked"] == "1" else None

    response = await eventually(searched_without_her, within=2.0)
    assert response.json() == ["alice-model"]
    # Her token is dead, and so is her broker user (her open connection was closed).
    own = {"node-id": mallory.node_id, "node-address": f"http://{mallory.node_id}:5000"}
    response = await client.post("/join", json=own,
                                 headers={"Authorization": f"Bearer {mallory.token}"})
    assert response.status_code == 401
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(mallory.amqp_url, timeout=5)
    await eventually(lambda: settled(not node.bus.ready))
    await alice_unharmed(secure, alice)


async def test_the_status_page_and_health_keep_serving(secure: Secure) -> None:
    alice, _ = await two_nodes(secure)
    for path in ("/healthz", "/readyz", "/status.json"):
        assert (await secure.gateway.client.get(path)).status_code == 200, path
    await alice_unharmed(secure, alice)
