"""Which nodes a bridge speaks for.

A registered node whose address is http(s) and that is not heard on the bus by
itself (a heartbeat without ``bridge``) within the TTL. A node newly known to
the bridge is left alone for ``settle_s`` first (a little more than a heartbeat
interval), long enough to hear it if it speaks for itself: an AMQP node's
address is an http URL too, and it must never be answered twice.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

from shared.membership import Membership


@lru_cache(maxsize=65536)
def speaks_http(address: str) -> bool:
    """True for an http:// or https:// address (any case)."""
    return urlsplit(address).scheme.lower() in ("http", "https")


class Roster:
    """The bridged nodes, read from a :class:`Membership` each time (it changes under us)."""

    def __init__(self, membership: Membership, settle_s: float,
                 only_enrolled: bool = False) -> None:
        self.membership = membership
        self.settle_s = settle_s
        # Secure mode: speak only for nodes enrolled --bridged (the gateway counts no other).
        self.only_enrolled = only_enrolled

    def bridged(self) -> dict[str, str]:
        """Nodes to speak for (id -> address), live or not: probes try them all."""
        return {node_id: address for node_id, address in self.membership.addresses.items()
                if self._speaks_for(node_id, address)}

    def answering(self) -> dict[str, str]:
        """Bridged nodes heard within the TTL: those a search waits for, so a broadcast calls."""
        return {node_id: address for node_id, address in self.membership.expected().items()
                if self._speaks_for(node_id, address)}

    def _speaks_for(self, node_id: str, address: str) -> bool:
        member = self.membership
        if self.only_enrolled and node_id not in member.bridged:
            return False
        return (speaks_http(address) and not member.speaks_for_itself(node_id)
                and member.known_for(node_id) >= self.settle_s)

    def beat_due(self, node_id: str, interval_s: float) -> bool:
        """True when no heartbeat for the node (from any bridge) was heard for ``interval_s``."""
        age = self.membership.liveness.age(node_id)
        return age is None or age >= interval_s
