"""The registry worker: joins, deletes, node lists and host choices.

The node store is the source of truth for who is registered. Liveness is
kept in memory by one registry worker, the liveness owner
(:mod:`services.registry.owner`), the one reader of heartbeats; it publishes
the changes as numbered membership deltas. Every registry worker follows those
deltas in a view of its own (:class:`shared.membership.Membership`) and
answers lists, host choices and membership snapshots from it; a join counts as
live (until its TTL passes unheard), and a new owner gives every registered node one TTL of
grace.
"""

from __future__ import annotations

import contextlib
import logging
import time

from prometheus_client import Gauge

from services.registry.enrollment import Enrollment
from services.registry.owner import LivenessOwner
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
    MEMBERSHIP,
    REVOKE,
    BridgeUserRequest,
    ChooseHostsRequest,
    DeleteRequest,
    Done,
    EnrollRequest,
    HostChoice,
    JoinRequest,
    ListRequest,
    MembershipEvent,
    MembershipRequest,
    MembershipSnapshot,
    NodeList,
    NodeRecord,
    RevokeRequest,
)
from shared.errors import StoreUnavailable
from shared.hosts import choose_hosts
from shared.liveness import EventPublisher, subscribe_events
from shared.membership import Membership
from shared.membership_feed import MembershipFeed
from shared.metrics import WorkerMetrics
from shared.rpc import Operation, RequestContext, RpcClient, RpcServer
from shared.settings import RegistrySettings
from shared.topology import Names

log = logging.getLogger(__name__)



class RegistryWorker:
    """Consumes ``<ns>.registry`` and owns the node store."""

    def __init__(self, settings: RegistrySettings, store: NodeStore | None = None) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.store = store or open_store(settings.database_url, settings.database_schema)
        self.bus = Bus(settings, "grid-registry")
        self.events = EventPublisher(self.bus, self.names)
        # Nodes enrolled --bridged: in secure mode a bridge may speak for these alone.
        self.bridged: set[str] = set()
        self.enrollment = Enrollment(self)
        # What every process sees: the owner's deltas (this worker's own, when it owns).
        self.membership = Membership()
        self.feed = MembershipFeed(self.membership, RpcClient(self.bus, self.names, "registry"),
                                   settings.membership_refresh_s)
        self.owner = LivenessOwner(settings, self.events, self.store, self.membership,
                                   SpeakerCheck(settings, lambda: self.bridged))
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
                MEMBERSHIP: Operation(MembershipRequest, self.membership_snapshot),
            },
            prefetch=settings.prefetch,
            observe=self.metrics.observe_message,
        )

    def _gauges(self) -> None:
        nodes = self.membership.nodes
        Gauge("grid_registry_nodes", "Registered nodes.", registry=self.metrics.registry
              ).set_function(lambda: len(nodes))
        Gauge("grid_registry_live_nodes", "Registered nodes heard within the TTL.",
              registry=self.metrics.registry
              ).set_function(lambda: sum(state.live for state in nodes.values()))
        Gauge("grid_registry_liveness_owner", "1 while this worker owns liveness.",
              registry=self.metrics.registry).set_function(lambda: int(self.owner.active))

    async def start(self) -> None:
        await self.store.open()
        await self.bus.connect()
        await self.events.start()
        with contextlib.suppress(StoreUnavailable):  # the owner's store re-read retries
            await self._refresh_bridged()
        await self.feed.registry.start()
        await subscribe_events(self.bus, self.names, self._on_event)
        await self.server.start()
        await self.owner.start()
        await self.feed.start()
        self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)

    async def stop(self) -> None:
        """Stop taking requests, finish those in hand, then close store and bus."""
        await self.owner.stop()
        await self.feed.stop()
        await self.server.stop(self.settings.shutdown_grace_s)
        await self.bus.close()
        await self.store.close()

    # --- operations ---------------------------------------------------------

    async def join(self, request: JoinRequest, context: RequestContext) -> Done:
        await self.enrollment.authorize(request.node_id, request.token_hash)
        await self.store.add(request.node_id, request.node_address, request.request_id,
                             deadline=context.deadline)
        if self.owner.active:
            self.owner.joined(request.node_id, request.node_address)
        await self.events.publish(
            MembershipEvent(kind="joined", node_id=request.node_id,
                            node_address=request.node_address,
                            bridged=request.node_id in self.bridged)
        )
        log.info("node joined", extra={"node_id": request.node_id})
        return Done()

    async def delete(self, request: DeleteRequest, context: RequestContext) -> Done:
        await self.enrollment.authorize(request.node_id, request.token_hash)
        await self.store.remove(request.node_id, request.node_address)
        if self.owner.active:
            self.owner.left(request.node_id)
            await self.owner.publish_now()  # before the reply: no search asks it again
        await self.events.publish(MembershipEvent(kind="left", node_id=request.node_id))
        log.info("node deleted", extra={"node_id": request.node_id})
        return Done()

    async def list_nodes(self, request: ListRequest, context: RequestContext) -> NodeList:
        """The registered nodes; one just joined, and not in the view yet, counts as live."""
        states = self.membership.nodes
        records = []
        for node_id, address in await self.store.nodes():
            state = states.get(node_id)
            heard = state is not None and state.heard
            records.append(NodeRecord(node_id=node_id, node_address=address,
                                      live=state is None or state.live,
                                      heartbeat_age_s=self._heard_age_s(node_id) if heard
                                      else None,
                                      bridged=node_id in self.bridged))
        if not request.include_offline:
            records = [record for record in records if record.live]
        return NodeList(nodes=records)

    def _heard_age_s(self, node_id: str) -> float:
        """Seconds since a heard node was last heard: the owner knows; any other worker says 0."""
        at = self.last_heard(node_id)
        return 0.0 if at is None else round(max(time.time() - at, 0.0), 3)

    async def choose_hosts(self, request: ChooseHostsRequest,
                           context: RequestContext) -> HostChoice:
        live = [(record.node_id, record.node_address)
                for record in (await self.list_nodes(ListRequest(), context)).nodes]
        return HostChoice(hosts=choose_hosts(live, self.settings.n_replica, request.encrypted))

    async def membership_snapshot(self, request: MembershipRequest,
                                  context: RequestContext) -> MembershipSnapshot:
        """The owner's states; another worker's view when it is in sync (else retry).

        An asker already at the same epoch and delta is told so, with no nodes: a
        follower's periodic check costs O(1), not O(nodes).
        """
        if self.owner.active:
            source = self.owner
        elif self.membership.synced:
            source = self.membership
        else:
            raise StoreUnavailable("the membership is not known here yet; try again")
        if request.epoch and (request.epoch, request.seq) == (source.epoch, source.seq):
            return MembershipSnapshot(epoch=source.epoch, seq=source.seq, nodes=[], current=True)
        return source.snapshot()

    # --- enrollment -----------------------------------------------------------

    def enrolled_changed(self, node_id: str, bridged: bool) -> None:
        if bridged:
            self.bridged.add(node_id)
        else:
            self.bridged.discard(node_id)

    async def removed(self, node_id: str) -> None:
        """A revoked node: gone at once, from this worker and (by the event) every other."""
        self.bridged.discard(node_id)
        if self.owner.active:
            self.owner.left(node_id)
            await self.owner.publish_now()  # before the reply: no search asks it again
        self.membership.left_here(node_id)
        await self.events.publish(MembershipEvent(kind="left", node_id=node_id))
        log.info("node revoked", extra={"node_id": node_id})

    def last_heard(self, node_id: str) -> float | None:
        """When the node was last heard on the bus (epoch seconds), as the owner knows it."""
        return self.owner.last_heard(node_id) if self.owner.active else None

    def _on_event(self, event: MembershipEvent) -> None:
        # Joins and deletes handled by other registry workers.
        if event.kind == "joined" and event.bridged:
            self.bridged.add(event.node_id)
        elif event.kind == "left":
            self.bridged.discard(event.node_id)
        self.owner.on_event(event)

    async def _refresh_bridged(self) -> None:
        self.bridged = {row.node_id for row in await self.store.enrolled() if row.bridged}
