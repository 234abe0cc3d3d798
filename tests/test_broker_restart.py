"""The broker restarts under a running gateway: fast 503s while it is down, then a full recovery.

Every test here gets a RabbitMQ node of its own (tests/private_broker.py), so
stopping it never disturbs the shared broker the other tests use.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable

import httpx
import pytest

from tests.harness import Gateway, Harness, eventually
from tests.private_broker import PrivateBroker

# Reconnecting restores aio-pika's consumers and the bus's own: run on both bus paths.
pytestmark = [pytest.mark.slow, pytest.mark.both_bus_paths]

# A short TTL, so that the outage (a few seconds) outlives it: after the
# restart a node is live again only if its heartbeats really flow again.
TTL_S = 2.0
LIVENESS = {"node_ttl_s": TTL_S}
NODE = {"heartbeat_s": 0.2, "node_ttl_s": TTL_S}
RPC_TIMEOUT_S = 3.0
INVENTORY = {"models": ["mnist-cnn"], "tensors": [{"id": "x1", "tags": ["#mnist", "#train"]}]}
ALICE = {"node-id": "alice", "node-address": "http://alice:5000"}
BOB = {"node-id": "bob", "node-address": "http://bob:5000"}
RECOVERY_S = 30.0
FAST_S = 1.0


@pytest.fixture
async def broker(tmp_path) -> AsyncIterator[PrivateBroker]:
    broker = PrivateBroker(tmp_path / "rabbitmq")
    try:
        await broker.start()
        yield broker
    finally:
        await broker.close()


@pytest.fixture
def amqp_url(broker: PrivateBroker) -> str:
    """Every service and node of the test connects to the private broker."""
    return broker.url


@pytest.fixture
def namespace() -> str:
    # The private broker is thrown away with its data: nothing to clean up in it.
    return f"t-{uuid.uuid4().hex[:10]}"


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await request
    return response, time.perf_counter() - started


async def search_reaches_alice(gateway: Gateway) -> bool:
    """A search finds alice, and every live node it was sent to answered."""
    response = await gateway.client.post("/search", json={"query": ["#mnist"]})
    return (response.status_code == 200
            and response.json() == [["alice", "http://alice:5000"]]
            and response.headers["x-grid-nodes-answered"] == response.headers[
                "x-grid-nodes-asked"])


async def test_gateway_and_nodes_recover_from_a_broker_restart(
        harness: Harness, broker: PrivateBroker) -> None:
    gateway = await harness.gateway(registry=LIVENESS,
                                    search={**LIVENESS, "search_timeout_s": 1.0},
                                    rpc_timeout_s=RPC_TIMEOUT_S)
    alice = await harness.node(gateway, "alice", INVENTORY, **NODE)
    await gateway.wait_search_sees(1)
    assert await search_reaches_alice(gateway)
    answered_before = alice.queries_answered
    api = gateway.api.app.state.gateway
    registry, search = gateway.registries[0], gateway.searches[0]

    await broker.stop()

    # Down: the routes that need a worker fail fast and say why.
    for request in (gateway.client.get("/connected-nodes"),
                    gateway.client.post("/search", json={"query": ["#mnist"]})):
        response, seconds = await timed(request)
        assert response.status_code == 503, response.text
        assert "broker" in response.json()["message"]
        assert seconds < FAST_S, f"{response.request.url.path} took {seconds:.2f} s"
    response = await gateway.client.get("/readyz")
    assert response.status_code == 503
    assert "broker" in response.json()["reason"]

    await broker.start()  # same name, port and data
    restarted = time.monotonic()

    # Back, with no manual step. Once /readyz says ready, requests are
    # answered: their replies are not lost to a reply queue not yet restored.
    async def ready() -> bool:
        return (await gateway.client.get("/readyz")).status_code == 200

    await eventually(ready, within=RECOVERY_S, interval=0.005)
    first = await asyncio.gather(*(timed(gateway.client.get("/connected-nodes"))
                                   for _ in range(5)))
    for response, seconds in first:
        assert response.status_code == 200, response.text
        assert seconds < RPC_TIMEOUT_S
    response = await gateway.client.post("/join", json=BOB)
    assert (response.status_code, response.json()) == (
        200, {"message": "Successfully Connected!"})
    await harness.node(gateway, "bob", {}, join=False, **NODE)  # bob heartbeats from now on

    # Every process is reconnected, and alice's heartbeats (sent again by her
    # restored connection) reach the registry and the search worker.
    buses = {"api": api.bus, "registry": registry.bus, "search": search.bus, "alice": alice.bus}

    async def all_reconnected() -> bool:
        return all(bus.ready for bus in buses.values())

    async def alice_heard_since_restart() -> bool:
        """The liveness owner heard her since, and the search worker follows its new epoch."""
        owner, view = registry.owner, search.membership
        heard = owner.heard.heard_at("alice")
        return (owner.active and heard is not None and heard > max(restarted, owner.acquired_at)
                and view.synced and view.epoch == owner.epoch and "alice" in view.expected())

    await eventually(all_reconnected, within=RECOVERY_S)
    await eventually(alice_heard_since_restart, within=RECOVERY_S)

    # No registration is lost.
    async def both_listed() -> bool:
        response = await gateway.client.get("/connected-nodes")
        return response.status_code == 200 and response.json() == {
            "grid-nodes": ["alice", "bob"]}

    await eventually(both_listed, within=RECOVERY_S)
    response = await gateway.client.post("/join", json=ALICE)
    assert (response.status_code, response.json()) == (
        409, {"message": "This ID has already been registered."})

    # Searches reach alice again: her non-durable queue was declared anew.
    await eventually(lambda: search_reaches_alice(gateway), within=RECOVERY_S)
    assert alice.queries_answered > answered_before

    # The API still watches its workers on the restored connection.
    await registry.stop()

    async def registry_missed() -> bool:
        response = await gateway.client.get("/readyz")
        return response.status_code == 503 and "registry" in response.json()["reason"]

    await eventually(registry_missed, within=RECOVERY_S)
