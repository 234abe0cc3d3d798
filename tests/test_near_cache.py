"""The API's near cache keeps an answer only when its view of the network is the worker's.

No broker: two membership views are fed the same (or not the same) heartbeats by hand.
"""

from __future__ import annotations

from services.api.near_cache import NearCache
from shared.bus import Bus
from shared.contracts import Heartbeat, NodeRecord, SearchResult
from shared.membership import Membership
from shared.rpc import RpcClient
from shared.settings import ApiSettings
from shared.topology import Names

RECORDS = [NodeRecord(node_id=n, node_address=f"http://{n}:5000", live=True) for n in "ab"]
KEY = ("has_model", "m", None, False)


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def view(clock: Clock, versions: dict[str, str | None]) -> Membership:
    membership = Membership(ttl_s=15, clock=clock)
    membership.load(RECORDS)
    feed(membership, versions)
    return membership


def feed(membership: Membership, versions: dict[str, str | None]) -> None:
    for node_id, version in versions.items():
        membership.on_heartbeat(Heartbeat(node_id=node_id, version=version))


def near_cache(clock: Clock, versions: dict[str, str | None]) -> NearCache:
    settings = ApiSettings()
    bus = Bus(settings, "test")  # never connected: only the cache's logic runs
    near = NearCache(settings, RpcClient(bus, Names("t"), "api"))
    near.membership = view(clock, versions)
    return near


def answer(state: str | None) -> SearchResult:
    return SearchResult(asked=2, answered=2, nodes=[("a", "http://a:5000")], state=state)


def test_states_agree_when_the_views_do() -> None:
    clock = Clock()
    worker, near = view(clock, {"a": "1", "b": "1"}), near_cache(clock, {"b": "1", "a": "1"})
    assert worker.state() == near.membership.state() is not None
    near.keep(KEY, near.view(), answer(worker.state()))
    hit = near.get(KEY)
    assert hit is not None and hit.cached and hit.nodes == [("a", "http://a:5000")]


def test_an_answer_from_a_worker_that_saw_a_change_first_is_not_kept() -> None:
    clock = Clock()
    worker, near = view(clock, {"a": "1", "b": "1"}), near_cache(clock, {"a": "1", "b": "1"})
    feed(worker, {"a": "2"})
    near.keep(KEY, near.view(), answer(worker.state()))
    assert near.get(KEY) is None
    feed(near.membership, {"a": "2"})  # now the API has seen it too
    near.keep(KEY, near.view(), answer(worker.state()))
    assert near.get(KEY) is not None


def test_an_answer_from_a_worker_that_missed_a_change_is_not_kept() -> None:
    clock = Clock()
    worker, near = view(clock, {"a": "1", "b": "1"}), near_cache(clock, {"a": "1", "b": "2"})
    near.keep(KEY, near.view(), answer(worker.state()))
    assert near.get(KEY) is None


def test_a_change_while_the_worker_answered_drops_the_answer() -> None:
    clock = Clock()
    near = near_cache(clock, {"a": "1", "b": "1"})
    before = near.view()
    state = near.membership.state()
    feed(near.membership, {"b": "3"})
    near.keep(KEY, before, answer(state))
    assert near.get(KEY) is None


def test_nothing_is_kept_without_versions_or_a_state() -> None:
    clock = Clock()
    near = near_cache(clock, {"a": "1", "b": None})
    assert near.membership.state() is None
    near.keep(KEY, near.view(), answer(None))
    assert near.get(KEY) is None


def test_a_node_falling_silent_and_a_lost_connection_drop_everything() -> None:
    clock = Clock()
    near = near_cache(clock, {"a": "1", "b": "1"})
    near.keep(KEY, near.view(), answer(near.membership.state()))
    clock.now += 10
    feed(near.membership, {"a": "1"})  # a is heard again, b is not
    assert near.get(KEY) is not None
    clock.now += 6  # b is past its TTL
    assert near.get(KEY) is None
    near.keep(KEY, near.view(), answer(near.membership.state()))
    assert near.get(KEY) is not None
    near.forget()
    assert near.get(KEY) is None
