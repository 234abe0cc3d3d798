"""``/connected-nodes`` and host choices, from the API process's own membership view.

No request to the registry per call: the view follows the liveness owner's
deltas (:mod:`shared.membership_feed`), and the body of ``/connected-nodes``
is encoded once per change of the live list. Until the view is in sync (at
start, or after a lost delta) the routes ask the registry, as they always did.
"""

from __future__ import annotations

import orjson

from shared.hosts import choose_hosts
from shared.membership import Membership
from shared.membership_feed import MembershipFeed


class LiveNodes:
    """The live nodes of one API process's view, and the answers made of them."""

    def __init__(self, membership: Membership, feed: MembershipFeed, n_replica: int) -> None:
        self.membership = membership
        self.feed = feed
        self.n_replica = n_replica
        self._listed: tuple[int, bytes, list[tuple[str, str]]] = (-1, b"", [])

    @property
    def ready(self) -> bool:
        """True when the view is in sync with the owner's deltas (answers come from it)."""
        return self.feed.loaded.is_set() and self.membership.synced

    def connected_body(self) -> bytes:
        """The JSON body of ``/connected-nodes``: live ids, sorted."""
        return self._current()[1]

    def choose(self, encrypted: bool) -> list[tuple[str, str]]:
        """Distinct live nodes at random: N_REPLICA, or 4 x N_REPLICA (all or none)."""
        return choose_hosts(self._current()[2], self.n_replica, encrypted)

    def _current(self) -> tuple[int, bytes, list[tuple[str, str]]]:
        generation = self.membership.live_generation
        if self._listed[0] != generation:
            live = self.membership.live()
            body = orjson.dumps({"grid-nodes": [node_id for node_id, _ in live]})
            self._listed = (generation, body, live)
        return self._listed
