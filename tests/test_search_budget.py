"""The search worker's node-query budget: a full worker refuses what it could not finish in time."""

from __future__ import annotations

import asyncio

import pytest

from services.search.budget import QueryBudget
from shared.contracts import NodeQuery, NodeReply
from shared.errors import Overloaded
from tests.harness import Harness

BUSY = {"message": "The gateway is busy with other searches; try again shortly."}


async def settle() -> None:
    """Let every ready task run until it blocks again (a bounded number of loop turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_budget_serves_in_arrival_order_and_runs_an_oversized_search_alone() -> None:
    budget = QueryBudget(10)
    started: list[str] = []
    release = {name: asyncio.Event() for name in "abcd"}

    async def search(name: str, queries: int) -> None:
        async with budget.take(queries, within_s=5):
            started.append(name)
            await release[name].wait()

    tasks = [asyncio.create_task(search(name, queries))
             for name, queries in (("a", 6), ("b", 6), ("c", 50), ("d", 1))]
    await settle()
    assert started == ["a"]  # b does not fit beside a; c and d queue behind b
    release["a"].set()
    await settle()
    assert started == ["a", "b"] and budget.in_use == 6
    release["b"].set()
    await settle()
    assert started == ["a", "b", "c"] and budget.in_use == 10  # larger than all: alone
    release["c"].set()
    release["d"].set()
    await asyncio.gather(*tasks)
    assert started == ["a", "b", "c", "d"] and budget.in_use == 0


async def test_budget_refuses_after_the_wait_and_gives_nothing_away() -> None:
    budget = QueryBudget(4)
    async with budget.take(4, within_s=1):
        with pytest.raises(Overloaded):
            async with budget.take(1, within_s=0.05):
                pass
        assert budget.in_use == 4
    assert budget.in_use == 0
    async with budget.take(4, within_s=0):  # room at once: no wait needed
        assert budget.in_use == 4


async def test_full_worker_answers_503_busy_and_recovers(harness: Harness) -> None:
    # One node, a budget of one query: a search in flight fills the worker. The
    # API waits 1.5 s and a search may last 2 s, so a second search that cannot
    # start within 0.5 s could not finish in time and is refused at once.
    gateway = await harness.gateway(rpc_timeout_s=1.5,
                                    search={"search_timeout_s": 2.0,
                                            "search_max_node_queries": 1})
    held = asyncio.Event()
    release = asyncio.Event()

    async def answer(node_id: str, query: NodeQuery) -> NodeReply:
        if query.model_id == "held":
            held.set()
            await release.wait()
        return NodeReply(node_id=node_id, match=True)

    await harness.node(gateway, "slow", answer)
    await gateway.wait_search_sees(1)

    first = asyncio.create_task(gateway.client.post("/search-model", json={"model_id": "held"}))
    await asyncio.wait_for(held.wait(), 5)
    refused = await gateway.client.post("/search-model", json={"model_id": "other"})
    assert (refused.status_code, refused.json()) == (503, BUSY)
    release.set()
    answered = await first
    assert (answered.status_code, answered.json()) == (200, [["slow", "http://slow:5000"]])
    again = await gateway.client.post("/search-model", json={"model_id": "other"})
    assert (again.status_code, again.json()) == (200, [["slow", "http://slow:5000"]])
    overloaded = gateway.searches[0].metrics.registry.get_sample_value(
        "grid_search_overloaded_total")
    assert overloaded == 1
