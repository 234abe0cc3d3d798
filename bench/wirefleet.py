"""Simulated grid nodes on :mod:`bench.wire`: the node protocol at a fraction of the SDK's CPU.

Each node is what a real one is on the bus: its own queue bound to the
broadcast exchange, a no-ack consumer, an answer computed from its inventory
(:meth:`Inventory.answer`, as the SDK's demo node does) and published to the
query's ``reply_to`` with its ``correlation_id`` and the broker-checked
``user_id``, heartbeats on the events exchange, and a join over HTTP. Only the
client library differs. Every node of a process receives the same broadcast,
so its decoded query and reply properties are computed once per broadcast.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import httpx
from pamqp import commands
from pamqp.decode import field_table

from bench import inventory as inv
from bench.wire import WireConnection, properties
from services.node.inventory import Inventory
from services.node.sdk import post_join
from shared import codec
from shared.contracts import Heartbeat, NodeQuery
from shared.errors import InvalidRequest
from shared.logs import REQUEST_ID_HEADER
from shared.rpc import expired
from shared.settings import NodeSettings
from shared.topology import HEARTBEAT_KEY, Names, node_queue_arguments

BROADCASTS_KEPT = 256
HEARTBEAT_SLICES = 10


@dataclass
class SimNode:
    node_id: str
    address: str
    inventory: Inventory
    hung: bool
    channel: int
    answered: int = 0


@dataclass(frozen=True)
class Broadcast:
    """One broadcast as every node of the process sees it."""

    query: NodeQuery
    reply_properties: bytes
    headers: dict


class WireFleet:
    """Nodes ``first .. first + count - 1`` of a fleet of ``total``, on one connection."""

    def __init__(self, settings: NodeSettings, first: int, count: int, total: int,
                 hung: set[int], channels: int = 2) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.channels = channels
        self.user = settings.amqp_user
        self.nodes = {
            f"n{index}": SimNode(inv.node_id(index), inv.node_address(index),
                                 inv.inventory(index, total), index in hung,
                                 1 + index % channels)
            for index in range(first, first + count)
        }
        self.malformed = 0
        self._broadcasts: dict[str, Broadcast | None] = {}
        self._connection: WireConnection | None = None
        self._heartbeat: asyncio.Task | None = None

    async def start(self, join_concurrency: int) -> None:
        """Connect, subscribe every node, join them all over HTTP, start heartbeats."""
        connection = await WireConnection.open(
            self.settings.amqp_url, self._on_delivery, f"bench-wire-fleet-{self.user}",
            self.settings.connect_timeout_s)
        self._connection = connection
        for channel in range(1, self.channels + 1):
            await connection.open_channel(channel)
        await connection.call(1, commands.Exchange.Declare(
            exchange=self.names.events_exchange, exchange_type="topic", passive=True))
        await asyncio.gather(*(self._subscribe_channel(c) for c in range(1, self.channels + 1)))
        await self._join_all(join_concurrency)
        self._heartbeat = asyncio.create_task(self._heartbeat_forever())

    async def stop(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        if self._connection is not None:
            await self._connection.close()

    async def _subscribe_channel(self, channel: int) -> None:
        connection = self._connection
        arguments = node_queue_arguments(self.settings.node_queue_ttl_s)
        for tag, node in self.nodes.items():
            if node.channel != channel:
                continue
            queue = self.names.node_queue(node.node_id)
            await connection.call(channel, commands.Queue.Declare(queue=queue,
                                                                  arguments=arguments))
            await connection.call(channel, commands.Queue.Bind(
                queue=queue, exchange=self.names.broadcast_exchange, routing_key=""))
            await connection.call(channel, commands.Basic.Consume(
                queue=queue, consumer_tag=tag, no_ack=True))

    async def _join_all(self, concurrency: int) -> None:
        gate = asyncio.Semaphore(concurrency)
        async with httpx.AsyncClient(base_url=self.settings.gateway_url, timeout=10) as http:
            async def join(node: SimNode) -> None:
                async with gate:
                    await post_join(http, self.settings, node.node_id, node.address)

            await asyncio.gather(*(join(node) for node in self.nodes.values()))

    async def _heartbeat_forever(self) -> None:
        """Every node beats once per ``heartbeat_s``, a tenth of them at a time."""
        nodes = list(self.nodes.values())
        beats = [(node.channel, HEARTBEAT_KEY.format(node_id=node.node_id),
                  codec.dumps(Heartbeat(node_id=node.node_id))) for node in nodes]
        props = properties(codec.CONTENT_TYPE, user_id=self.user)
        exchange = self.names.events_exchange
        while True:
            for part in range(HEARTBEAT_SLICES):
                for channel, key, body in beats[part::HEARTBEAT_SLICES]:
                    self._connection.publish(channel, exchange, key, props, body)
                await asyncio.sleep(self.settings.heartbeat_s / HEARTBEAT_SLICES)

    # --- the hot path ---------------------------------------------------------------

    def _on_delivery(self, channel: int, tag: str, reply_to: str, correlation_id: str,
                     headers: bytes, body: bytes) -> None:
        node = self.nodes.get(tag)
        if node is None or node.hung or not reply_to:
            return
        broadcast = self._broadcast(correlation_id, headers, body)
        if broadcast is None or expired(broadcast.headers):
            return
        reply = node.inventory.answer(node.node_id, broadcast.query)
        self._connection.publish(channel, "", reply_to, broadcast.reply_properties,
                                 codec.dumps(reply))
        node.answered += 1

    def _broadcast(self, correlation_id: str, headers: bytes, body: bytes) -> Broadcast | None:
        """The decoded broadcast, once per correlation id; None when it is malformed."""
        if correlation_id in self._broadcasts:
            return self._broadcasts[correlation_id]
        if len(self._broadcasts) >= BROADCASTS_KEPT:
            self._broadcasts.clear()
        try:
            query = codec.decode(NodeQuery, body)
            table = field_table(headers)[1] if headers else {}
            request = str(table.get(REQUEST_ID_HEADER, ""))
            broadcast = Broadcast(query, properties(codec.CONTENT_TYPE, correlation_id,
                                                    {REQUEST_ID_HEADER: request}, self.user),
                                  table)
        except (InvalidRequest, ValueError):
            self.malformed += 1
            broadcast = None
        self._broadcasts[correlation_id] = broadcast
        return broadcast
