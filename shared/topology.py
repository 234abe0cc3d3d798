"""Every queue and exchange name, built from the namespace, and how each is declared.

All processes declare the objects they use with the same arguments (declaring
is idempotent only when the arguments agree), so the declarations live here.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

# Routing keys on the events exchange.
HEARTBEAT_KEY = "heartbeat.{node_id}"
EVENT_KEY = "node.{kind}"


@dataclass(frozen=True)
class Names:
    """Queue and exchange names of one gateway namespace."""

    namespace: str

    @property
    def registry_queue(self) -> str:
        return f"{self.namespace}.registry"

    @property
    def search_queue(self) -> str:
        return f"{self.namespace}.search"

    @property
    def broadcast_exchange(self) -> str:
        return f"{self.namespace}.broadcast"

    @property
    def events_exchange(self) -> str:
        return f"{self.namespace}.events"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.namespace}.dlx"

    @property
    def dead_letter_queue(self) -> str:
        return f"{self.namespace}.dead-letters"

    @property
    def bridge_queue(self) -> str:
        """The HTTP bridges' shared broadcast queue (competing consumers)."""
        return f"{self.namespace}.bridge"

    def node_queue(self, node_id: str) -> str:
        return f"{self.namespace}.node.{node_id}"

    def reply_queue(self, owner: str, unique: str) -> str:
        return f"{self.namespace}.reply.{owner}.{unique}"

    def work_queues(self) -> tuple[str, str]:
        return (self.registry_queue, self.search_queue)


async def declare_dead_letters(channel: AbstractChannel, names: Names) -> AbstractExchange:
    """The exchange and queue that rejected (poison) messages end up in."""
    dlx = await channel.declare_exchange(
        names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await channel.declare_queue(
        names.dead_letter_queue, durable=True, arguments={"x-max-length": 10_000}
    )
    await queue.bind(dlx)
    return dlx


def work_queue_arguments(names: Names) -> dict:
    """Arguments of a durable request queue: rejected messages are dead-lettered."""
    return {"x-dead-letter-exchange": names.dead_letter_exchange}


async def declare_work_queue(channel: AbstractChannel, names: Names, name: str) -> AbstractQueue:
    """A durable request queue whose rejected messages go to the dead-letter queue."""
    await declare_dead_letters(channel, names)
    return await channel.declare_queue(name, durable=True, arguments=work_queue_arguments(names))


async def declare_broadcast(channel: AbstractChannel, names: Names) -> AbstractExchange:
    return await channel.declare_exchange(
        names.broadcast_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )


async def declare_events(channel: AbstractChannel, names: Names) -> AbstractExchange:
    return await channel.declare_exchange(
        names.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
    )


def node_queue_arguments(message_ttl_s: float) -> dict:
    """Arguments of a node's queue (transient): TTL, a length cap, expiry when unused."""
    return {
        "x-message-ttl": int(message_ttl_s * 1000),
        "x-max-length": 1000,
        "x-overflow": "drop-head",
        "x-expires": 600_000,
    }


async def declare_node_queue(
    channel: AbstractChannel, names: Names, node_id: str, message_ttl_s: float
) -> AbstractQueue:
    """A node's own queue, bound to the broadcast exchange.

    Broadcasts older than the TTL are dropped unread, the queue is capped so a
    dead node cannot pile up work, and it disappears after ten idle minutes.
    """
    queue = await channel.declare_queue(
        names.node_queue(node_id), durable=False, arguments=node_queue_arguments(message_ttl_s)
    )
    # Bound by name: the gateway declares the exchange; a node needs no right to.
    await queue.bind(names.broadcast_exchange)
    return queue


# The bridge queue's arguments are fixed (not settings): every bridge must declare
# the queue exactly alike. Stale broadcasts are dropped unread, as in a node queue.
BRIDGE_QUEUE_ARGUMENTS = {"x-message-ttl": 10_000, "x-max-length": 1000,
                          "x-overflow": "drop-head"}


async def declare_bridge_queue(channel: AbstractChannel, names: Names) -> AbstractQueue:
    """The queue all HTTP bridges share, bound to the broadcast exchange.

    One copy of each broadcast goes to one bridge. Transient and auto-deleted:
    while no bridge runs, no copies pile up.
    """
    queue = await channel.declare_queue(names.bridge_queue, durable=False, auto_delete=True,
                                        arguments=BRIDGE_QUEUE_ARGUMENTS)
    await queue.bind(names.broadcast_exchange)
    return queue


async def delete_namespace(channel: AbstractChannel, names: Names) -> None:
    """Remove the durable objects of a namespace (used by test teardown)."""
    for queue in (*names.work_queues(), names.dead_letter_queue):
        await channel.queue_delete(queue)
    for exchange in (
        names.broadcast_exchange,
        names.events_exchange,
        names.dead_letter_exchange,
    ):
        await channel.exchange_delete(exchange)
