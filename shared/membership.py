"""A process's view of the network, followed from the liveness owner's membership deltas.

The registry's liveness owner (:mod:`services.registry.owner`) is the one
reader of heartbeats. Every other process (search workers, API processes,
bridges, the other registry workers) keeps a :class:`Membership`: a snapshot
read from the registry, then the owner's numbered deltas applied in order
(:mod:`shared.membership_feed` does the feeding). A delta of another epoch, or
one that skips a number, is not applied: the view counts as unsynced (nothing
may be cached from it) until a snapshot brings it back.

A search takes one :class:`MembershipView` (immutable) and reads everything it
needs from it: the nodes to wait for, their versions, the generation and the
digest that cached answers are keyed by (:mod:`shared.answers`). No reader
changes the membership; only ``apply``, ``load``, ``joined_here``,
``left_here`` and ``invalidate`` do.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from shared.contracts import MembershipDelta, MembershipSnapshot, NodeState


@dataclass(frozen=True)
class MembershipView:
    """What a search sees, taken once: do not modify the dicts.

    ``expected``: the nodes heard on the bus within the TTL (id -> address).
    ``own``: those of them heard on their own (not only through a bridge): each
    has a queue of its own.
    ``digest``: a digest of expected nodes, addresses and versions that two
    processes at the same delta agree on; None while a node announces no version
    or while the view is unsynced (nothing may be cached then). Computed on first
    use (a join storm moves the generation on faster than searches read it).
    """

    generation: int
    expected: dict[str, str]
    versions: dict[str, str | None]
    synced: bool = True
    own: frozenset[str] = frozenset()

    @cached_property
    def digest(self) -> str | None:
        if not self.synced or any(version is None for version in self.versions.values()):
            return None
        return digest_of(self.expected, self.versions)

    @property
    def cacheable(self) -> bool:
        return self.digest is not None


def digest_of(expected: dict[str, str], versions: dict[str, str | None]) -> str:
    lines = (f"{node_id}\0{address}\0{versions[node_id]}\n"
             for node_id, address in sorted(expected.items()))
    return hashlib.blake2b("".join(lines).encode(), digest_size=12).hexdigest()


class Membership:
    """Registered nodes and their states, as of delta ``seq`` of the owner's ``epoch``.

    ``generation`` moves on with every change of a heard node's state (what a
    search sees: the heard nodes, their addresses, versions and whether they
    speak for themselves), of the live list or of an address, and with every
    loss of sync; an answer computed at one generation is still right at the
    same generation.
    ``live_generation`` moves on with every change to the live list
    (``/connected-nodes``, host choices).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.nodes: dict[str, NodeState] = {}
        self.epoch = ""
        self.seq = -1
        self.synced = False
        self.generation = 0
        self.live_generation = 0
        self._known_since: dict[str, float] = {}
        self._view: MembershipView | None = None
        self._watchers: list[Callable[[], None]] = []
        # A join or delete this process applied itself since the last snapshot: a delta
        # racing it could leave the view wrong where no delta number shows it, so the
        # periodic look reads the whole snapshot (MembershipFeed).
        self.local_edits = False
        # Nodes enrolled as bridged: in secure mode, a bridge may speak only for these.
        self.bridged: set[str] = set()

    # --- changes ----------------------------------------------------------------

    def apply(self, delta: MembershipDelta) -> bool:
        """Apply the next delta; False (nothing applied) when it is not the next one."""
        if self.synced and delta.epoch == self.epoch and delta.seq <= self.seq:
            return True  # already in the snapshot this view was loaded from
        if not self.synced or delta.epoch != self.epoch or delta.seq != self.seq + 1:
            self.invalidate()
            return False
        self.seq = delta.seq
        for node_id in delta.left:
            self._put(node_id, None)
        for state in delta.nodes:
            self._put(state.node_id, state)
        return True

    def load(self, snapshot: MembershipSnapshot) -> None:
        """Replace the view with a snapshot (a change only where the states differ).

        A snapshot of this epoch older than the delta the view is at (read while a
        later delta arrived) is left aside: the view is newer, and loading it would
        take the view back in time while it still counts as in sync.
        """
        if self.synced and snapshot.epoch == self.epoch and snapshot.seq < self.seq:
            return
        states = {state.node_id: state for state in snapshot.nodes}
        for node_id in set(self.nodes) - set(states):
            self._put(node_id, None)
        for state in states.values():
            self._put(state.node_id, state)
        if not self.synced:
            self._bump(live=False)  # from unsynced (uncacheable) to synced
        self.epoch, self.seq, self.synced = snapshot.epoch, snapshot.seq, True
        self.local_edits = False

    def catch_up(self, snapshot: MembershipSnapshot, kept: list[MembershipDelta]) -> bool:
        """Load a snapshot, then the deltas kept while it was read; True when in sync.

        A kept delta of another epoch may be older or newer than the snapshot: the
        view stays unsynced, and the next snapshot (with the deltas kept since) decides.
        """
        self.load(snapshot)
        for delta in kept:
            if delta.epoch != snapshot.epoch or not self.apply(delta):
                self.invalidate()
                return False
        return True

    def invalidate(self) -> None:
        """Deltas may have been missed: nothing of this view may be cached until a snapshot."""
        if self.synced:
            self.synced = False
            self._bump(live=False)

    def joined_here(self, node_id: str, address: str) -> None:
        """A join this process saw succeed: listed at once (the owner's delta follows)."""
        if node_id not in self.nodes:
            self.local_edits = True
            self._put(node_id, NodeState(node_id=node_id, node_address=address))

    def left_here(self, node_id: str) -> None:
        """A delete this process saw succeed: unlisted at once."""
        self.local_edits = True
        self._put(node_id, None)

    def watch(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (cheap, synchronous) whenever what a search sees may have changed."""
        self._watchers.append(callback)

    # --- readers (no side effects) ----------------------------------------------

    def view(self) -> MembershipView:
        """The membership as a search sees it now (the same object until the next change)."""
        view = self._view
        if view is None or view.generation != self.generation:
            view = self._view = self._build_view()
        return view

    def live(self) -> list[tuple[str, str]]:
        """The live nodes, (id, address) sorted by id."""
        return sorted((node_id, state.node_address) for node_id, state in self.nodes.items()
                      if state.live)

    @property
    def addresses(self) -> dict[str, str]:
        """Every registered node's address."""
        return {node_id: state.node_address for node_id, state in self.nodes.items()}

    @property
    def versions(self) -> dict[str, str | None]:
        return self.view().versions

    def expected(self) -> dict[str, str]:
        return self.view().expected

    def speaks_for_itself(self, node_id: str) -> bool:
        """True when the node itself was heard on the bus within the TTL."""
        state = self.nodes.get(node_id)
        return state is not None and state.own

    def known_for(self, node_id: str) -> float:
        """Seconds since this process learned that the node is registered (0: unknown)."""
        since = self._known_since.get(node_id)
        return 0.0 if since is None else self.clock() - since

    def snapshot(self) -> MembershipSnapshot:
        return MembershipSnapshot(epoch=self.epoch, seq=self.seq, nodes=list(self.nodes.values()))

    # --- inside -----------------------------------------------------------------

    def _build_view(self) -> MembershipView:
        expected = {node_id: state.node_address for node_id, state in self.nodes.items()
                    if state.heard}
        versions = {node_id: self.nodes[node_id].version for node_id in expected}
        own = frozenset(node_id for node_id in expected if self.nodes[node_id].own)
        return MembershipView(self.generation, expected, versions, self.synced, own)

    def _put(self, node_id: str, state: NodeState | None) -> None:
        old = self.nodes.get(node_id)
        if old == state:
            return
        if state is None:
            del self.nodes[node_id]
            self._known_since.pop(node_id, None)
            self.bridged.discard(node_id)
        else:
            self.nodes[node_id] = state
            self._known_since.setdefault(node_id, self.clock())
            (self.bridged.add if state.bridged else self.bridged.discard)(node_id)
        searched = (old is not None and old.heard) or (state is not None and state.heard)
        listed = (old is not None and old.live) != (state is not None and state.live)
        moved = old is not None and state is not None and old.node_address != state.node_address
        if searched or listed or moved:
            self._bump(live=listed or moved)

    def _bump(self, live: bool) -> None:
        self.generation += 1
        if live:
            self.live_generation += 1
        for callback in self._watchers:
            callback()
