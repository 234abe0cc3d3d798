"""Every queue and exchange name, built from the namespace, and how each is declared.

All processes declare the objects they use with the same arguments (declaring
is idempotent only when the arguments agree), so the declarations live here.

The durable work queues and the dead-letter queue take the queue type of
``GRID_QUEUE_TYPE`` (quorum: replicated, for a cluster). The broadcast
exchange's node queues, the reply queues and the event queues are per
process and short-lived: they stay classic and unreplicated on any cluster,
living on the node their owner is connected to and re-declared by it when it
fails over to another.
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

# Routing keys on the events exchange.
HEARTBEAT_KEY = "heartbeat.{node_id}"
EVENT_KEY = "node.{kind}"
# The liveness owner's batched membership deltas (what every other process follows).
DELTA_KEY = "membership.delta"
QUEUE_TYPES = ("classic", "quorum")


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
    def replies_exchange(self) -> str:
        """Secure mode: the direct exchange node replies travel through (key: the reply queue).

        Only the search worker's node-reply queue is bound to it, so a node
        allowed to write here reaches nothing else (docs/security.md).
        """
        return f"{self.namespace}.replies"

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

    @property
    def liveness_queue(self) -> str:
        """The heartbeats' one reader: exclusive to the registry worker owning liveness."""
        return f"{self.namespace}.liveness"

    def node_queue(self, node_id: str) -> str:
        return f"{self.namespace}.node.{node_id}"

    def reply_queue(self, owner: str, unique: str) -> str:
        return f"{self.namespace}.reply.{owner}.{unique}"

    def work_queues(self) -> tuple[str, str]:
        return (self.registry_queue, self.search_queue)


def queue_type_arguments(queue_type: str) -> dict:
    """``x-queue-type`` of a durable queue: quorum queues are replicated across a cluster.

    A classic queue is declared without the argument, exactly as before the
    setting existed, so that queues already on a broker keep matching.
    """
    if queue_type not in QUEUE_TYPES:
        raise ValueError(f"unknown queue type {queue_type!r}")
    return {} if queue_type == "classic" else {"x-queue-type": queue_type}


class QueueMismatch(RuntimeError):
    """A durable queue exists on the broker with other arguments than this process declares."""


async def declare_durable_queue(channel: AbstractChannel, name: str,
                                arguments: dict) -> AbstractQueue:
    """Declare a durable queue, saying plainly why when the broker refuses its arguments.

    The usual cause is a queue declared with another ``GRID_QUEUE_TYPE`` (a queue's
    type cannot change): every process of a gateway must use the same one, and
    switching an existing gateway means deleting its durable queues first.
    """
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except aio_pika.exceptions.ChannelPreconditionFailed as exc:
        raise QueueMismatch(
            f"queue {name} exists on the broker with other arguments than {arguments} "
            f"(another GRID_QUEUE_TYPE?); see docs/operations.md, 'Changing the queue "
            f"type': {exc}") from None


def dead_letter_queue_arguments(queue_type: str = "classic") -> dict:
    """Arguments of the dead-letter queue: capped, oldest dropped first (both queue types)."""
    return {"x-max-length": 10_000, **queue_type_arguments(queue_type)}


async def declare_dead_letters(channel: AbstractChannel, names: Names,
                               queue_type: str = "classic") -> AbstractExchange:
    """The exchange and queue that rejected (poison) messages end up in."""
    dlx = await channel.declare_exchange(
        names.dead_letter_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )
    queue = await declare_durable_queue(channel, names.dead_letter_queue,
                                        dead_letter_queue_arguments(queue_type))
    await queue.bind(dlx)
    return dlx


def work_queue_arguments(names: Names, queue_type: str = "classic") -> dict:
    """Arguments of a durable request queue: rejected messages are dead-lettered.

    Everything a work queue relies on behaves alike on both types (checked on
    RabbitMQ 3.10): a request's ``expiration`` (its deadline), dead-lettering of
    rejected requests, redelivery of unacknowledged ones, publisher confirms
    and ``mandatory`` returns.
    """
    return {"x-dead-letter-exchange": names.dead_letter_exchange,
            **queue_type_arguments(queue_type)}


async def declare_work_queue(channel: AbstractChannel, names: Names, name: str,
                             queue_type: str = "classic") -> AbstractQueue:
    """A durable request queue whose rejected messages go to the dead-letter queue."""
    await declare_dead_letters(channel, names, queue_type)
    return await declare_durable_queue(channel, name, work_queue_arguments(names, queue_type))


async def declare_broadcast(channel: AbstractChannel, names: Names) -> AbstractExchange:
    return await channel.declare_exchange(
        names.broadcast_exchange, aio_pika.ExchangeType.FANOUT, durable=True
    )


async def declare_replies(channel: AbstractChannel, names: Names) -> AbstractExchange:
    return await channel.declare_exchange(
        names.replies_exchange, aio_pika.ExchangeType.DIRECT, durable=True
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
        names.replies_exchange,
        names.dead_letter_exchange,
    ):
        await channel.exchange_delete(exchange)
