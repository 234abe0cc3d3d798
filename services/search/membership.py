"""The search worker's view of the network: registered nodes, who is live on the bus, versions.

Fed by membership events and heartbeats, bootstrapped and refreshed from the
registry. Only nodes heard on the bus within the TTL are waited for: a node
that joined over HTTP but never spoke on the bus cannot answer a broadcast.

``generation`` counts changes to what a search would see (the live nodes and
their addresses, and their inventory versions): an answer computed at one
generation is still right at the same generation, if every node it asked
reports a version (see :mod:`services.search.cache`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.contracts import Heartbeat, MembershipEvent, NodeRecord
from shared.liveness import Liveness


class Membership:
    """Registered node addresses, bus liveness and inventory versions."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.addresses: dict[str, str] = {}
        self.versions: dict[str, str | None] = {}
        self.liveness = Liveness(ttl_s, clock)
        self.clock = clock
        self.generation = 0
        # The live set, kept until a change or until its first node could fall silent.
        self._expected: dict[str, str] | None = None
        self._valid_until = 0.0
        self._versioned = False

    def load(self, records: list[NodeRecord]) -> None:
        """Replace the node list with the registry's, keeping what was heard since."""
        self.addresses = {record.node_id: record.node_address for record in records}
        for node_id in set(self.versions) - set(self.addresses):
            del self.versions[node_id]
        for record in records:
            age = record.heartbeat_age_s
            if age is not None and not self.liveness.is_live(record.node_id):
                self.liveness.heard(record.node_id, ago_s=age)
        self._expected = None

    def on_event(self, event: MembershipEvent) -> None:
        if event.kind == "joined":
            self.addresses[event.node_id] = event.node_address
        elif event.kind == "left":
            self.addresses.pop(event.node_id, None)
            self.versions.pop(event.node_id, None)
            self.liveness.forget(event.node_id)
        self._expected = None

    def on_heartbeat(self, beat: Heartbeat) -> None:
        node_id, version = beat.node_id, beat.version
        if node_id not in self.addresses:
            return
        if not self.liveness.is_live(node_id):
            self._expected = None
        self.liveness.heard(node_id)
        if self.versions.get(node_id) != version or node_id not in self.versions:
            self.versions[node_id] = version
            self.generation += 1
            self._expected = None

    def expected(self) -> dict[str, str]:
        """The nodes a search should wait for: registered and heard within the TTL.

        The dict is shared until the next change: callers must not modify it.
        """
        if self._expected is None or self.clock() >= self._valid_until:
            self._recompute()
        return self._expected

    def all_versioned(self) -> bool:
        """True when every live node reports an inventory version (answers may be cached)."""
        self.expected()
        return self._versioned

    def _recompute(self) -> None:
        is_live, expires_at = self.liveness.is_live, self.liveness.expires_at
        live = {node_id: address for node_id, address in self.addresses.items()
                if is_live(node_id)}
        if live != self._expected:
            self.generation += 1
        self._expected = live
        self._valid_until = min((expires_at(node_id) for node_id in live), default=float("inf"))
        self._versioned = all(self.versions.get(node_id) is not None for node_id in live)
