"""Liveness on a fake clock: a node is live for exactly its TTL after it was last heard."""

from __future__ import annotations

from shared.liveness import Liveness

TTL_S = 15.0


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_live_up_to_the_ttl_and_not_a_millisecond_after() -> None:
    clock = FakeClock(100.0)
    liveness = Liveness(TTL_S, clock)
    liveness.heard("alice")
    assert liveness.expires_at("alice") == 115.0

    clock.now = 115.0
    assert liveness.is_live("alice")
    assert liveness.sweep() == []

    clock.now = 115.001
    assert not liveness.is_live("alice")
    assert liveness.sweep() == ["alice"]
    assert liveness.sweep() == []  # reported once

    assert liveness.heard("alice")  # back: it was offline
    assert liveness.is_live("alice")


def test_heard_some_time_ago_counts_from_then() -> None:
    clock = FakeClock(100.0)
    liveness = Liveness(TTL_S, clock)
    liveness.heard("bob", ago_s=5.0)  # heard at 95
    clock.now = 110.0
    assert liveness.is_live("bob")
    clock.now = 110.001
    assert not liveness.is_live("bob")


def test_a_node_never_heard_is_not_live() -> None:
    liveness = Liveness(TTL_S, FakeClock(100.0))
    assert not liveness.is_live("carol")
    assert liveness.expires_at("carol") is None
    assert liveness.sweep() == []
