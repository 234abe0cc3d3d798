"""The search worker's view of the network: registered nodes and who is live on the bus.

Fed by membership events and heartbeats, bootstrapped and refreshed from the
registry. Only nodes heard on the bus within the TTL are waited for: a node
that joined over HTTP but never spoke on the bus cannot answer a broadcast.
"""

from __future__ import annotations

from shared.contracts import MembershipEvent, NodeRecord
from shared.liveness import Liveness


class Membership:
    """Registered node addresses plus bus liveness."""

    def __init__(self, ttl_s: float) -> None:
        self.addresses: dict[str, str] = {}
        self.liveness = Liveness(ttl_s)

    def load(self, records: list[NodeRecord]) -> None:
        """Replace the node list with the registry's, keeping what was heard since."""
        self.addresses = {record.node_id: record.node_address for record in records}
        for record in records:
            age = record.heartbeat_age_s
            if age is not None and not self.liveness.is_live(record.node_id):
                self.liveness.heard(record.node_id, ago_s=age)

    def on_event(self, event: MembershipEvent) -> None:
        if event.kind == "joined":
            self.addresses[event.node_id] = event.node_address
        elif event.kind == "left":
            self.addresses.pop(event.node_id, None)
            self.liveness.forget(event.node_id)

    def on_heartbeat(self, node_id: str) -> None:
        if node_id in self.addresses:
            self.liveness.heard(node_id)

    def expected(self) -> dict[str, str]:
        """The nodes a search should wait for: registered and heard within the TTL."""
        is_live = self.liveness.is_live
        return {node_id: address for node_id, address in self.addresses.items() if is_live(node_id)}
