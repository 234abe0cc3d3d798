"""docker-compose.yml's cluster profile, run for real: three clustered brokers, quorum work
queues, two API replicas behind the proxy, and one broker container stopped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.compose.checks import container_metric, management
from tests.compose.engine import podman
from tests.compose.stack import Stack, wait_for

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

BROKERS = ("rabbit-1", "rabbit-2", "rabbit-3")
FAILOVER_S = 60.0
RPCS = "grid_api_rpc_seconds_count"  # each API replica's round trips to the workers


@pytest.fixture
def proxy(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client("GRID_PROXY_PORT") as client:
        yield client


def test_three_brokers_form_one_cluster_with_quorum_work_queues(stack: Stack) -> None:
    broker = management(stack, "GRID_CLUSTER_MANAGEMENT_PORT")
    nodes = broker.get("/api/nodes").json()
    assert sorted(n["name"] for n in nodes if n["running"]) == [f"rabbit@{b}" for b in BROKERS]
    for queue in ("grid.search", "grid.registry"):
        found = broker.get(f"/api/queues/%2F/{queue}").json()
        assert found["type"] == "quorum", (queue, found.get("type"))
        members = found.get("members") or [found.get("node")]
        assert len(members) == 3, (queue, members)


def rpcs_by_replica(stack: Stack) -> dict[str, float]:
    return {c: container_metric(stack, c, 8000, RPCS) for c in stack.ids("cluster-api")}


def test_the_proxy_spreads_requests_over_two_api_replicas(
        stack: Stack, proxy: httpx.Client) -> None:
    assert len(stack.ids("cluster-api")) == 2
    wait_for(lambda: proxy.get("/readyz").status_code == 200, 60, "/readyz through the proxy")
    before = rpcs_by_replica(stack)
    for number in range(40):
        answer = proxy.post("/search-model", json={"model_id": f"spread-{number}"})
        assert answer.status_code == 200 and answer.json() == [], (
            f"{answer.text}\n{stack.logs_tail()}")
    after = rpcs_by_replica(stack)
    shares = {c: after[c] - before.get(c, 0) for c in after}
    assert all(share > 0 for share in shares.values()), f"one replica got all: {shares}"


def test_the_proxy_resolves_through_the_containers_own_dns(stack: Stack) -> None:
    (container,) = stack.ids("cluster-proxy")
    nameservers = [line.split()[1] for line in stack.exec(container, "cat", "/etc/resolv.conf")
                   .splitlines() if line.startswith("nameserver")]
    resolver = stack.exec(container, "cat", "/etc/nginx/conf.d/00-resolver.conf").split()
    assert nameservers and resolver[0] == "resolver", resolver
    # Only the first, the network's own server: podman lists the host's after it, which knows
    # no service name, and nginx would ask it every other time.
    assert [s.strip("[]") for s in resolver[1:-2]] == nameservers[:1], (resolver, nameservers)


def answers(proxy: httpx.Client) -> bool:
    node = f"n-{uuid.uuid4().hex[:12]}"
    joined = proxy.post("/join", json={"node-id": node, "node-address": f"http://{node}:1"})
    searched = proxy.post("/search-model", json={"model_id": f"m-{node}"})
    return joined.status_code == 200 and searched.status_code == 200


def test_with_one_broker_stopped_searches_and_joins_are_answered(
        stack: Stack, proxy: httpx.Client) -> None:
    wait_for(lambda: answers(proxy), 60, "a join and a search before the stop")
    (stopped,) = stack.ids("rabbit-2")
    podman("stop", "-t", "10", stopped, timeout=60)
    wait_for(lambda: answers(proxy), FAILOVER_S, "a join and a search on two brokers")
    for _ in range(10):
        assert answers(proxy)
