"""The registry worker: joins, deletes, node lists and host choices.

The node store is the source of truth for who is registered. Liveness is
kept in memory: every registry worker follows the heartbeats on the events
exchange, so each has the same view; a join counts as heard, and after a
restart every registered node gets one TTL of grace before it can be
declared offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from prometheus_client import Gauge

from services.registry.enrollment import Enrollment
from services.registry.store import NodeStore, open_store
from shared.auth import SpeakerCheck
from shared.bus import Bus
from shared.contracts import (
    BRIDGE_USER,
    CHOOSE_HOSTS,
    DELETE,
    ENROLL,
    JOIN,
    LIST_ENROLLED,
    LIST_NODES,
    REVOKE,
    BridgeUserRequest,
    ChooseHostsRequest,
    DeleteRequest,
    Done,
    EnrollRequest,
    Heartbeat,
    HostChoice,
    JoinRequest,
    ListRequest,
    MembershipEvent,
    NodeList,
    NodeRecord,
    RevokeRequest,
)
from shared.errors import StoreUnavailable
from shared.liveness import EventPublisher, Liveness, subscribe_events
from shared.metrics import WorkerMetrics
from shared.rpc import Operation, RpcServer, request_deadline
from shared.settings import RegistrySettings
from shared.topology import Names

log = logging.getLogger(__name__)

# Per replica: 2 SMPC workers, 1 crypto provider, 1 host.
NODES_PER_ENCRYPTED_REPLICA = 4


class RegistryWorker:
    """Consumes ``<ns>.registry`` and owns the node store."""

    def __init__(self, settings: RegistrySettings, store: NodeStore | None = None) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.store = store or open_store(settings.database_url, settings.database_schema)
        self.bus = Bus(settings, "grid-registry")
        self.events = EventPublisher(self.bus, self.names)
        # Heard at all (join, heartbeat, or start-up grace): decides "live".
        self.live = Liveness(settings.node_ttl_s)
        # Heard on the bus (heartbeats only): what a search can wait for.
        self.on_bus = Liveness(settings.node_ttl_s)
        self.registered: dict[str, str] = {}
        # Nodes enrolled --bridged: in secure mode a bridge may speak for these alone.
        self.bridged: set[str] = set()
        self.enrollment = Enrollment(self)
        self.metrics = WorkerMetrics("registry")
        self._gauges()
        self.server = RpcServer(
            self.bus,
            self.names,
            self.names.registry_queue,
            {
                JOIN: Operation(JoinRequest, self.join),
                DELETE: Operation(DeleteRequest, self.delete),
                LIST_NODES: Operation(ListRequest, self.list_nodes),
                CHOOSE_HOSTS: Operation(ChooseHostsRequest, self.choose_hosts),
                ENROLL: Operation(EnrollRequest, self.enrollment.enroll),
                REVOKE: Operation(RevokeRequest, self.enrollment.revoke),
                LIST_ENROLLED: Operation(ListRequest, self.enrollment.list_enrolled),
                BRIDGE_USER: Operation(BridgeUserRequest, self.enrollment.bridge_user),
            },
            prefetch=settings.prefetch,
        )
        self.server.observe = self.metrics.observe_message
        self._sweeper: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    def _gauges(self) -> None:
        Gauge("grid_registry_nodes", "Registered nodes.", registry=self.metrics.registry
              ).set_function(lambda: len(self.registered))
        Gauge("grid_registry_live_nodes", "Registered nodes heard within the TTL.",
              registry=self.metrics.registry
              ).set_function(lambda: sum(map(self.live.is_live, self.registered)))

    async def start(self) -> None:
        await self.store.open()
        await self.bus.connect()
        await self.events.start()
        with contextlib.suppress(StoreUnavailable):  # the sweeper retries
            await self._refresh_registered()
        await subscribe_events(self.bus, self.names, self._on_event, self._on_heartbeat,
                               SpeakerCheck(self.settings, lambda: self.bridged))
        await self.server.start()
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)

    async def stop(self) -> None:
        """Stop taking requests, finish those in hand, then close store and bus."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.server.stop(self.settings.shutdown_grace_s)
        await self.bus.close()
        await self.store.close()

    # --- operations ---------------------------------------------------------

    async def join(self, request: JoinRequest) -> Done:
        await self.enrollment.authorize(request.node_id, request.token_hash)
        await self.store.add(request.node_id, request.node_address, request.request_id,
                             deadline=request_deadline.get())
        self._registered(request.node_id, request.node_address)
        await self.events.publish(
            MembershipEvent(kind="joined", node_id=request.node_id,
                            node_address=request.node_address,
                            bridged=request.node_id in self.bridged)
        )
        log.info("node joined", extra={"node_id": request.node_id})
        return Done()

    async def delete(self, request: DeleteRequest) -> Done:
        await self.enrollment.authorize(request.node_id, request.token_hash)
        await self.store.remove(request.node_id, request.node_address)
        self._unregistered(request.node_id)
        await self.events.publish(MembershipEvent(kind="left", node_id=request.node_id))
        log.info("node deleted", extra={"node_id": request.node_id})
        return Done()

    async def list_nodes(self, request: ListRequest) -> NodeList:
        records = [
            NodeRecord(
                node_id=node_id,
                node_address=address,
                live=self.live.is_live(node_id),
                heartbeat_age_s=self.on_bus.age(node_id),
                bridged=node_id in self.bridged,
            )
            for node_id, address in await self.store.nodes()
        ]
        if not request.include_offline:
            records = [record for record in records if record.live]
        return NodeList(nodes=records)

    async def choose_hosts(self, request: ChooseHostsRequest) -> HostChoice:
        live = [(n, a) for n, a in await self.store.nodes() if self.live.is_live(n)]
        if request.encrypted:
            wanted = NODES_PER_ENCRYPTED_REPLICA * self.settings.n_replica
            return HostChoice(hosts=random.sample(live, wanted) if len(live) >= wanted else [])
        return HostChoice(hosts=random.sample(live, min(self.settings.n_replica, len(live))))

    # --- membership and liveness ---------------------------------------------

    def enrolled_changed(self, node_id: str, bridged: bool) -> None:
        if bridged:
            self.bridged.add(node_id)
        else:
            self.bridged.discard(node_id)

    async def removed(self, node_id: str) -> None:
        """A revoked node: gone at once, from this worker and (by the event) every other."""
        self.bridged.discard(node_id)
        self._unregistered(node_id)
        await self.events.publish(MembershipEvent(kind="left", node_id=node_id))
        log.info("node revoked", extra={"node_id": node_id})

    def _registered(self, node_id: str, address: str) -> None:
        self.registered[node_id] = address
        self.live.heard(node_id)

    def _unregistered(self, node_id: str) -> None:
        self.registered.pop(node_id, None)
        self.live.forget(node_id)
        self.on_bus.forget(node_id)

    def _on_event(self, event: MembershipEvent) -> None:
        # Joins and deletes handled by other registry workers.
        if event.kind == "joined" and event.bridged:
            self.bridged.add(event.node_id)
        if event.kind == "joined" and event.node_id not in self.registered:
            self._registered(event.node_id, event.node_address)
        elif event.kind == "left":
            self._unregistered(event.node_id)

    def _on_heartbeat(self, beat: Heartbeat) -> None:
        node_id = beat.node_id
        if node_id not in self.registered:
            return
        self.on_bus.heard(node_id)
        if self.live.heard(node_id):
            address = self.registered[node_id]
            task = asyncio.create_task(self.events.publish(
                MembershipEvent(kind="online", node_id=node_id, node_address=address)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            log.info("node back online", extra={"node_id": node_id})

    async def _refresh_registered(self) -> None:
        """Reload who is registered; nodes new to this worker get one TTL of grace."""
        nodes = dict(await self.store.nodes())
        self.bridged = {row.node_id for row in await self.store.enrolled() if row.bridged}
        for node_id in set(self.registered) - set(nodes):
            self._unregistered(node_id)
        for node_id, address in nodes.items():
            if node_id not in self.registered:
                self._registered(node_id, address)

    async def _sweep_forever(self) -> None:
        interval = min(1.0, self.settings.node_ttl_s / 4)
        refresh_every = max(1, int(self.settings.node_ttl_s / interval))
        for tick in range(1, 1 << 62):
            await asyncio.sleep(interval)
            for node_id in self.live.sweep():
                address = self.registered.get(node_id, "")
                log.info("node went offline", extra={"node_id": node_id})
                await self.events.publish(
                    MembershipEvent(kind="offline", node_id=node_id, node_address=address))
            if tick % refresh_every == 0:
                with contextlib.suppress(StoreUnavailable):
                    await self._refresh_registered()
