"""The liveness owner: the one reader of heartbeats, and the one writer of membership deltas.

Of several registry workers, the one holding the exclusive queue
``<ns>.liveness`` (bound to every ``heartbeat.<id>`` on ``<ns>.events``) owns
liveness; the others retry every ``ACQUIRE_S`` and take over when its
connection drops (the broker deletes an exclusive queue with its connection).
The owner keeps every registered node's state (:class:`NodeState`), finds the
nodes that fell silent in O(silent) (:class:`shared.liveness.Expiry`), and
publishes the changes in numbered batches (:class:`MembershipDelta`,
``membership.delta``) every ``membership_batch_s`` at most (an inventory version change at
once: caches wait for it). A heartbeat that
changes nothing (the common case) costs a dictionary look-up and no message.

A new owner starts a new epoch: every follower then reads a snapshot. It takes
over the states its own follower view had, and gives every registered node one
TTL of grace, as a restart always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable

from services.registry.store import NodeStore
from shared import codec
from shared.auth import SpeakerCheck
from shared.bus import Bus
from shared.contracts import (
    Heartbeat,
    MembershipDelta,
    MembershipEvent,
    MembershipSnapshot,
    NodeState,
)
from shared.errors import InvalidRequest
from shared.frames import Delivery
from shared.liveness import EventPublisher, Expiry
from shared.membership import Membership
from shared.settings import RegistrySettings
from shared.topology import HEARTBEAT_KEY, Names, declare_events

log = logging.getLogger(__name__)
# How often a registry worker that does not own liveness tries to take it over.
ACQUIRE_S = 1.0
# The longest sleep between two looks for silent nodes.
MAX_SWEEP_S = 0.5
# How soon a delta that could not be sent (the bus reconnecting) is tried again.
RETRY_FLUSH_S = 0.2


class LivenessOwner:
    """Owns liveness while it holds ``<ns>.liveness``; see the module docstring."""

    def __init__(self, settings: RegistrySettings, events: EventPublisher, store: NodeStore,
                 follower: Membership, speakers: SpeakerCheck | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        # Whose heartbeats count for a node (secure mode), and which nodes are bridged.
        self.speakers = speakers or SpeakerCheck(settings)
        self.names = Names(settings.namespace)
        self.events = events
        self.store = store
        self.follower = follower
        self.clock = clock
        self.active = False
        self.epoch, self.seq = "", 0
        self.acquired_at = 0.0  # when this worker last took liveness over (on ``clock``)
        self.nodes: dict[str, NodeState] = {}
        ttl = settings.node_ttl_s
        self.live, self.heard, self.own = Expiry(ttl), Expiry(ttl), Expiry(ttl)
        self._changed: set[str] = set()
        self._left: set[str] = set()
        self._flush_at: asyncio.TimerHandle | None = None
        self._urgent_at = -math.inf  # when a delta last went out at once (_flush_soon)
        self._publishing = asyncio.Lock()
        self._lock_bus: Bus | None = None
        self._task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._depose()

    def snapshot(self) -> MembershipSnapshot:
        """Every node's state, as of the last delta or later (a later delta repeats it)."""
        return MembershipSnapshot(epoch=self.epoch, seq=self.seq, nodes=list(self.nodes.values()))

    def last_heard(self, node_id: str) -> float | None:
        """When the node was last heard on the bus, in epoch seconds (None: not within the TTL)."""
        at = self.heard.heard_at(node_id)
        return None if at is None else time.time() - (self.clock() - at)

    def skip(self) -> None:
        """Let one sequence number go unsent, as a lost delta would (for tests of resync)."""
        self.seq += 1

    # --- ownership ----------------------------------------------------------------

    async def _run(self) -> None:
        refreshed = self.clock()
        while True:
            if not self.active:
                await self._acquire()
                refreshed = self.clock()
            if not self.active:
                await asyncio.sleep(ACQUIRE_S)
                continue
            self._expire()
            if self.clock() - refreshed >= self.settings.node_ttl_s:
                refreshed = self.clock()
                await self._reread_store()
            due = min(filter(None, (e.next_due() for e in (self.live, self.heard, self.own))),
                      default=self.clock() + MAX_SWEEP_S)
            await asyncio.sleep(min(max(due - self.clock(), 0.005), MAX_SWEEP_S))

    async def _acquire(self) -> None:
        bus = Bus(self.settings, "grid-registry-liveness")
        try:
            await bus.connect()
            queue = await bus.fast.declare_queue(self.names.liveness_queue, exclusive=True,
                                                 robust=False)
            await self._take_over()
            exchange = await declare_events(bus.fast, self.names)
            await queue.bind(exchange, routing_key=HEARTBEAT_KEY.format(node_id="#"),
                             robust=False)
            await bus.consume_direct(self.names.liveness_queue, self._on_beat)
        except Exception:  # noqa: BLE001 - held by another worker, or no broker/store yet
            await bus.close()
            return
        self._lock_bus, self.active = bus, True
        bus.on_connection_lost(lambda: self._spawn(self._depose()))
        self.epoch, self.seq = uuid.uuid4().hex[:12], 0
        log.info("owning liveness", extra={"epoch": self.epoch, "nodes": len(self.nodes)})
        self._schedule()  # a first delta of the new epoch: followers read a snapshot
        # A join or delete stored after _take_over read the store, but before this worker
        # was active, was not told to it: read the store once more now that it is.
        await self._reread_store()

    async def _depose(self) -> None:
        if self.active:
            log.warning("no longer owning liveness", extra={"epoch": self.epoch})
        self.active = False
        bus, self._lock_bus = self._lock_bus, None
        if bus is not None:
            await bus.close()

    async def _take_over(self) -> None:
        """Every registered node, with what the follower view knew of it, and a TTL of grace."""
        now, known = self.clock(), self.follower.nodes
        self.acquired_at = now
        ttl = self.settings.node_ttl_s
        self.live, self.heard, self.own = Expiry(ttl), Expiry(ttl), Expiry(ttl)
        self.nodes, self._changed, self._left = {}, set(), set()
        for node_id, address in await self.store.nodes():
            old = known.get(node_id)
            state = NodeState(node_id=node_id, node_address=address, live=True,
                              heard=bool(old and old.heard), own=bool(old and old.own),
                              version=old.version if old else None,
                              bridged=node_id in self.speakers.bridged())
            self.nodes[node_id] = state
            self._touch(state, now)

    async def _reread_store(self) -> None:
        """Heal a join or delete event missed: the store says who is registered."""
        try:
            registered = dict(await self.store.nodes())
        except Exception:  # noqa: BLE001 - the store is down: next time
            return
        for node_id in set(self.nodes) - set(registered):
            self._remove(node_id)
        for node_id, address in registered.items():
            if self.nodes.get(node_id, None) is None:
                self.joined(node_id, address)

    # --- what changes the membership ------------------------------------------------

    def joined(self, node_id: str, address: str) -> None:
        """A join (here or by another registry worker) counts as live, for one TTL."""
        state = self.nodes.get(node_id)
        if state is None or state.node_address != address:
            state = NodeState(node_id=node_id, node_address=address,
                              bridged=node_id in self.speakers.bridged())
            self._set(state)
        elif not state.live:
            self._set(state.model_copy(update={"live": True}))
        self.live.touch(node_id, self.clock())

    def left(self, node_id: str) -> None:
        if node_id in self.nodes:
            self._remove(node_id)

    def on_event(self, event: MembershipEvent) -> None:
        if not self.active:
            return
        if event.kind == "joined":
            self.joined(event.node_id, event.node_address)
        elif event.kind == "left":
            self.left(event.node_id)

    def _on_beat(self, delivery: Delivery) -> None:
        try:
            beat = codec.decode(Heartbeat, delivery.body)
        except InvalidRequest:
            return
        if not self.speakers.may_speak_for(delivery.user_id, beat.node_id):
            return  # secure mode: only the node's own user (or a bridge's, for a bridged node)
        state = self.nodes.get(beat.node_id)
        if state is None:
            return  # not registered (or deleted): a node joins first
        own = beat.bridge is None
        version = beat.version if own or not state.own else state.version
        now = self.clock()
        self.live.touch(beat.node_id, now)
        self.heard.touch(beat.node_id, now)
        if own:
            self.own.touch(beat.node_id, now)
        if not (state.live and state.heard and state.own >= own and state.version == version):
            self._set(state.model_copy(update={
                "live": True, "heard": True, "own": state.own or own, "version": version}))
            if state.version is not None and version != state.version:
                # An inventory changed: caches answer from the old one until the delta
                # arrives, so it goes now, not after the batch (a first version, at a
                # join, still waits: a join storm stays batched).
                self._flush_soon()

    def _expire(self) -> None:
        now = self.clock()
        for expiry, flag in ((self.live, "live"), (self.heard, "heard"), (self.own, "own")):
            for node_id in list(expiry.due(now)):
                state = self.nodes.get(node_id)
                if state is not None and getattr(state, flag):
                    self._set(state.model_copy(update={flag: False}))

    def _touch(self, state: NodeState, now: float) -> None:
        self.live.touch(state.node_id, now)
        if state.heard:
            self.heard.touch(state.node_id, now)
        if state.own:
            self.own.touch(state.node_id, now)

    def _set(self, state: NodeState) -> None:
        old = self.nodes.get(state.node_id)
        self.nodes[state.node_id] = state
        self._changed.add(state.node_id)
        if old is not None and old.live != state.live:
            kind = "online" if state.live else "offline"
            log.info(f"node went {kind}", extra={"node_id": state.node_id})
            self._spawn(self.events.publish(MembershipEvent(
                kind=kind, node_id=state.node_id, node_address=state.node_address)))
        self._schedule()

    def _remove(self, node_id: str) -> None:
        self.nodes.pop(node_id, None)
        for expiry in (self.live, self.heard, self.own):
            expiry.drop(node_id)
        self._changed.discard(node_id)
        self._left.add(node_id)
        self._schedule()

    # --- deltas -----------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._flush_at is None and self.active:
            loop = asyncio.get_running_loop()
            self._flush_at = loop.call_later(self.settings.membership_batch_s,
                                             lambda: self._spawn(self._flush()))

    def _flush_soon(self) -> None:
        """Send what changed at once, but at most once per batch window: a node that
        changes its version on every heartbeat costs one delta per window, as any change."""
        now = self.clock()
        if now - self._urgent_at < self.settings.membership_batch_s:
            self._schedule()
            return
        self._urgent_at = now
        self._spawn(self.publish_now())

    async def publish_now(self) -> None:
        """Send what changed without waiting for the batch (a removal: gone at once)."""
        if self._flush_at is not None:
            self._flush_at.cancel()
        await self._flush()

    async def _flush(self) -> None:
        """Publish what changed since the last delta, as the next delta of this epoch."""
        self._flush_at = None
        async with self._publishing:
            changed, left = self._changed, self._left
            self._changed, self._left = set(), set()
            if not self.active or not (changed or left or self.seq == 0):
                return  # nothing to say (a new epoch's first delta always goes): no number spent
            if not self.events.bus.ready:
                # Nothing can be sent: keep the changes (and the number) for a later delta.
                # A number used for a delta never sent would go unnoticed by followers
                # when no delta came after it.
                self._changed |= changed
                self._left |= left
                asyncio.get_running_loop().call_later(RETRY_FLUSH_S, self._schedule)
                return
            self.seq += 1
            delta = MembershipDelta(
                epoch=self.epoch, seq=self.seq,
                nodes=[self.nodes[node_id] for node_id in sorted(changed)
                       if node_id in self.nodes],
                left=sorted(node_id for node_id in left if node_id not in self.nodes))
            try:
                await self.events.publish(delta)
            except Exception as exc:  # noqa: BLE001 - lost: followers see the gap and resync
                log.warning("could not publish a membership delta", extra={"error": str(exc)})

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
