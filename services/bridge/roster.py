"""Which nodes a bridge speaks for.

A registered node whose address is http(s) and that is not heard on the bus by
itself (a heartbeat without ``bridge``) within the TTL. A node newly known to
the bridge is left alone for ``settle_s`` first (a little more than a heartbeat
interval), long enough to hear it if it speaks for itself: an AMQP node's
address is an http URL too, and it must never be answered twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import urlsplit

from shared.membership import Membership


@lru_cache(maxsize=65536)
def speaks_http(address: str) -> bool:
    """True for an http:// or https:// address (any case)."""
    return urlsplit(address).scheme.lower() in ("http", "https")


class Roster:
    """The bridged nodes, read from a :class:`Membership` each time (it changes under us)."""

    def __init__(self, membership: Membership, settle_s: float, ttl_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic,
                 only_enrolled: bool = False) -> None:
        self.membership = membership
        self.settle_s = settle_s
        self.ttl_s = ttl_s
        self.clock = clock
        # Secure mode: speak only for nodes enrolled --bridged (the gateway counts no other).
        self.only_enrolled = only_enrolled
        # When this bridge last sent a heartbeat for each node (it hears no heartbeats:
        # the registry's liveness owner is their one reader).
        self._beats: dict[str, float] = {}

    def bridged(self) -> dict[str, str]:
        """Nodes to speak for (id -> address), live or not: probes try them all."""
        return {node_id: address for node_id, address in self.membership.addresses.items()
                if self._speaks_for(node_id, address)}

    def answering(self) -> dict[str, str]:
        """Bridged nodes heard within the TTL: those a search waits for, so a broadcast calls."""
        # As the owner's deltas say, never sooner: a search that does not wait for a
        # node drops its reply (one it does wait for has seen the same delta).
        return {node_id: address for node_id, address in self.membership.expected().items()
                if self._speaks_for(node_id, address)}

    def _speaks_for(self, node_id: str, address: str) -> bool:
        member = self.membership
        if self.only_enrolled and node_id not in member.bridged:
            return False
        return (speaks_http(address) and not member.speaks_for_itself(node_id)
                and member.known_for(node_id) >= self.settle_s)

    def beat_due(self, node_id: str, interval_s: float) -> bool:
        """True when this bridge sent no heartbeat for the node for ``interval_s``."""
        at = self._beats.get(node_id)
        return at is None or self.clock() - at >= interval_s

    def beat(self, node_id: str) -> None:
        """A heartbeat for the node is being sent now."""
        self._beats[node_id] = self.clock()
        if len(self._beats) > 2 * len(self.membership.nodes) + 64:  # forget deleted nodes
            self._beats = {n: at for n, at in self._beats.items() if n in self.membership.nodes}
