"""The grid node SDK: join the gateway, answer broadcast queries, send heartbeats.

A real node embeds :class:`GridNode` with its own id, public address and a
handler (an :class:`~services.node.inventory.Inventory` by default)::

    node = GridNode(NodeSettings(), "alice", "http://alice:5000", Inventory.from_file(path))
    await node.start()      # joins over HTTP, consumes <ns>.node.alice, heartbeats
    ...
    await node.stop(leave=True)

Every heartbeat and reply carries the node's inventory version, so the gateway
can answer repeated searches without asking again: with an Inventory the
version is its digest (``update_inventory`` swaps it and announces the change
at once); a node with its own handler passes ``version=`` and calls
``set_version`` whenever any of its answers may change, or leaves it None and
is asked every time.

The wire protocol is in docs/protocol.md, for nodes written in other languages.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping

import httpx
from aio_pika.abc import AbstractQueue
from aiormq.abc import DeliveredMessage

from services.node.inventory import Inventory
from shared import codec
from shared.auth import reply_exchange
from shared.bus import Bus
from shared.contracts import Heartbeat, NodeQuery, NodeReply
from shared.errors import GridError, InvalidRequest
from shared.liveness import EventPublisher
from shared.logs import REQUEST_ID_HEADER, request_id
from shared.rpc import expired, reply_properties
from shared.settings import NodeSettings
from shared.topology import Names, declare_node_queue

log = logging.getLogger(__name__)
QueryHandler = Callable[[str, NodeQuery], NodeReply | Awaitable[NodeReply]]


class JoinRefused(Exception):
    """The gateway refused the join (bad id or address, or a missing token)."""


def auth_headers(settings: NodeSettings) -> dict[str, str]:
    """The node's own token if it has one (secure mode), else the admin token if set."""
    token = settings.node_token or settings.admin_token
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token else {}


HEARTBEAT_HEADER = "X-Grid-Heartbeat-S"
# How often a version that could not be announced is tried again (the broker was away).
ANNOUNCE_RETRY_S = 0.5


def asked_cadence(headers: Mapping[str, str]) -> float | None:
    """The heartbeat interval a join answer asks for (None: not said, or not a number).

    ``headers``: httpx's (any case), or a plain mapping with lower-case names.
    """
    try:
        interval = float(headers.get(HEARTBEAT_HEADER.lower(), ""))
    except ValueError:
        return None
    return interval if 0.05 <= interval <= 3600 else None


async def post_join(http: httpx.AsyncClient, settings: NodeSettings, node_id: str,
                    address: str, cadence: list[float] | None = None) -> bool:
    """POST /join on ``http`` (based at the gateway). False when the id was registered already.

    Raises JoinRefused for any other refusal (bad id or address, a missing token).
    The heartbeat interval the gateway asks for, if any, is appended to ``cadence``.
    """
    body = {"node-id": node_id, "node-address": address}
    response = await http.post("/join", json=body, headers=auth_headers(settings))
    interval = asked_cadence(response.headers)
    if cadence is not None and interval is not None:
        cadence.append(interval)
    if response.status_code == 409:
        return False
    if response.status_code != 200:
        raise JoinRefused(f"{response.status_code}: {response.text}")
    return True


async def delete_node(http: httpx.AsyncClient, settings: NodeSettings, node_id: str,
                      address: str) -> None:
    """DELETE /delete-node on ``http`` (based at the gateway); a 404 means not registered."""
    body = {"node-id": node_id, "node-address": address}
    await http.request("DELETE", "/delete-node", json=body, headers=auth_headers(settings))


class GridNode:
    """One grid node on the bus. Several nodes may share one :class:`Bus`."""

    def __init__(self, settings: NodeSettings, node_id: str, address: str,
                 handler: Inventory | QueryHandler, bus: Bus | None = None,
                 version: str | None = None) -> None:
        self.settings = settings
        self.node_id = node_id
        self.address = address
        self.names = Names(settings.namespace)
        self.answer: QueryHandler = handler.answer if isinstance(handler, Inventory) else handler
        # None: the gateway never answers for this node from its cache.
        self.version = handler.version() if isinstance(handler, Inventory) else version
        self._own_bus = bus is None
        self.bus = bus or Bus(settings, f"grid-node-{node_id}")
        self.events = EventPublisher(self.bus, self.names, passive=True)
        self.queries_answered = 0
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._heartbeat: asyncio.Task | None = None
        # The version the last heartbeat sent carried (at first, the one the first heartbeat
        # will carry at its turn). Until it is the node's own (a change made while the broker
        # was away), the heartbeat loop retries every ANNOUNCE_RETRY_S, not at its next turn.
        self._announced = self.version
        self._wake = asyncio.Event()
        # The gateway's cadence, unless GRID_HEARTBEAT_S was set for this node.
        self.heartbeat_s = settings.heartbeat_s
        self._cadence_fixed = "heartbeat_s" in settings.model_fields_set

    async def start(self, join: bool = True) -> None:
        """Subscribe to broadcasts, join over HTTP (a 409 means already joined), heartbeat."""
        if self._own_bus:
            await self.bus.connect()
        await self.events.start()
        self._queue = await declare_node_queue(self.bus.fast, self.names, self.node_id,
                                               self.settings.node_queue_ttl_s)
        self._consumer_tag = await self.bus.consume_raw(self._queue.name, self._on_query)
        if join:
            await self.join()
        self._heartbeat = asyncio.create_task(self._heartbeat_forever())

    async def stop(self, leave: bool = False) -> None:
        """Stop heartbeats and consuming; with ``leave``, delete the node from the gateway.

        Safe to call twice.
        """
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
        tag, self._consumer_tag = self._consumer_tag, None
        if tag is not None:
            with contextlib.suppress(Exception):  # the channel may be gone already
                await asyncio.wait_for(self.bus.cancel_raw(tag), self.settings.connect_timeout_s)
        if leave:
            await self.leave()
        if self._own_bus:
            await self.bus.close()

    # --- gateway over HTTP --------------------------------------------------

    async def join(self) -> bool:
        """POST /join. True if registered now, False if the id was registered already."""
        cadence: list[float] = []
        async with httpx.AsyncClient(base_url=self.settings.gateway_url, timeout=10) as http:
            joined = await post_join(http, self.settings, self.node_id, self.address, cadence)
        if cadence and not self._cadence_fixed:
            self.heartbeat_s = cadence[0]
        return joined

    async def leave(self) -> None:
        """DELETE /delete-node (a 404 means it was not registered)."""
        async with httpx.AsyncClient(base_url=self.settings.gateway_url, timeout=10) as http:
            await delete_node(http, self.settings, self.node_id, self.address)

    # --- inventory versions ---------------------------------------------------

    async def update_inventory(self, inventory: Inventory) -> None:
        """Answer from ``inventory`` from now on, and announce its version at once."""
        self.answer = inventory.answer
        await self.set_version(inventory.version())

    async def set_version(self, version: str | None) -> None:
        """Announce a new inventory version now (a heartbeat out of turn).

        Call it whenever any answer of the node may change; None stops the
        gateway from caching this node's answers.
        """
        self.version = version
        if self._heartbeat is not None and not await self._beat():
            self._wake.set()  # sent once the broker is back, not at the next turn

    # --- bus ------------------------------------------------------------------

    async def _beat(self) -> bool:
        """One heartbeat; False when it could not be sent (the broker may be reconnecting)."""
        if not self.bus.ready:
            return False
        version = self.version
        try:
            await self.events.publish(Heartbeat(node_id=self.node_id, version=version))
        except Exception:  # noqa: BLE001 - the connection went while sending
            return False
        self._announced = version
        return True

    async def _heartbeat_forever(self) -> None:
        while True:
            await self._beat()
            self._wake.clear()
            behind = self._announced != self.version  # a change not announced yet
            pause = ANNOUNCE_RETRY_S if behind else self.heartbeat_s
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()

    async def _on_query(self, message: DeliveredMessage) -> None:
        properties = message.header.properties
        headers = properties.headers
        if not properties.reply_to or expired(headers):
            return
        rid = str((headers or {}).get(REQUEST_ID_HEADER, ""))
        request_id.set(rid)
        try:
            query = codec.decode(NodeQuery, message.body)
        except InvalidRequest as exc:
            log.warning("ignored a malformed query", extra={"error": exc.message})
            return
        version = self.version
        try:
            reply = self.answer(self.node_id, query)
            if inspect.isawaitable(reply):
                reply = await reply
        except Exception:
            log.exception("the query handler failed", extra={"op": query.op})
            return
        if reply.version is None and version is not None and version == self.version:
            # The version this answer comes from; none if it changed meanwhile.
            reply = reply.model_copy(update={"version": version})
        try:
            await self.bus.publish_raw(
                codec.dumps(reply), properties.reply_to,
                reply_properties(properties.correlation_id, {REQUEST_ID_HEADER: rid},
                                 self.bus.user),
                exchange=reply_exchange(headers),  # set in secure mode (protocol 2)
            )
        except GridError as exc:  # the broker is away: the search's deadline covers it
            log.warning("could not send a reply", extra={"error": exc.message})
            return
        self.queries_answered += 1
        if log.isEnabledFor(logging.INFO):
            log.info("answered", extra={"node_id": self.node_id, "op": query.op})
