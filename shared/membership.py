"""A worker's view of the network: registered nodes, and who is heard on the bus, and how.

A :class:`Membership` is fed by the heartbeats and membership events on
``<ns>.events`` and bootstrapped and refreshed from the registry's node list;
:class:`MembershipFeed` does the feeding. It tells apart a node heard *by
itself* (a heartbeat without ``bridge``) from one a bridge speaks for, so that:

- the search worker waits for :meth:`Membership.expected` (heard at all within the TTL),
  and caches answers while :attr:`Membership.generation` stays the same;
- an HTTP bridge speaks only for nodes not heard by themselves
  (:meth:`Membership.speaks_for_itself`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable

from shared.auth import SpeakerCheck
from shared.contracts import (
    LIST_NODES,
    Heartbeat,
    ListRequest,
    MembershipEvent,
    NodeList,
    NodeRecord,
)
from shared.errors import GridError
from shared.liveness import Liveness, subscribe_events
from shared.rpc import RpcClient

log = logging.getLogger(__name__)


class Membership:
    """Registered node addresses, who was heard lately (and whether by itself), versions.

    ``generation`` counts changes to what a search would see (the live nodes, their
    addresses and their inventory versions): an answer computed at one generation
    is still right at the same generation, if every node it covers announces a
    version (see :mod:`shared.answers`).
    """

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.addresses: dict[str, str] = {}
        self.versions: dict[str, str | None] = {}
        # Heard at all: by itself, or through a bridge.
        self.liveness = Liveness(ttl_s, clock)
        # Heard by itself (a heartbeat without ``bridge``).
        self.own_voice = Liveness(ttl_s, clock)
        self._known_since: dict[str, float] = {}
        self.generation = 0
        # The live set, kept until a change (stale) or until its first node could fall silent.
        self._expected: dict[str, str] = {}
        self._stale = True
        self._valid_until = 0.0
        self._versioned = False
        self._state: tuple[int, str | None] = (-1, None)  # (generation, digest)
        self._watchers: list[Callable[[], None]] = []
        # Nodes enrolled as bridged: in secure mode, a bridge may speak only for these.
        self.bridged: set[str] = set()

    def load(self, records: list[NodeRecord]) -> None:
        """Replace the node list with the registry's, keeping what was heard since."""
        for node_id in set(self.addresses) - {record.node_id for record in records}:
            self._forget(node_id)
        self.bridged = {record.node_id for record in records if record.bridged}
        for record in records:
            self._register(record.node_id, record.node_address)
            age = record.heartbeat_age_s
            if age is not None and not self.liveness.is_live(record.node_id):
                self.liveness.heard(record.node_id, ago_s=age)
        self._changed()

    def on_event(self, event: MembershipEvent) -> None:
        if event.kind == "joined":
            self._register(event.node_id, event.node_address)
            if event.bridged:
                self.bridged.add(event.node_id)
        elif event.kind == "left":
            self._forget(event.node_id)
        self._changed()

    def on_heartbeat(self, beat: Heartbeat) -> None:
        node_id = beat.node_id
        if node_id not in self.addresses:
            return  # not registered: a node joins first
        if not self.liveness.is_live(node_id):
            self._changed()
        self.liveness.heard(node_id)
        if beat.bridge is None:
            self.own_voice.heard(node_id)
        if node_id not in self.versions or self.versions[node_id] != beat.version:
            self.versions[node_id] = beat.version
            self.generation += 1
            self._changed()

    def invalidate(self) -> None:
        """Count the view as changed (events may have been missed): answers of it are stale."""
        self.generation += 1
        self._changed()

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (cheap, synchronous) whenever what a search sees may have changed."""
        self._watchers.append(callback)

    def _changed(self) -> None:
        self._stale = True
        for callback in self._watchers:
            callback()

    def expected(self) -> dict[str, str]:
        """The nodes a search should wait for: registered and heard within the TTL.

        The dict is shared until the next change: callers must not modify it.
        """
        if self._stale or self.clock() >= self._valid_until:
            self._recompute()
        return self._expected

    def all_versioned(self) -> bool:
        """True when every live node announces an inventory version (answers may be cached)."""
        self.expected()
        return self._versioned

    def state(self) -> str | None:
        """A digest of what a search sees now: the live nodes, their addresses and versions.

        Two processes following the same events agree on it; None while a live
        node announces no version (nothing may be cached then).
        """
        if not self.all_versioned():
            return None
        generation, digest = self._state
        if generation != self.generation:
            lines = (f"{node_id}\0{address}\0{self.versions[node_id]}\n"
                     for node_id, address in sorted(self._expected.items()))
            digest = hashlib.blake2b("".join(lines).encode(), digest_size=12).hexdigest()
            self._state = (self.generation, digest)
        return digest

    def speaks_for_itself(self, node_id: str) -> bool:
        """True when the node itself was heard on the bus within the TTL."""
        return self.own_voice.is_live(node_id)

    def known_for(self, node_id: str) -> float:
        """Seconds since this process learned that the node is registered (0: unknown)."""
        since = self._known_since.get(node_id)
        return 0.0 if since is None else self.clock() - since

    def _recompute(self) -> None:
        is_live, expires_at = self.liveness.is_live, self.liveness.expires_at
        live = {node_id: address for node_id, address in self.addresses.items()
                if is_live(node_id)}
        if live != self._expected:
            self.generation += 1
        self._expected, self._stale = live, False
        self._valid_until = min((expires_at(node_id) for node_id in live), default=float("inf"))
        self._versioned = all(self.versions.get(node_id) is not None for node_id in live)

    def _register(self, node_id: str, address: str) -> None:
        self.addresses[node_id] = address
        self._known_since.setdefault(node_id, self.clock())

    def _forget(self, node_id: str) -> None:
        self.addresses.pop(node_id, None)
        self.bridged.discard(node_id)
        self.versions.pop(node_id, None)
        self._known_since.pop(node_id, None)
        self.liveness.forget(node_id)
        self.own_voice.forget(node_id)


class MembershipFeed:
    """Keeps a :class:`Membership` current: events as they come, and the registry's list
    at start and every ``refresh_s`` (which heals any event missed)."""

    def __init__(self, membership: Membership, registry: RpcClient, refresh_s: float) -> None:
        self.bus = bus = registry.bus
        self.names = registry.names
        self.membership = membership
        self.registry = registry
        self.refresh_s = refresh_s
        self._refresher: asyncio.Task | None = None
        # Set once the registry's list has been read at least once.
        self.loaded = asyncio.Event()
        # Events missed while the connection was down may change what a search sees.
        bus.on_connection_lost(membership.invalidate)

    async def start(self) -> None:
        """Subscribe first, then read the list, so no event falls in between."""
        await subscribe_events(self.bus, self.names, self.membership.on_event,
                               self.membership.on_heartbeat,
                               SpeakerCheck(self.bus.settings, lambda: self.membership.bridged))
        self._refresher = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher

    async def refresh(self) -> None:
        """Read every registered node (and when it was last heard) from the registry."""
        nodes = await self.registry.call(self.names.registry_queue, LIST_NODES,
                                         ListRequest(include_offline=True), NodeList,
                                         self.bus.settings.rpc_timeout_s)
        self.membership.load(nodes.nodes)
        self.loaded.set()

    async def _refresh_forever(self) -> None:
        delay = 0.2
        while True:
            try:
                await self.refresh()
                delay = self.refresh_s
            except GridError as exc:  # registry not up yet: retry soon
                log.warning("cannot read the node list", extra={"error": exc.message})
                delay = min(max(delay * 2, 0.2), 2.0)
            await asyncio.sleep(delay)
