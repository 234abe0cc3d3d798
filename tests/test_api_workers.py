"""Two API processes on one port (GRID_API_WORKERS=2): both answer, a killed one loses only its own.

``python -m services.api`` runs as uvicorn's supervisor with two worker
processes sharing the listening socket; every response names the process
that answered (``X-Grid-Api-Pid``). Each process has its own broker
connection and reply queue: were they shared, replies would reach the wrong
process and its requests would time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid

import httpx
import pytest

from shared.contracts import NodeQuery, NodeReply
from tests.harness import ROOT, WAIT_S, Harness, eventually
from tests.private_broker import free_ports

pytestmark = pytest.mark.slow

PID_HEADER = "x-grid-api-pid"
NODE_WORK_S = 1.0  # a search stays in flight this long at the API
CLIENTS_PER_WORKER = 3
START_S = 30.0


def spawn_api(amqp_url: str, namespace: str, port: int) -> subprocess.Popen:
    """``python -m services.api`` with two workers, in a process group of its own."""
    env = {**os.environ, "AMQP_URL": amqp_url, "GRID_NAMESPACE": namespace,
           "GRID_LOG_LEVEL": "WARNING", "GRID_API_WORKERS": "2", "GRID_API_PORT": str(port),
           "GRID_CONSUMER_CHECK_S": "0.1", "GRID_RPC_TIMEOUT_S": "5"}
    return subprocess.Popen([sys.executable, "-m", "services.api"], cwd=ROOT, env=env,
                            start_new_session=True)


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the supervisor (it stops its workers); SIGKILL the whole group if it lingers."""
    process.terminate()
    try:
        process.wait(WAIT_S)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


async def slow_answer(node_id: str, query: NodeQuery) -> NodeReply:
    await asyncio.sleep(NODE_WORK_S)
    return NodeReply(node_id=node_id, match=(query.model_id or "").endswith("-yes"))


def expected(model_id: str) -> list:
    return [["slow", "http://slow:5000"]] if model_id.endswith("-yes") else []


async def pid_of(url: str) -> str | None:
    """The process answering a fresh connection, None while nothing is ready."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        try:
            response = await client.get("/readyz")
        except httpx.HTTPError:
            return None
    return response.headers.get(PID_HEADER) if response.status_code == 200 else None


async def clients_by_worker(url: str, count: int) -> dict[str, list[httpx.AsyncClient]]:
    """``count`` one-connection clients for each of the two workers, opened until both are seen."""
    found: dict[str, list[httpx.AsyncClient]] = {}

    async def enough() -> bool:
        client = httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(
            max_connections=1))
        pid = (await client.get("/healthz")).headers[PID_HEADER]
        if len(found.get(pid, [])) < count:
            found.setdefault(pid, []).append(client)
        else:
            await client.aclose()
        return len(found) == 2 and all(len(c) == count for c in found.values())

    await eventually(enough, within=START_S, interval=0.01)
    return found


async def search(client: httpx.AsyncClient, model_id: str) -> httpx.Response:
    return await client.post("/search-model", json={"model_id": model_id})


async def test_two_api_processes_share_a_port_and_die_alone(
        harness: Harness, amqp_url: str, namespace: str) -> None:
    gateway = await harness.gateway(search={"search_timeout_s": 5.0})
    received: list[NodeQuery] = []

    async def answer(node_id: str, query: NodeQuery) -> NodeReply:
        received.append(query)
        return await slow_answer(node_id, query)

    await harness.node(gateway, "slow", answer)
    await gateway.wait_search_sees(1)
    port = free_ports(1)[0]
    url = f"http://127.0.0.1:{port}"
    api = spawn_api(amqp_url, namespace, port)
    pids: set[str] = set()
    clients: dict[str, list[httpx.AsyncClient]] = {}
    try:
        await eventually(lambda: pid_of(url), within=START_S)
        clients = await clients_by_worker(url, CLIENTS_PER_WORKER)
        pids |= set(clients)
        doomed, survivor = sorted(clients)

        # Both answer, correctly.
        for pid, own in clients.items():
            model_id = f"m-{uuid.uuid4().hex}-yes"
            response = await search(own[0], model_id)
            assert response.status_code == 200 and response.json() == expected(model_id)
            assert response.headers[PID_HEADER] == pid

        # Searches in flight on both; one process is killed while it holds its own.
        asked = {pid: [f"m-{uuid.uuid4().hex}-{'yes' if n % 2 else 'no'}" for n in range(
            len(own))] for pid, own in clients.items()}
        before = len(received)
        requests = {pid: [asyncio.create_task(search(client, model_id))
                          for client, model_id in zip(own, asked[pid], strict=True)]
                    for pid, own in clients.items()}
        in_flight = 2 * CLIENTS_PER_WORKER
        await eventually(lambda: _true(len(received) - before >= in_flight))
        os.kill(int(doomed), signal.SIGKILL)

        lost = await asyncio.gather(*requests[doomed], return_exceptions=True)
        assert all(isinstance(outcome, httpx.TransportError) for outcome in lost), lost
        for model_id, task in zip(asked[survivor], requests[survivor], strict=True):
            response = await task
            assert response.status_code == 200, response.text
            assert response.json() == expected(model_id)
            assert response.headers[PID_HEADER] == survivor

        # The survivor keeps answering; the supervisor replaces the dead process.
        response = await search(clients[survivor][0], "m-after-yes")
        assert (response.status_code, response.json()) == (200, expected("m-after-yes"))

        async def replaced() -> bool:
            pid = await pid_of(url)
            if pid is not None:
                pids.add(pid)
            return len(pids - {doomed, survivor}) > 0

        await eventually(replaced, within=START_S)
    finally:
        for own in clients.values():
            for client in own:
                await client.aclose()
        stop_group(api)


async def _true(value: bool) -> bool:
    return value
