"""A worker that dies holding requests: another worker answers them, joins stay idempotent."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import uuid

from shared.contracts import NodeQuery, NodeReply
from tests.harness import Harness, eventually, spawn, stop_processes


async def test_sigkill_of_a_search_worker_loses_no_request(
        harness: Harness, amqp_url: str, namespace: str) -> None:
    gateway = await harness.gateway(searches=0, wait=False)
    workers = [spawn("services.search", amqp_url, namespace, GRID_SEARCH_TIMEOUT_S="5")
               for _ in range(2)]
    try:
        await gateway.wait_ready()
        received: list[NodeQuery] = []

        async def slow_answer(node_id: str, query: NodeQuery) -> NodeReply:
            received.append(query)
            await asyncio.sleep(0.3)  # the node's own work, so searches stay in flight
            return NodeReply(node_id=node_id, match=(query.model_id or "").endswith("-yes"))

        await harness.node(gateway, "alice", slow_answer)
        await gateway.wait_search_sees(1)
        model_ids = [f"m-{uuid.uuid4().hex}-{'yes' if i % 2 else 'no'}" for i in range(40)]
        requests = [asyncio.create_task(gateway.client.post("/search-model",
                                                            json={"model_id": model_id}))
                    for model_id in model_ids]
        held = lambda: _true(sum(q.op == "has_model" for q in received) >= 10)  # noqa: E731
        await eventually(held)  # both workers hold searches
        workers[0].send_signal(signal.SIGKILL)
        responses = await asyncio.gather(*requests)
        for model_id, response in zip(model_ids, responses, strict=True):
            assert response.status_code == 200
            expected = [["alice", "http://alice:5000"]] if model_id.endswith("-yes") else []
            assert response.json() == expected
    finally:
        stop_processes(workers)


async def test_sigkill_of_a_registry_worker_loses_no_join(
        harness: Harness, amqp_url: str, namespace: str, tmp_path) -> None:
    database = tmp_path / "registry.sqlite3"
    gateway = await harness.gateway(registries=0, wait=False)
    env = {"GRID_DATABASE_URL": f"sqlite:///{database}"}
    workers = [spawn("services.registry", amqp_url, namespace, **env) for _ in range(2)]
    try:
        await gateway.wait_search_sees(0)
        await gateway.wait_ready()
        ids = [f"n{i:03d}" for i in range(300)]
        requests = [asyncio.create_task(gateway.client.post(
            "/join", json={"node-id": node_id, "node-address": f"http://{node_id}:1"}))
            for node_id in ids]
        await eventually(lambda: _true(_rows(database) >= 20), interval=0.001)
        workers[0].send_signal(signal.SIGKILL)
        responses = await asyncio.gather(*requests)
        assert [response.status_code for response in responses] == [200] * len(ids)
        listed = (await gateway.client.get("/connected-nodes")).json()["grid-nodes"]
        assert listed == ids
    finally:
        stop_processes(workers)


async def test_redelivered_join_that_was_committed_answers_200(harness: Harness) -> None:
    """A worker commits a join and dies before replying: the redelivery answers 200, not 409."""
    gateway = await harness.gateway()
    dying = gateway.registries[0]
    committed = asyncio.Event()
    never = asyncio.Event()

    async def die_after_commit(event) -> None:
        committed.set()
        await never.wait()  # the reply is never sent: the worker "dies" here

    dying.events.publish = die_after_commit
    request = asyncio.create_task(gateway.client.post(
        "/join", json={"node-id": "alice", "node-address": "http://alice:5000"}))
    await asyncio.wait_for(committed.wait(), 10)
    await harness.registry()  # a second worker, which will receive the redelivery
    await dying.bus.connection.close()  # the connection drops with the request unacknowledged
    response = await request
    assert (response.status_code, response.json()) == (200, {"message": "Successfully Connected!"})
    assert (await gateway.client.get("/connected-nodes")).json() == {"grid-nodes": ["alice"]}
    never.set()


def _rows(database) -> int:
    try:
        with sqlite3.connect(database, timeout=1) as db:
            return db.execute("SELECT count(*) FROM nodes").fetchone()[0]
    except sqlite3.Error:
        return 0


async def _true(value: bool) -> bool:
    return value
