"""Property: a follower of batched membership deltas, some lost or repeated, is never wrong.

No broker: hypothesis drives a model of the liveness owner (node states changed,
changes batched into numbered deltas, some deltas lost, some delivered twice,
snapshots read at any time, as :mod:`shared.membership_feed` reads them) and one
follower :class:`~shared.membership.Membership`. After every step:

- while the follower counts itself in sync, its nodes are the owner's nodes as
  they were at some moment since the delta it is at was cut (a snapshot may be
  a little ahead: the next delta repeats what it holds);
- one generation is always one view: an answer cached at a generation is right
  whenever that generation is seen again;
- a lost delta leaves the follower unsynced (nothing cacheable) until a snapshot.

At the end, with every later delta delivered and snapshots read while needed
(at most two: the deltas kept for the first may be of an older epoch), the
follower is the owner.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.contracts import MembershipDelta, MembershipSnapshot, NodeState
from shared.liveness import Expiry
from shared.membership import Membership

NODES = ["a", "b", "c", "d"]
states = st.builds(
    lambda node_id, live, heard, version, port: NodeState(
        node_id=node_id, node_address=f"http://{node_id}:{port}", live=live or heard,
        heard=heard, own=heard, version=version),
    st.sampled_from(NODES), st.booleans(), st.booleans(),
    st.sampled_from([None, "1", "2"]), st.sampled_from([5000, 5001]))
steps = st.lists(st.one_of(
    st.tuples(st.just("set"), states),
    st.tuples(st.just("left"), st.sampled_from(NODES)),
    st.tuples(st.just("cut")),
    st.tuples(st.just("cut")),
    st.tuples(st.just("lose")),
    st.tuples(st.just("repeat")),
    st.tuples(st.just("resync")),
    st.tuples(st.just("new_epoch")),
), max_size=40)


class Owner:
    """The owner's state, its pending changes, and every state it ever had."""

    def __init__(self) -> None:
        self.epoch, self.seq = "e0", 0
        self.nodes: dict[str, NodeState] = {}
        self.changed: set[str] = set()
        self.left: set[str] = set()
        self.timeline: list[dict[str, NodeState]] = [{}]
        self.cut_at = {("e0", 0): 0}

    def set(self, state: NodeState) -> None:
        self.nodes[state.node_id] = state
        self.changed.add(state.node_id)

    def remove(self, node_id: str) -> None:
        if self.nodes.pop(node_id, None) is not None:
            self.changed.discard(node_id)
            self.left.add(node_id)

    def cut(self) -> MembershipDelta:
        self.seq += 1
        delta = MembershipDelta(
            epoch=self.epoch, seq=self.seq,
            nodes=[self.nodes[n] for n in sorted(self.changed) if n in self.nodes],
            left=sorted(n for n in self.left if n not in self.nodes))
        self.changed, self.left = set(), set()
        self.cut_at[(self.epoch, self.seq)] = len(self.timeline) - 1
        return delta

    def new_epoch(self) -> None:
        """Another registry worker takes over (its first delta announces the epoch)."""
        self.epoch, self.seq = f"e{len(self.timeline)}", 0
        self.changed, self.left = set(), set()
        self.cut_at[(self.epoch, 0)] = len(self.timeline) - 1

    def snapshot(self) -> MembershipSnapshot:
        return MembershipSnapshot(epoch=self.epoch, seq=self.seq, nodes=list(self.nodes.values()))


class Follower:
    """A Membership fed as the feed feeds it: deltas kept when they do not follow."""

    def __init__(self, owner: Owner) -> None:
        self.membership = Membership()
        self.membership.load(owner.snapshot())
        self.kept: list[MembershipDelta] = []
        self.views: dict[int, tuple] = {}

    def deliver(self, delta: MembershipDelta) -> None:
        if not self.membership.apply(delta):
            self.kept.append(delta)

    def resync(self, owner: Owner) -> None:
        kept, self.kept = self.kept, []
        self.membership.catch_up(owner.snapshot(), kept)

    def check(self, owner: Owner) -> None:
        membership = self.membership
        view = membership.view()
        seen = (dict(view.expected), dict(view.versions), view.digest)
        assert self.views.setdefault(view.generation, seen) == seen, "one generation, two views"
        if not membership.synced:
            assert not view.cacheable
            return
        since = owner.cut_at[(membership.epoch, membership.seq)]
        assert membership.nodes in owner.timeline[since:], (membership.nodes, owner.timeline)


def run(script: list[tuple]) -> None:
    owner = Owner()
    follower = Follower(owner)
    last: MembershipDelta | None = None
    lose = False
    for action, *arguments in script:
        if action == "set":
            owner.set(arguments[0])
        elif action == "left":
            owner.remove(arguments[0])
        elif action == "cut":
            last = owner.cut()
            if not lose:
                follower.deliver(last)
            lose = False
        elif action == "lose":
            lose = True
        elif action == "repeat" and last is not None:
            follower.deliver(last)
        elif action == "resync":
            follower.resync(owner)
        elif action == "new_epoch":
            owner.new_epoch()
        owner.timeline.append(dict(owner.nodes))
        follower.check(owner)
    follower.deliver(owner.cut())
    for _attempt in range(2):  # as the feed does: again while not in sync
        if not follower.membership.synced:
            follower.resync(owner)
    assert follower.membership.synced and follower.membership.nodes == owner.nodes
    follower.check(owner)


@settings(max_examples=400, deadline=None, database=None)
@given(script=steps)
def test_a_follower_of_lost_and_batched_deltas_is_never_wrong(script: list[tuple]) -> None:
    run(script)


def test_a_gap_unsyncs_until_a_snapshot() -> None:
    owner = Owner()
    follower = Follower(owner)
    owner.set(NodeState(node_id="a", node_address="http://a:5000", heard=True, version="1"))
    owner.cut()  # lost
    owner.set(NodeState(node_id="b", node_address="http://b:5000", heard=True, version="1"))
    follower.deliver(owner.cut())
    assert not follower.membership.synced and follower.membership.view().digest is None
    follower.resync(owner)
    assert follower.membership.synced and set(follower.membership.expected()) == {"a", "b"}
    assert follower.membership.view().digest is not None


def test_a_snapshot_older_than_the_view_does_not_take_it_back() -> None:
    """A periodic snapshot answered after a later delta: the view keeps the later state."""
    owner = Owner()
    follower = Follower(owner)
    owner.set(NodeState(node_id="a", node_address="http://a:5000", heard=True, version="1"))
    follower.deliver(owner.cut())
    snapshot = owner.snapshot()  # read now, answered after the next delta
    owner.set(NodeState(node_id="a", node_address="http://a:5000", heard=True, version="2"))
    follower.deliver(owner.cut())
    follower.membership.catch_up(snapshot, [])
    assert follower.membership.synced and follower.membership.seq == owner.seq
    assert follower.membership.nodes == owner.nodes


def test_expiry_at_the_ttl_boundary() -> None:
    """Heard at t = 100 with a TTL of 15: live at 115, silent at 115.001."""
    expiry = Expiry(15.0)
    expiry.touch("n", 100.0)
    assert list(expiry.due(115.0)) == [] and expiry.next_due() == 115.0
    assert list(expiry.due(115.001)) == ["n"] and "n" not in expiry


def test_expiry_finds_the_silent_oldest_first() -> None:
    expiry = Expiry(1.0)
    for at, node_id in enumerate("abc"):
        expiry.touch(node_id, float(at))
    expiry.touch("a", 5.0)  # heard again: now the newest
    assert list(expiry.due(3.5)) == ["b", "c"] and expiry.heard_at("a") == 5.0
