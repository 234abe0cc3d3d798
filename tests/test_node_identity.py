"""Node identity on the bus: one broker user per node, checked through ``user_id``.

Each node connects with its own RabbitMQ user, whose permissions cover its
own queue, the broadcast exchange (read), its replies (the default
exchange) and its own heartbeat routing key. The broker stamps and checks
``user_id``; the gateway counts a reply or heartbeat only from the user
named like the node.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest

from shared import codec
from shared.contracts import Heartbeat, NodeReply
from shared.topology import Names
from tests.harness import Harness

VERIFY = {"verify_node_user": True}


async def rabbitmqctl(*args: str) -> None:
    process = await asyncio.create_subprocess_exec(
        "rabbitmqctl", "-q", *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, f"rabbitmqctl {args[0]} failed: {err.decode()}"


def url_for(amqp_url: str, user: str, password: str) -> str:
    parts = urlsplit(amqp_url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


@pytest.fixture
async def node_users(namespace: str) -> AsyncIterator[dict[str, str]]:
    """Broker users alice and mallory (named after their node ids), limited to their own node."""
    users = {name: f"{namespace}-{name}" for name in ("alice", "mallory")}
    password = uuid.uuid4().hex
    ns = namespace.replace(".", r"\.")
    try:
        for user in users.values():
            await rabbitmqctl("add_user", user, password)
            await rabbitmqctl(
                "set_permissions", "-p", "/", user,
                rf"^{ns}\.node\.{user}$",
                rf"^({ns}\.node\.{user}|{ns}\.events|amq\.default)$",
                rf"^({ns}\.node\.{user}|{ns}\.broadcast)$")
            await rabbitmqctl("set_topic_permissions", "-p", "/", user, f"{namespace}.events",
                              rf"^heartbeat\.{user}$", "^$")
        yield {**users, "password": password}
    finally:
        for user in users.values():
            await rabbitmqctl("delete_user", user)


async def test_replies_and_heartbeats_only_count_from_the_nodes_own_user(
        harness: Harness, amqp_url: str, namespace: str, node_users: dict[str, str]) -> None:
    alice, mallory, password = node_users["alice"], node_users["mallory"], node_users["password"]
    gateway = await harness.gateway(registry=VERIFY, search=VERIFY)
    await harness.node(gateway, alice, {"models": ["good-model"]},
                       amqp_url=url_for(amqp_url, alice, password))
    await gateway.wait_search_sees(1)

    connection = await aio_pika.connect(url_for(amqp_url, mallory, password))
    harness._stoppers.append(connection.close)
    channel = await connection.channel()
    queue = await channel.declare_queue(Names(namespace).node_queue(mallory))
    await queue.bind(Names(namespace).broadcast_exchange)

    async def impersonate(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        reply = NodeReply(node_id=alice, models=["evil-model"])
        await channel.default_exchange.publish(
            aio_pika.Message(codec.dumps(reply), correlation_id=message.correlation_id,
                             user_id=mallory),
            routing_key=message.reply_to)

    await queue.consume(impersonate, no_ack=True)
    for _ in range(3):
        response = await gateway.client.get("/search-available-models")
        assert response.json() == ["good-model"]
    for i in range(3):  # each a broadcast: an encrypted-model search asks every node
        response = await gateway.client.post("/search-encrypted-model",
                                             json={"model_id": f"absent-{i}"})
        assert response.json() == {}
    impostors = gateway.searches[0].metrics.registry.get_sample_value(
        "grid_search_replies_dropped_total", {"reason": "impostor"})
    assert impostors >= 1


async def test_the_broker_refuses_a_node_posing_as_another(
        amqp_url: str, namespace: str, node_users: dict[str, str]) -> None:
    alice, mallory, password = node_users["alice"], node_users["mallory"], node_users["password"]
    names = Names(namespace)
    admin = await aio_pika.connect(amqp_url)
    async with admin:
        setup = await admin.channel()
        await setup.declare_exchange(names.events_exchange, aio_pika.ExchangeType.TOPIC,
                                     durable=True)
        await setup.declare_exchange(names.broadcast_exchange, aio_pika.ExchangeType.FANOUT,
                                     durable=True)
        connection = await aio_pika.connect(url_for(amqp_url, mallory, password))
        async with connection:
            beat = aio_pika.Message(codec.dumps(Heartbeat(node_id=alice)), user_id=alice)
            channel = await connection.channel()
            with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
                await channel.default_exchange.publish(beat, routing_key="anything")
            channel = await connection.channel()  # its own key only on the events exchange
            events = await channel.get_exchange(names.events_exchange, ensure=False)
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await events.publish(aio_pika.Message(b"{}"), routing_key=f"heartbeat.{alice}")
            channel = await connection.channel()  # and it cannot remove the gateway's exchanges
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await channel.exchange_delete(names.broadcast_exchange)
