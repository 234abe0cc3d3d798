"""The answer cache (the search worker's and the API's: one policy, shared.answers).

An answer is kept only when it holds for the view the cache's process took
before asking, and that view is still current: the API's cache keeps an answer
only when its view of the network is the worker's. No broker: two membership
views are fed the same (or not the same) deltas by hand.
"""

from __future__ import annotations

from shared.answers import AnswerCache
from shared.contracts import MembershipDelta, MembershipSnapshot, NodeState, SearchResult
from shared.membership import Membership

EPOCH = "e1"
KEY = ("has_model", "m", None, False)


def state(node_id: str, version: str | None, heard: bool = True) -> NodeState:
    return NodeState(node_id=node_id, node_address=f"http://{node_id}:5000", heard=heard,
                     own=heard, version=version)


def view(versions: dict[str, str | None]) -> Membership:
    membership = Membership()
    membership.load(MembershipSnapshot(epoch=EPOCH, seq=0, nodes=[
        state(node_id, version) for node_id, version in versions.items()]))
    return membership


def feed(membership: Membership, versions: dict[str, str | None], heard: bool = True) -> None:
    assert membership.apply(MembershipDelta(epoch=EPOCH, seq=membership.seq + 1, nodes=[
        state(node_id, version, heard) for node_id, version in versions.items()]))


def near_cache(versions: dict[str, str | None]) -> AnswerCache:
    return AnswerCache(view(versions), max_entries=16)


def get(cache: AnswerCache, key: tuple = KEY) -> SearchResult | None:
    return cache.lookup(key, cache.membership.view()).answer


def now(cache: AnswerCache):
    return cache.membership.view()


def answer(state: str | None) -> SearchResult:
    return SearchResult(asked=2, answered=2, nodes=[("a", "http://a:5000")], state=state)


def test_states_agree_when_the_views_do() -> None:
    worker, near = view({"a": "1", "b": "1"}), near_cache({"b": "1", "a": "1"})
    assert worker.view().digest == near.membership.view().digest is not None
    near.keep(KEY, now(near), answer(worker.view().digest))
    hit = get(near)
    assert hit is not None and hit.cached and hit.nodes == [("a", "http://a:5000")]


def test_an_answer_from_a_worker_that_saw_a_change_first_is_not_kept() -> None:
    worker, near = view({"a": "1", "b": "1"}), near_cache({"a": "1", "b": "1"})
    feed(worker, {"a": "2"})
    near.keep(KEY, now(near), answer(worker.view().digest))
    assert get(near) is None
    feed(near.membership, {"a": "2"})  # now the API has seen it too
    near.keep(KEY, now(near), answer(worker.view().digest))
    assert get(near) is not None


def test_an_answer_from_a_worker_that_missed_a_change_is_not_kept() -> None:
    worker, near = view({"a": "1", "b": "1"}), near_cache({"a": "1", "b": "2"})
    near.keep(KEY, now(near), answer(worker.view().digest))
    assert get(near) is None


def test_a_change_while_the_worker_answered_drops_the_answer() -> None:
    near = near_cache({"a": "1", "b": "1"})
    before = now(near)
    state = near.membership.view().digest
    feed(near.membership, {"b": "3"})
    near.keep(KEY, before, answer(state))
    assert get(near) is None


def test_nothing_is_kept_without_versions_or_a_state() -> None:
    near = near_cache({"a": "1", "b": None})
    assert near.membership.view().digest is None
    near.keep(KEY, now(near), answer(None))
    assert get(near) is None


def test_a_node_falling_silent_and_a_lost_delta_drop_everything() -> None:
    near = near_cache({"a": "1", "b": "1"})
    near.keep(KEY, now(near), answer(near.membership.view().digest))
    feed(near.membership, {"a": "1"})  # a is heard again: nothing changed
    assert get(near) is not None
    feed(near.membership, {"b": "1"}, heard=False)  # b fell silent
    assert get(near) is None
    near.keep(KEY, now(near), answer(near.membership.view().digest))
    assert get(near) is not None
    lost = MembershipDelta(epoch=EPOCH, seq=near.membership.seq + 2)  # one went missing
    assert not near.membership.apply(lost)
    assert get(near) is None and near.membership.view().digest is None


def test_an_uncacheable_view_is_said_so_and_the_cache_keeps_its_bound() -> None:
    near = near_cache({"a": "1", "b": None})
    assert near.lookup(KEY, now(near)).outcome == "uncacheable"
    near = near_cache({"a": "1"})
    for n in range(20):
        near.keep(("has_model", str(n), None, False), now(near), answer(now(near).digest))
    assert len(near) == 16
    lookups = [near.lookup(("has_model", str(n), None, False), now(near)).outcome for n in (0, 19)]
    assert lookups == ["miss", "hit"]  # the least recently used went first
