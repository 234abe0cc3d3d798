"""docker-compose.yml's default profile, run for real: healthy, answering, scaled, broken.

One project for the module: it starts with one replica of each service, is scaled to three
search and two registry workers, then loses a search container under load and has its broker
restarted. Everything the project made is removed at the end, also on failure.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.compose.checks import (
    SearchLoad,
    consumers,
    container_metric,
    management,
    psql,
)
from tests.compose.engine import podman
from tests.compose.stack import Stack, wait_for

pytestmark = [pytest.mark.compose, pytest.mark.timeout(900)]

DEMO_NODES = {"alice", "bob", "carol"}
HEALTHCHECKED = ("rabbitmq", "postgres", "api")
READY_S = 180.0
RECOVERY_S = 30.0  # every service follows a broker restart within this, by itself
METRICS_PORT = 9100  # GRID_METRICS_PORT of the workers in the compose file
HANDLED = "grid_worker_message_seconds_count"


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client("GRID_API_PORT") as client:
        yield client


def joined(api: httpx.Client) -> bool:
    response = api.get("/connected-nodes")
    return response.status_code == 200 and DEMO_NODES <= set(response.json()["grid-nodes"])


def test_every_service_is_up_and_the_healthchecked_ones_are_healthy(stack: Stack) -> None:
    for service in ("rabbitmq", "postgres", "api", "registry", "search", *DEMO_NODES):
        (container,) = stack.containers(service)
        assert container["State"] == "running", (service, container["Status"])
    for service in HEALTHCHECKED:  # each check really ran and passed (podman and Docker alike)
        (container,) = stack.containers(service)
        assert "(healthy)" in container["Status"], (service, container["Status"])


def test_nodes_join_and_the_api_answers(stack: Stack, api: httpx.Client) -> None:
    wait_for(lambda: joined(api), 60, "the demo nodes in /connected-nodes")
    assert api.get("/readyz").json() == {"status": "ready"}
    found = api.post("/search-model", json={"model_id": "mnist-cnn"})
    assert found.status_code == 200, found.text
    assert sorted(found.json()) == [["alice", "http://alice:5000"], ["bob", "http://bob:5000"]]
    page = api.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    status = api.get("/status.json")
    assert status.status_code == 200 and "alice" in status.text


def test_the_registry_keeps_its_rows_in_the_postgres_container(
        stack: Stack, api: httpx.Client) -> None:
    wait_for(lambda: joined(api), 60, "the demo nodes in /connected-nodes")
    rows = psql(stack, "SELECT node_id FROM nodes ORDER BY node_id")
    assert DEMO_NODES <= set(rows), rows


def scale(stack: Stack) -> None:
    stack.start("--no-recreate", "--scale", "search=3", "--scale", "registry=2", within=READY_S)
    broker = management(stack, "GRID_MANAGEMENT_PORT")
    wanted = {"grid.search": 3, "grid.registry": 2}
    wait_for(lambda: {q: consumers(broker, q) for q in wanted} == wanted, 60,
             f"consumers {wanted}")


def handled_by_each(stack: Stack) -> dict[str, float]:
    return {container: container_metric(stack, container, METRICS_PORT, HANDLED)
            for container in stack.ids("search")}


def test_scaled_workers_each_consume_and_share_distinct_searches(
        stack: Stack, api: httpx.Client) -> None:
    scale(stack)
    assert len(stack.ids("search")) == 3 and len(stack.ids("registry")) == 2
    before = handled_by_each(stack)
    for number in range(60):
        answer = api.post("/search-model", json={"model_id": f"spread-{number}"})
        assert answer.status_code == 200 and answer.json() == [], answer.text
    after = handled_by_each(stack)
    shares = {c: after[c] - before.get(c, 0) for c in after}
    assert sum(shares.values()) >= 60, shares
    assert all(share > 0 for share in shares.values()), f"not spread: {shares}"


def test_a_search_container_killed_under_load_loses_no_request(
        stack: Stack, api: httpx.Client) -> None:
    scale(stack)
    load = SearchLoad(stack.url("GRID_API_PORT"))
    try:
        wait_for(lambda: load.count() >= 20, 60, "searches flowing")
        podman("kill", stack.ids("search")[0])
        killed_at = load.count()
        wait_for(lambda: load.count() >= killed_at + 80, 120, "searches after the kill")
    finally:
        outcomes = load.stop()
    assert set(outcomes) <= {"200", "503"}, f"lost or failed requests: {outcomes}"
    assert outcomes["200"] > outcomes["503"], outcomes
    assert not load.wrong, load.wrong[:3]


def recovered(stack: Stack, api: httpx.Client) -> bool:
    broker = management(stack, "GRID_MANAGEMENT_PORT")
    running = {s: sum(c["State"] == "running" for c in stack.containers(s))
               for s in ("search", "registry")}
    nodes_consuming = all(consumers(broker, f"grid.node.{n}") >= 1 for n in DEMO_NODES)
    return (api.get("/readyz").status_code == 200 and nodes_consuming
            and consumers(broker, "grid.search") == running["search"]
            and consumers(broker, "grid.registry") == running["registry"]
            and api.post("/search-model", json={"model_id": "bert-tiny"}).json()
            == [["carol", "http://carol:5000"]])


def test_every_service_recovers_from_a_broker_restart_by_itself(
        stack: Stack, api: httpx.Client) -> None:
    wait_for(lambda: recovered(stack, api), 60, "the stack settled before the restart")
    (broker,) = stack.ids("rabbitmq")
    podman("restart", "-t", "10", broker, timeout=120)
    wait_for(lambda: recovered(stack, api), RECOVERY_S, "every service back after the restart")
