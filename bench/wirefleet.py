"""Simulated grid nodes on :mod:`bench.wire`: the node protocol at a fraction of the SDK's CPU.

Each node is what a real one is on the bus: its own queue bound to the
broadcast exchange, a no-ack consumer, an answer computed from its inventory
(:meth:`Inventory.answer`, as the SDK's demo node does) and published to the
query's ``reply_to`` with its ``correlation_id`` and the broker-checked
``user_id``, heartbeats on the events exchange, and a join over HTTP. Only the
client library differs. Every node of a process receives the same broadcast,
so its decoded query and reply properties are computed once per broadcast.

Nodes announce their inventory version in heartbeats and replies, as the SDK
does (``versions=False`` leaves it out: nodes the gateway must ask every
time). They share one connection per process, on a few channels, or with
``per_node_connections`` each has its own, as real nodes on their own machines
do, at the broker's real cost per connection. ``churn`` changes one node's
inventory every interval (a tensor tagged ``#churn`` comes and goes, which no
benchmark query asks for) and announces it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from dataclasses import dataclass, field

from pamqp import commands
from pamqp.decode import field_table

from bench import inventory as inv
from bench.http import RawClient
from bench.wire import WireConnection, properties
from services.node.inventory import Inventory
from services.node.sdk import JoinRefused, asked_cadence
from shared import codec
from shared.contracts import Heartbeat, NodeQuery
from shared.errors import InvalidRequest
from shared.logs import REQUEST_ID_HEADER
from shared.rpc import expired
from shared.settings import NodeSettings
from shared.topology import HEARTBEAT_KEY, Names, node_queue_arguments

BROADCASTS_KEPT = 256
HEARTBEAT_SLICES = 10
OPENING_AT_ONCE = 32
# How long one node's join may take before the fleet gives up.
JOIN_TIMEOUT_S = 30.0


@dataclass
class SimNode:
    node_id: str
    address: str
    inventory: Inventory
    hung: bool
    channel: int
    versioned: bool = True
    connection: WireConnection | None = None
    answered: int = 0
    version: str | None = field(init=False, default=None)
    beat: bytes = field(init=False, default=b"")
    beat_key: str = field(init=False, default="")

    def __post_init__(self) -> None:
        self.beat_key = HEARTBEAT_KEY.format(node_id=self.node_id)
        self.serve(self.inventory)

    def serve(self, inventory: Inventory) -> None:
        """Answer from ``inventory`` from now on (the caller announces it)."""
        self.inventory = inventory
        self.version = inventory.version() if self.versioned else None
        self.beat = codec.dumps(Heartbeat(node_id=self.node_id, version=self.version))


@dataclass(frozen=True)
class Broadcast:
    """One broadcast as every node of the process sees it."""

    query: NodeQuery
    reply_properties: bytes
    headers: dict


class WireFleet:
    """Nodes ``first .. first + count - 1`` of a fleet of ``total``, on one connection."""

    def __init__(self, settings: NodeSettings, first: int, count: int, total: int,
                 hung: set[int], channels: int = 2, per_node_connections: bool = False,
                 versions: bool = True) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.channels = 1 if per_node_connections else channels
        self.per_node_connections = per_node_connections
        self.user = settings.amqp_user
        self.nodes = {
            f"n{index}": SimNode(inv.node_id(index), inv.node_address(index),
                                 inv.inventory(index, total), index in hung,
                                 1 + index % self.channels, versioned=versions)
            for index in range(first, first + count)
        }
        self._beat_properties = properties(codec.CONTENT_TYPE, user_id=self.user)
        self.malformed = 0
        self._broadcasts: dict[str, Broadcast | None] = {}
        self._connections: list[WireConnection] = []
        self._heartbeat: asyncio.Task | None = None
        self.heartbeat_s = settings.heartbeat_s
        self._churn: asyncio.Task | None = None

    async def start(self, join_concurrency: int) -> None:
        """Connect, subscribe every node, join them all over HTTP, start heartbeats."""
        if self.per_node_connections:
            gate = asyncio.Semaphore(OPENING_AT_ONCE)
            await asyncio.gather(*(self._open_own(tag, node, gate)
                                   for tag, node in self.nodes.items()))
        else:
            connection = await self._open(f"bench-wire-fleet-{self.user}")
            for node in self.nodes.values():
                node.connection = connection
            await asyncio.gather(*(self._subscribe_channel(connection, c)
                                   for c in range(1, self.channels + 1)))
        await self._join_all(join_concurrency)
        self._heartbeat = asyncio.create_task(self._heartbeat_forever())

    async def stop(self) -> None:
        self.churn(None)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        await asyncio.gather(*(connection.close() for connection in self._connections))

    async def _open(self, name: str) -> WireConnection:
        connection = await WireConnection.open(self.settings.amqp_url, self._on_delivery, name,
                                               self.settings.connect_timeout_s)
        self._connections.append(connection)
        for channel in range(1, self.channels + 1):
            await connection.open_channel(channel)
        await connection.call(1, commands.Exchange.Declare(
            exchange=self.names.events_exchange, exchange_type="topic", passive=True))
        return connection

    async def _open_own(self, tag: str, node: SimNode, gate: asyncio.Semaphore) -> None:
        async with gate:
            node.connection = await self._open(f"bench-wire-node-{node.node_id}")
            await self._subscribe(node.connection, 1, tag, node)

    async def _subscribe_channel(self, connection: WireConnection, channel: int) -> None:
        for tag, node in self.nodes.items():
            if node.channel == channel:
                await self._subscribe(connection, channel, tag, node)

    async def _subscribe(self, connection: WireConnection, channel: int, tag: str,
                         node: SimNode) -> None:
        queue = self.names.node_queue(node.node_id)
        arguments = node_queue_arguments(self.settings.node_queue_ttl_s)
        await connection.call(channel, commands.Queue.Declare(queue=queue, arguments=arguments))
        await connection.call(channel, commands.Queue.Bind(
            queue=queue, exchange=self.names.broadcast_exchange, routing_key=""))
        await connection.call(channel, commands.Basic.Consume(
            queue=queue, consumer_tag=tag, no_ack=True))

    async def _join_all(self, concurrency: int) -> None:
        """Join every node over HTTP, ``concurrency`` at a time, each on a keep-alive
        connection of the minimal client (httpx cost the fleet about 1 ms of CPU a join)."""
        token = self.settings.node_token or self.settings.admin_token
        clients = [RawClient(self.settings.gateway_url,
                             token.get_secret_value() if token else None)
                   for _ in range(concurrency)]
        nodes = iter(list(self.nodes.values()))
        cadence: list[float] = []

        async def join_each(client: RawClient) -> None:
            for node in nodes:  # shared iterator: each node is joined once
                body = codec.dumps({"node-id": node.node_id, "node-address": node.address})
                async with asyncio.timeout(JOIN_TIMEOUT_S):
                    response = await client.request("POST", "/join", body)
                if response.status not in (200, 409):
                    raise JoinRefused(f"{response.status}: {response.body.decode()}")
                interval = asked_cadence(response.headers)
                if interval is not None:
                    cadence.append(interval)

        try:
            await asyncio.gather(*(join_each(client) for client in clients))
        finally:
            await asyncio.gather(*(client.close() for client in clients))
        if cadence:  # the gateway's cadence, as the SDK follows it
            self.heartbeat_s = cadence[0]

    async def _heartbeat_forever(self) -> None:
        """Every node beats once per ``heartbeat_s``, a tenth of them at a time."""
        nodes = list(self.nodes.values())
        while True:
            for part in range(HEARTBEAT_SLICES):
                for node in nodes[part::HEARTBEAT_SLICES]:
                    self._beat(node)
                await asyncio.sleep(self.heartbeat_s / HEARTBEAT_SLICES)

    def _beat(self, node: SimNode) -> None:
        node.connection.publish(node.channel, self.names.events_exchange, node.beat_key,
                                self._beat_properties, node.beat)

    # --- churn --------------------------------------------------------------------

    def churn(self, interval_s: float | None) -> None:
        """Change one node's inventory every ``interval_s`` (None: stop), round the fleet."""
        if self._churn is not None:
            self._churn.cancel()
            self._churn = None
        if interval_s:
            self._churn = asyncio.create_task(self._churn_forever(interval_s))

    async def _churn_forever(self, interval_s: float) -> None:
        for node in itertools.cycle([n for n in self.nodes.values() if not n.hung]):
            node.serve(inv.churned(node.inventory))
            self._beat(node)  # announced at once, as the SDK does
            await asyncio.sleep(interval_s)

    # --- the hot path ---------------------------------------------------------------

    def _on_delivery(self, channel: int, tag: str, reply_to: str, correlation_id: str,
                     headers: bytes, body: bytes) -> None:
        node = self.nodes.get(tag)
        if node is None or node.hung or not reply_to:
            return
        broadcast = self._broadcast(correlation_id, headers, body)
        if broadcast is None or expired(broadcast.headers):
            return
        reply = node.inventory.answer(node.node_id, broadcast.query, node.version)
        node.connection.publish(channel, "", reply_to, broadcast.reply_properties,
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
