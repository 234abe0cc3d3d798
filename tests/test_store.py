"""The node store's behaviour, run on SQLite and on PostgreSQL from the same code."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from services.registry.store import NodeStore, open_store
from shared.errors import Conflict, NotFound
from tests.harness import Harness, eventually


@pytest.fixture
async def store(database_url: tuple[str, str]) -> NodeStore:
    url, schema = database_url
    store = open_store(url, schema)
    await store.open()
    yield store
    await store.close()


async def test_add_and_list_sorted(store: NodeStore) -> None:
    assert await store.add("bob", "http://bob:1", "r1")
    assert await store.add("alice", "http://alice:1", "r2")
    assert await store.nodes() == [("alice", "http://alice:1"), ("bob", "http://bob:1")]


async def test_duplicate_id_conflicts(store: NodeStore) -> None:
    await store.add("alice", "http://alice:1", "r1")
    with pytest.raises(Conflict):
        await store.add("alice", "http://other:1", "r2")
    assert await store.nodes() == [("alice", "http://alice:1")]


async def test_redelivered_join_succeeds_again(store: NodeStore) -> None:
    """The same request id finds its own row: a redelivery is not a conflict."""
    assert await store.add("alice", "http://alice:1", "r1")
    assert await store.add("alice", "http://alice:1", "r1")
    assert await store.nodes() == [("alice", "http://alice:1")]


async def test_remove_needs_the_address(store: NodeStore) -> None:
    await store.add("alice", "http://alice:1", "r1")
    with pytest.raises(NotFound):
        await store.remove("alice", "http://mallory:1")
    with pytest.raises(NotFound):
        await store.remove("bob", "http://alice:1")
    await store.remove("alice", "http://alice:1")
    assert await store.nodes() == []


async def test_racing_stores_give_one_winner(database_url: tuple[str, str]) -> None:
    url, schema = database_url
    stores = [open_store(url, schema) for _ in range(2)]
    for store in stores:
        await store.open()
    try:
        results = await asyncio.gather(
            *(stores[i % 2].add("alice", f"http://a{i}:1", f"r{i}") for i in range(50)),
            return_exceptions=True,
        )
    finally:
        for store in stores:
            await store.close()
    assert sum(result is True for result in results) == 1
    assert sum(isinstance(result, Conflict) for result in results) == 49


async def test_duplicate_join_race_across_two_registry_workers(
        harness: Harness, database_url: tuple[str, str]) -> None:
    """50 concurrent joins of one id through two workers: exactly one 200, 49 409s."""
    url, schema = database_url
    store = {"database_url": url, "database_schema": schema}
    gateway = await harness.gateway(registries=2, registry=store)
    body = {"node-id": "alice", "node-address": "http://alice:5000"}
    responses = await asyncio.gather(*(gateway.client.post("/join", json=body) for _ in range(50)))
    codes = sorted(response.status_code for response in responses)
    assert codes == [200] + [409] * 49
    handled = [
        sum(worker.metrics.registry.get_sample_value(
            "grid_worker_message_seconds_count",
            {"service": "registry", "op": "join", "outcome": outcome}) or 0
            for outcome in ("ok", "conflict"))
        for worker in gateway.registries
    ]
    assert sum(handled) == 50
    assert all(handled), f"both workers should have taken part: {handled}"


async def test_nodes_survive_a_registry_restart(harness: Harness,
                                                database_url: tuple[str, str]) -> None:
    url, schema = database_url
    store = {"database_url": url, "database_schema": schema}
    gateway = await harness.gateway(registry=store)
    for node_id in ("alice", "bob"):
        body = {"node-id": node_id, "node-address": f"http://{node_id}:5000"}
        assert (await gateway.client.post("/join", json=body)).status_code == 200
    await gateway.registries[0].stop()
    await harness.registry(**store)

    async def listed() -> httpx.Response:
        response = await gateway.client.get("/connected-nodes")
        return response if response.status_code == 200 else None

    response = await eventually(listed)
    assert response.json() == {"grid-nodes": ["alice", "bob"]}
