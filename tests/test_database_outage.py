"""The registry loses its database: clear 503s while it is gone, then a full recovery.

The registry reaches the shared PostgreSQL through a TCP proxy of the test's
own (tests/tcp_proxy.py): cutting the proxy takes the database away from the
registry alone, as a database restart or a network partition would, and
freezing it makes the database hang. SQLite has no server to lose; its
counterpart of a hung database is another process holding the write lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest

from tests.harness import Gateway, Harness
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

RPC_TIMEOUT_S = 2.0
RECOVERY_S = 15.0
# Nodes here join over HTTP and never heartbeat: keep them live throughout.
REGISTRY = {"node_ttl_s": 300.0}
ALICE = {"node-id": "alice", "node-address": "http://alice:5000"}
BOB = {"node-id": "bob", "node-address": "http://bob:5000"}
CONNECTED = {"message": "Successfully Connected!"}
DUPLICATE = {"message": "This ID has already been registered."}
STORE_DOWN = {"message": "The node store is unavailable; try again shortly."}
# A hung store cannot say so: the API gives up at its deadline.
NO_ANSWER = {"message": "The gateway's workers did not answer in time; try again shortly."}


@asynccontextmanager
async def postgres_via_proxy(postgres_url: str) -> AsyncIterator[tuple[TcpProxy, dict]]:
    """A proxy to PostgreSQL, and registry settings for a fresh schema reached through it."""
    parts = urlsplit(postgres_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        yield proxy, {**REGISTRY, "database_url": urlunsplit(parts._replace(netloc=netloc)),
                      "database_schema": schema}
    finally:
        await proxy.close()
        connection = await asyncpg.connect(postgres_url, timeout=5)  # directly, not proxied
        try:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await connection.close()


@pytest.fixture
async def proxied_postgres(postgres_url: str) -> AsyncIterator[tuple[TcpProxy, dict]]:
    async with postgres_via_proxy(postgres_url) as found:
        yield found


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request
    return response, time.perf_counter() - started


async def first_answer_after_outage(request: Callable[[], Awaitable[httpx.Response]],
                                    within: float) -> httpx.Response:
    """Repeat ``request`` while it answers the outage's 503; return the first other answer.

    Unlike ``eventually``, a 200 or a 409 is never skipped: the first answer
    that is not a 503 is the one the test judges.
    """
    deadline = time.monotonic() + within
    while True:
        response = await request()
        if not (response.status_code == 503 and response.json() in (STORE_DOWN, NO_ANSWER)):
            return response
        assert time.monotonic() < deadline, f"still {response.status_code} after {within} s"
        await asyncio.sleep(0.05)


async def test_registry_answers_503_while_its_database_is_cut(
        harness: Harness, proxied_postgres: tuple[TcpProxy, dict]) -> None:
    proxy, store = proxied_postgres
    gateway: Gateway = await harness.gateway(registry=store, rpc_timeout_s=RPC_TIMEOUT_S)
    client = gateway.client
    response = await client.post("/join", json=ALICE)
    assert (response.status_code, response.json()) == (200, CONNECTED)
    assert proxy.connections > 0, "the registry should reach its database through the proxy"

    await proxy.cut()

    # Gone: a join answers the store's 503 within the RPC deadline, and is never
    # reported as done (200) or as taken (409). The live list and host choices
    # need no store: the API serves them from its membership view.
    for _ in range(3):
        response, seconds = await timed(client.post("/join", json=BOB))
        assert (response.status_code, response.json()) == (503, STORE_DOWN)
        assert seconds < RPC_TIMEOUT_S, f"/join: {seconds:.2f} s"
        response = await client.get("/connected-nodes")
        assert (response.status_code, response.json()) == (200, {"grid-nodes": ["alice"]})
        response = await client.get("/choose-model-host")
        assert (response.status_code, response.json()) == (200, [["alice", ALICE["node-address"]]])

    await proxy.restore()

    # Back: bob's first join that gets through is a 200 (none of the failed
    # ones registered him), alice is still registered, and both are listed.
    response = await first_answer_after_outage(
        lambda: client.post("/join", json=BOB), within=RECOVERY_S)
    assert (response.status_code, response.json()) == (200, CONNECTED)
    response = await client.post("/join", json=ALICE)
    assert (response.status_code, response.json()) == (409, DUPLICATE)
    response = await client.get("/connected-nodes")
    assert (response.status_code, response.json()) == (200, {"grid-nodes": ["alice", "bob"]})


@pytest.fixture(params=["postgres", "sqlite"])
async def hanging_store(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[
        tuple[dict, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]]:
    """(registry settings, hang, recover) for a store that stops answering without failing."""
    if request.param == "postgres":
        async with postgres_via_proxy(request.getfixturevalue("postgres_url")) as (proxy, store):

            async def hang() -> None:
                proxy.freeze()

            yield store, hang, proxy.restore
        return
    path = tmp_path / "registry.sqlite3"
    locker: sqlite3.Connection | None = None

    async def lock() -> None:
        # Another process (a backup, an sqlite3 shell) holding the write lock.
        nonlocal locker
        locker = sqlite3.connect(path, isolation_level=None, timeout=0)
        locker.execute("BEGIN EXCLUSIVE")

    async def unlock() -> None:
        if locker is not None:
            locker.execute("ROLLBACK")
            locker.close()

    try:
        yield {**REGISTRY, "database_url": f"sqlite:///{path}"}, lock, unlock
    finally:
        if locker is not None:
            locker.close()


async def test_a_join_given_up_on_a_hung_store_is_not_registered_later(
        harness: Harness, hanging_store) -> None:
    settings, hang, recover = hanging_store
    gateway = await harness.gateway(registry=settings, rpc_timeout_s=RPC_TIMEOUT_S)
    client = gateway.client
    response = await client.post("/join", json=ALICE)
    assert (response.status_code, response.json()) == (200, CONNECTED)

    await hang()
    response, seconds = await timed(client.post("/join", json=BOB))
    assert response.status_code == 503, response.text
    assert seconds < RPC_TIMEOUT_S + 1.0
    await recover()

    # The client was told to try again: bob's retry must register him.
    response = await first_answer_after_outage(
        lambda: client.post("/join", json=BOB), within=RECOVERY_S)
    assert (response.status_code, response.json()) == (200, CONNECTED)
    response = await client.get("/connected-nodes")
    assert (response.status_code, response.json()) == (200, {"grid-nodes": ["alice", "bob"]})
