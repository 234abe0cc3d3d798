"""The HTTP bridge: answers the gateway's broadcasts for nodes that speak only HTTP.

Every bridge consumes the shared queue ``<ns>.bridge`` (bound to the broadcast
exchange; competing consumers), so each broadcast reaches one bridge, which
answers it for every bridged node: one HTTP call per node, all at once, each
bounded by the broadcast's deadline, one NodeReply per node that answered.
Heartbeats for a node are sent only while it answers (after a call that
worked, and by probing idle nodes), so a node that stops answering goes
offline like a silent AMQP node, and comes back when it answers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from pamqp.commands import Basic

from services.bridge.answers import NodeCall, call_for
from services.bridge.caller import NodeCaller
from services.bridge.metrics import BridgeMetrics
from services.bridge.roster import Roster
from shared import codec
from shared.auth import reply_exchange
from shared.bus import Bus
from shared.contracts import Heartbeat, NodeQuery
from shared.errors import GridError, InvalidRequest
from shared.liveness import EventPublisher
from shared.logs import REQUEST_ID_HEADER, request_id
from shared.membership import Membership
from shared.membership_feed import MembershipFeed
from shared.rpc import RpcClient, deadline_in, reply_properties
from shared.settings import BridgeSettings
from shared.topology import Names, declare_bridge_queue, declare_broadcast

log = logging.getLogger(__name__)
# Time left for a reply to reach the search worker before the broadcast's deadline.
REPLY_ALLOWANCE_S = 0.01
# How long a new node is left alone, in heartbeat intervals, to hear it if it speaks itself.
SETTLE_HEARTBEATS = 1.5
# ... plus the time the liveness owner's delta takes to say so (its batch and two hops).
MEMBERSHIP_LAG_S = 0.5
# What a probe asks an idle node (GET /models/).
PROBE = NodeQuery(op="list_models")


class BridgeWorker:
    """Consumes ``<ns>.bridge``; calls nodes over HTTP; replies and heartbeats on their behalf."""

    def __init__(self, settings: BridgeSettings) -> None:
        self.settings = settings
        self.name = settings.bridge_name or f"bridge-{socket.gethostname()}-{os.getpid()}"
        self.names = Names(settings.namespace)
        self.bus = Bus(settings, "grid-bridge")
        self.membership = Membership()
        self.feed = MembershipFeed(self.membership, RpcClient(self.bus, self.names, "bridge"),
                                   settings.membership_refresh_s)
        # Secure mode: only nodes enrolled --bridged, and the gateway declares the
        # exchanges (the bridge's own broker user may not).
        self.roster = Roster(self.membership,
                             SETTLE_HEARTBEATS * settings.heartbeat_s + MEMBERSHIP_LAG_S,
                             settings.node_ttl_s, only_enrolled=settings.node_auth)
        self.events = EventPublisher(self.bus, self.names, passive=settings.node_auth)
        self.metrics = BridgeMetrics()
        self.metrics.count_nodes(lambda: len(self.roster.bridged()),
                                 lambda: len(self.roster.answering()))
        self.caller = NodeCaller(settings, self.metrics)
        # Probes run beside broadcasts; they may take at most a quarter of the pool.
        self._probe_slots = asyncio.Semaphore(max(1, settings.bridge_http_pool // 4))
        self._probing: set[str] = set()
        self._channel: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._consumer_tag: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._in_flight: set[asyncio.Task] = set()
        # Set once the bridge takes broadcasts.
        self.consuming = asyncio.Event()

    async def start(self) -> None:
        """Connect and follow the membership; broadcasts are taken once it has settled."""
        await self.caller.start()
        await self.bus.connect()
        await self.events.start()
        await self.feed.registry.start()
        await self.feed.start()
        self._spawn(self._serve_when_settled())
        self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)

    async def _serve_when_settled(self) -> None:
        """Once the node list is read and a node speaking for itself would have been heard,
        take broadcasts and probe (a bridge joining others takes no broadcast before)."""
        await self.feed.loaded.wait()
        await asyncio.sleep(self.roster.settle_s)
        self._channel = await self.bus.channel(prefetch=self.settings.prefetch)
        if not self.settings.node_auth:
            await declare_broadcast(self._channel, self.names)
        self._queue = await declare_bridge_queue(self._channel, self.names)
        self._consumer_tag = await self._queue.consume(self._on_broadcast)
        self._spawn(self._probe_forever())
        self.consuming.set()
        log.info("bridge consuming", extra={"bridge": self.name, "queue": self._queue.name})

    async def stop(self) -> None:
        """Stop taking broadcasts, finish those in hand (their deadlines bound them), close."""
        tag, self._consumer_tag = self._consumer_tag, None
        if self._queue is not None and tag is not None and self.bus.ready:
            with contextlib.suppress(Exception):  # the channel may already be gone
                await asyncio.wait_for(self._queue.cancel(tag), 3)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=self.settings.shutdown_grace_s)
        for task in (*self._tasks, *self._in_flight):
            task.cancel()
        await asyncio.gather(*self._tasks, *self._in_flight, return_exceptions=True)
        await self.feed.stop()
        await self.caller.close()
        await self.bus.close()

    # --- broadcasts ---------------------------------------------------------------

    async def _on_broadcast(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        started = time.perf_counter()
        try:
            outcome = await self._handle(message)
        except Exception:  # noqa: BLE001 - one broadcast's failure never stops the bridge
            log.exception("a broadcast failed")
            outcome = "error"
        finally:
            if task is not None:
                self._in_flight.discard(task)
            with contextlib.suppress(Exception):  # the channel may be gone: redelivered then
                await message.ack()
        self.metrics.broadcasts.labels(outcome).inc()
        self.metrics.observe_message(message.type or "", outcome, time.perf_counter() - started)

    async def _handle(self, message: AbstractIncomingMessage) -> str:
        if message.redelivered:
            # Its first bridge may have answered some nodes already: at most once.
            return "redelivered"
        deadline = deadline_in(message.headers)
        within_s = (deadline - time.time() if deadline is not None
                    else self.settings.bridge_call_timeout_s) - REPLY_ALLOWANCE_S
        if not message.reply_to or within_s <= 0:
            return "expired"
        try:
            query = codec.decode(NodeQuery, message.body)
        except InvalidRequest as exc:
            log.warning("ignored a malformed broadcast", extra={"error": exc.message})
            return "malformed"
        rid = str((message.headers or {}).get(REQUEST_ID_HEADER, ""))
        request_id.set(rid)
        # The same for every node of this broadcast: built once.
        call = call_for(query)
        properties = reply_properties(message.correlation_id, {REQUEST_ID_HEADER: rid},
                                      self.bus.user)
        nodes = self.roster.answering()
        route = (reply_exchange(message.headers), message.reply_to)
        await asyncio.gather(*(self._answer(node_id, address, query, call, within_s,
                                            route, properties)
                               for node_id, address in nodes.items()))
        return "answered"

    async def _answer(self, node_id: str, address: str, query: NodeQuery, call: NodeCall,
                      within_s: float, route: tuple[str, str],
                      properties: Basic.Properties) -> None:
        """Call one node; reply on ``route`` (exchange, reply queue) if it answered."""
        reply = await self.caller.ask(node_id, address, query, within_s, call)
        if reply is None:
            return
        try:
            await self.bus.publish_raw(codec.dumps(reply), route[1], properties,
                                       exchange=route[0])
        except GridError as exc:  # the broker is away: the search's deadline covers it
            log.warning("could not send a reply", extra={"error": exc.message})
            return
        self.metrics.replies.inc()
        await self._answered(node_id)

    # --- liveness ---------------------------------------------------------------------

    async def _answered(self, node_id: str) -> None:
        """The node answered: heartbeat for it, at most once per probe interval."""
        if not self.roster.beat_due(node_id, self.settings.probe_s):
            return
        beat = Heartbeat(node_id=node_id, bridge=self.name)
        self.roster.beat(node_id)  # at once: the next broadcast calls it
        try:
            await self.events.publish(beat)
        except Exception as exc:  # noqa: BLE001 - the broker may be reconnecting
            log.warning("could not send a heartbeat", extra={"error": str(exc)})
            return
        self.metrics.heartbeats.inc()

    async def _probe_forever(self) -> None:
        """Probe the nodes due, every quarter interval (jittered, so bridges drift apart)."""
        interval = self.settings.probe_s
        while True:
            for node_id, address in self.roster.bridged().items():
                if node_id not in self._probing and self.roster.beat_due(node_id, interval):
                    self._probing.add(node_id)
                    self._spawn(self._probe(node_id, address))
            await asyncio.sleep(interval / 4 * random.uniform(0.8, 1.2))

    async def _probe(self, node_id: str, address: str) -> None:
        """``GET /models/``: any valid answer means the node is alive."""
        try:
            async with self._probe_slots:
                reply = await self.caller.ask(node_id, address, PROBE, self.settings.probe_s)
            if reply is not None:
                await self._answered(node_id)
        finally:
            self._probing.discard(node_id)

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a bridge task failed", exc_info=task.exception())
