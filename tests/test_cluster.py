"""The gateway on a three-node RabbitMQ cluster of its own, through a node's death and a reconnect.

The cluster (tests/private_broker.py) runs beside the shared broker, never
touching it. Registry, search and API run in-process with quorum work queues
and the cluster's three URLs, each process listing them in another order so
that their connections start on different nodes, as do the three grid nodes.
Under steady searches and joins, node 0 is killed (SIGKILL: a crash), then
every client connection of node 1 is closed by the broker. Every request
must be answered in time and correctly, no join answered 200 may be lost,
and the gateway must be back to normal with one broker node down.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest

from shared.bus import Bus
from tests.harness import Gateway, Harness, eventually
from tests.private_broker import PrivateCluster, require_rabbitmq_scripts
from tests.traffic import Outcome, Search, Traffic

# Failover to the next address: run on both bus paths.
pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.both_bus_paths]

QUORUM = {"queue_type": "quorum"}
RPC_TIMEOUT_S = 3.0
SEARCH_TIMEOUT_S = 1.0
# An answer later than its deadline plus this is a hang.
LATE_S = 1.5
# Bounds on waiting (not timing assertions; the figures are in docs/operations.md).
RECOVERY_S = 15.0
NODES = ("alice", "bob", "carol")
# 503 bodies a client may get while a service reconnects: each says what is wrong.
CLEAR_503 = ("broker", "did not answer in time", "worker is running")


def inventory(name: str) -> dict:
    return {"models": [], "tensors": [{"id": "t", "tags": ["#all", f"#{name}"]}]}


def address(name: str) -> list[str]:
    return [name, f"http://{name}:5000"]


SEARCHES = [Search(["#all"], [address(name) for name in NODES]),
            *(Search([f"#{name}"], [address(name)]) for name in NODES)]


@pytest.fixture
async def cluster(tmp_path) -> AsyncIterator[PrivateCluster]:
    require_rabbitmq_scripts()
    cluster = PrivateCluster(tmp_path / "cluster")
    try:
        await cluster.start()
        yield cluster
    finally:
        await cluster.close()


@pytest.fixture
def amqp_url(cluster: PrivateCluster) -> str:
    return cluster.url_list(0)


@pytest.fixture
def namespace() -> str:
    # The cluster is thrown away with its data: nothing to clean up in it.
    return f"t-{uuid.uuid4().hex[:10]}"


async def start_gateway(harness: Harness, cluster: PrivateCluster) -> Gateway:
    """API on node 0 first, registry on node 1, search on node 2; nodes spread likewise."""
    gateway = await harness.gateway(
        registry={**QUORUM, "amqp_url": cluster.url_list(1), "node_ttl_s": 120.0},
        search={**QUORUM, "amqp_url": cluster.url_list(2),
                "search_timeout_s": SEARCH_TIMEOUT_S},
        amqp_url=cluster.url_list(0), rpc_timeout_s=RPC_TIMEOUT_S, **QUORUM)
    for first, name in enumerate(NODES):
        await harness.node(gateway, name, inventory(name), amqp_url=cluster.url_list(first),
                           heartbeat_s=0.5)
    await gateway.wait_search_sees(len(NODES))
    return gateway


async def serves_normally(gateway: Gateway) -> bool:
    """A search reaches every node and gets the full answer, and a new join is committed."""
    search = SEARCHES[0]
    response = await gateway.client.post("/search", json={"query": search.tags})
    if not (response.status_code == 200 and response.json() == search.expected
            and response.headers["x-grid-nodes-asked"] == str(len(NODES))
            and response.headers["x-grid-nodes-answered"] == str(len(NODES))):
        return False
    node_id = f"probe-{uuid.uuid4().hex[:8]}"
    joined = await gateway.client.post(
        "/join", json={"node-id": node_id, "node-address": f"http://{node_id}:1"})
    return joined.status_code == 200


def buses(gateway: Gateway) -> dict[str, Bus]:
    return {"api": gateway.api.app.state.gateway.bus, "registry": gateway.registries[0].bus,
            "search": gateway.searches[0].bus}


class Drops:
    """When the gateway's connections dropped: a fault's effect, however long its command took."""

    def __init__(self, gateway: Gateway) -> None:
        self.times: list[float] = []
        for bus in buses(gateway).values():
            bus.on_connection_lost(lambda: self.times.append(time.monotonic()))

    def first_since(self, since: float) -> float:
        return min((t for t in self.times if t >= since), default=since)


async def recover(gateway: Gateway, traffic: Traffic, drops: Drops, fault_at: float) -> float:
    """Seconds from the first drop the fault caused until service is normal again.

    Normal: a search reaches all nodes with the full answer, a join commits,
    and the steady traffic gets 200s again.
    """
    await eventually(lambda: serves_normally(gateway), within=RECOVERY_S, interval=0.05)
    normal_at = time.monotonic()

    async def traffic_flows() -> bool:
        return (traffic.answered_ok_since(normal_at, "search") >= 5
                and traffic.answered_ok_since(normal_at, "join") >= 5)

    await eventually(traffic_flows, within=RECOVERY_S)
    return normal_at - drops.first_since(fault_at)


def check_answered(outcome: Outcome) -> None:
    """An answer, within the deadline, that is a 200 or a 503 saying why."""
    assert outcome.status is not None, f"{outcome.kind} got no answer: {outcome.error}"
    assert outcome.seconds < RPC_TIMEOUT_S + LATE_S, f"{outcome.kind} took {outcome.seconds:.2f} s"
    assert outcome.status in (200, 503), (outcome.kind, outcome.status, outcome.body)
    if outcome.status == 503:
        text = outcome.body["message"]
        assert any(reason in text for reason in CLEAR_503), text


def check_search(outcome: Outcome) -> None:
    """Only nodes that match, and all of them when every node asked answered."""
    expected = next(s.expected for s in SEARCHES if s.tags == outcome.request)
    assert all(entry in expected for entry in outcome.body), (outcome.request, outcome.body)
    if outcome.headers["x-grid-nodes-answered"] == str(len(NODES)):
        assert outcome.body == expected, (outcome.request, outcome.body)


async def test_gateway_rides_out_a_node_death_and_forced_reconnects(
        harness: Harness, cluster: PrivateCluster) -> None:
    gateway = await start_gateway(harness, cluster)
    drops = Drops(gateway)
    traffic = Traffic(gateway.api.url, SEARCHES, searchers=4, joiners=2,
                      timeout_s=RPC_TIMEOUT_S + LATE_S + 1)
    traffic.start()
    try:
        started = time.monotonic()
        await eventually(lambda: _true(traffic.answered_ok_since(started, "join") >= 10))

        killed_at = time.monotonic()
        cluster.nodes[0].kill()
        after_death = await recover(gateway, traffic, drops, killed_at)

        closed_at = time.monotonic()
        # --global with -n: every connection of node 1 (all vhosts), none of the others'.
        await cluster.nodes[1].ctl_ok("close_all_connections", "--global",
                                      "test: forced reconnect")
        after_close = await recover(gateway, traffic, drops, closed_at)
    finally:
        outcomes = await traffic.stop()
    print(f"\nback to normal {after_death:.2f} s after node 0 died, {after_close:.2f} s after "
          f"node 1 closed its connections; answers: {summary(outcomes)}")

    for outcome in outcomes:
        check_answered(outcome)
        if outcome.kind == "search" and outcome.status == 200:
            check_search(outcome)

    # No committed join is lost.
    committed = {o.request for o in outcomes if o.kind == "join" and o.status == 200}
    listed = set((await gateway.client.get("/connected-nodes")).json()["grid-nodes"])
    assert committed <= listed, f"joins answered 200 but not listed: {committed - listed}"

    # Everything now runs on node 2, the only one that neither died nor dropped anyone.
    for name, bus in buses(gateway).items():
        assert bus.ready and bus.connection.url.port == cluster.nodes[2].port, name


def summary(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for o in outcomes:
        key = f"{o.kind} {o.status} {(o.body or {}).get('message', '') if o.status != 200 else ''}"
        counts[key.strip()] = counts.get(key.strip(), 0) + 1
    return counts


async def _true(value: bool) -> bool:
    return value
