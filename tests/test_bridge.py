"""The HTTP bridge: HTTP-only nodes (real servers on loopback) answer searches beside AMQP nodes."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import aio_pika
import httpx
import pytest

from services.bridge.worker import BridgeWorker
from services.node.httpnode import HttpNodeApp, HttpNodeServer, join_all
from services.node.inventory import Inventory
from shared.settings import BridgeSettings, NodeSettings
from shared.topology import Names
from tests.harness import WAIT_S, Gateway, Harness, eventually, spawn, stop_processes
from tests.http_stubs import (
    SilentServer,
    Switch,
    closed_port_url,
    free_port,
    not_json,
    wrong_shapes,
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TTL_S = 1.0
SEARCH_TIMEOUT_S = 0.6
FAST = {"node_ttl_s": TTL_S, "heartbeat_s": 0.2}
DORA = {"models": ["dora-net", "mnist-cnn"],
        "tensors": [{"id": "d1", "tags": ["#http", "#mnist", "#train"]}]}


def example(name: str) -> Inventory:
    return Inventory.model_validate(json.loads((EXAMPLES / f"{name}.json").read_text()))


async def fast_gateway(harness: Harness) -> Gateway:
    return await harness.gateway(registry=FAST,
                                 search={**FAST, "search_timeout_s": SEARCH_TIMEOUT_S})


async def start_bridge(harness: Harness, settings, name: str = "bridge-a") -> BridgeWorker:
    """A bridge with the tests' short liveness settings, once it takes broadcasts."""
    bridge = BridgeWorker(settings(BridgeSettings, bridge_name=name, **FAST))
    harness._stoppers.append(bridge.stop)
    await bridge.start()
    await asyncio.wait_for(bridge.consuming.wait(), WAIT_S)
    return bridge


async def serve(harness: Harness, app, port: int = 0) -> HttpNodeServer:
    server = HttpNodeServer(app, port=port)
    await server.start()
    harness._stoppers.append(server.stop)
    return server


async def join(gateway: Gateway, node_id: str, address: str) -> None:
    body = {"node-id": node_id, "node-address": address}
    assert (await gateway.client.post("/join", json=body)).status_code == 200


async def models_answered_by(gateway: Gateway, count: int) -> None:
    """Until a model list is asked of ``count`` live nodes and all of them answer."""

    async def seen() -> bool:
        response = await gateway.client.get("/search-available-models")
        return counts(response) == (str(count), str(count))

    await eventually(seen)


def counts(response) -> tuple[str, str]:
    return response.headers["x-grid-nodes-asked"], response.headers["x-grid-nodes-answered"]


async def connected(gateway: Gateway) -> list[str]:
    return (await gateway.client.get("/connected-nodes")).json()["grid-nodes"]


def sample(worker, name: str, **labels: str) -> float:
    return worker.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_every_search_route_answers_with_both_kinds(harness: Harness, settings) -> None:
    gateway = await fast_gateway(harness)
    await harness.node(gateway, "alice", example("alice"), **FAST)
    await harness.node(gateway, "bob", example("bob"), **FAST)
    app = HttpNodeApp({"carol": example("carol"), "dora": Inventory.model_validate(DORA)})
    server = await serve(harness, app)
    for node_id in ("carol", "dora"):
        await join(gateway, node_id, server.address(node_id))
    await start_bridge(harness, settings)
    await gateway.wait_search_sees(4)
    carol, dora = server.address("carol"), server.address("dora")
    client = gateway.client

    response = await client.get("/search-available-models")
    assert response.json() == ["bert-tiny", "dora-net", "mnist-cnn", "resnet18", "toy-linear"]
    assert counts(response) == ("4", "4")
    response = await client.get("/search-available-tags")
    assert response.json() == ["#cifar10", "#http", "#labels", "#mnist", "#test", "#text",
                               "#train"]
    response = await client.post("/search-model", json={"model_id": "mnist-cnn"})
    assert response.json() == [["alice", "http://alice:5000"], ["bob", "http://bob:5000"],
                               ["dora", dora]]
    assert counts(response) == ("4", "4")
    response = await client.post("/search", json={"query": ["#mnist", "#train"]})
    assert response.json() == [["alice", "http://alice:5000"], ["dora", dora]]
    assert (await client.post("/search", json={"query": ["#text"]})).json() == [["carol", carol]]
    response = await client.post("/search-encrypted-model", json={"model_id": "lstm"})
    assert response.json() == {  # hosted by carol alone, an HTTP node
        "carol": carol,
        "nodes": {"workers": [["alice", "http://alice:5000"], ["bob", "http://bob:5000"]],
                  "crypto_provider": ["carol", "http://carol:5000"]}}
    assert counts(response) == ("4", "4")
    response = await client.post("/search-encrypted-model", json={"model_id": "convnet"})
    assert list(response.json()) == ["alice", "nodes"]  # alice and carol host it: first by id
    assert (await client.post("/search-encrypted-model", json={"model_id": "x"})).json() == {}
    assert app.requests["carol"] >= 7 and app.requests["dora"] >= 7


async def test_unusable_http_nodes_are_never_waited_for(harness: Harness, settings) -> None:
    """Silent, refusing and garbage nodes never become live: searches never wait for them."""
    gateway = await fast_gateway(harness)
    await harness.node(gateway, "alice", example("alice"), **FAST)
    good = await serve(harness, HttpNodeApp({"carol": example("carol")}))
    silent = SilentServer()
    await silent.start()
    harness._stoppers.append(silent.stop)
    junk = await serve(harness, not_json)
    await join(gateway, "carol", good.address("carol"))
    await join(gateway, "mute", silent.url)
    await join(gateway, "gone", closed_port_url())
    await join(gateway, "junk", f"{junk.url}/n/junk")
    bridge = await start_bridge(harness, settings)

    async def each_failure_seen() -> bool:
        return all(sample(bridge, "grid_bridge_calls_total", route="/models/", outcome=outcome)
                   >= 2 for outcome in ("timeout", "refused", "malformed"))

    await eventually(each_failure_seen)
    await eventually(lambda: _equals(connected(gateway), ["alice", "carol"]))
    started = time.monotonic()
    response = await gateway.client.get("/search-available-models")
    assert response.json() == ["bert-tiny", "mnist-cnn", "toy-linear"]
    assert counts(response) == ("2", "2")
    assert time.monotonic() - started < SEARCH_TIMEOUT_S
    assert silent.connections >= 1


async def test_hung_or_garbled_answers_cost_at_most_the_deadline(
        harness: Harness, settings) -> None:
    gateway = await fast_gateway(harness)
    await harness.node(gateway, "alice", example("alice"), **FAST)
    flaky = Switch(HttpNodeApp({"flaky": Inventory.model_validate(DORA)}))
    flaky_server = await serve(harness, flaky)
    harness._stoppers.append(_released(flaky))
    shapes = await serve(harness, wrong_shapes)
    await join(gateway, "flaky", flaky_server.address("flaky"))
    await join(gateway, "shapes", f"{shapes.url}/n/shapes")
    bridge = await start_bridge(harness, settings)
    await models_answered_by(gateway, 3)  # shapes answers /models/ (only)

    flaky.hang = True  # accepts, never answers any more
    started = time.monotonic()
    response = await gateway.client.post("/search-model", json={"model_id": "mnist-cnn"})
    elapsed = time.monotonic() - started
    assert response.json() == [["alice", "http://alice:5000"]]
    assert counts(response) == ("3", "2")
    # the search worker counts time queued against the deadline, down to half of it
    assert SEARCH_TIMEOUT_S / 2 <= elapsed < SEARCH_TIMEOUT_S + 1.0
    assert sample(bridge, "grid_bridge_calls_total", route="/models/", outcome="timeout") >= 1

    malformed = sample(bridge, "grid_bridge_calls_total", route="/search", outcome="malformed")
    response = await gateway.client.post("/search", json={"query": ["#mnist"]})
    assert response.json() == [["alice", "http://alice:5000"]]
    assert counts(response)[1] == "1"  # flaky hangs, shapes' answer is dropped
    assert sample(bridge, "grid_bridge_calls_total", route="/search",
                  outcome="malformed") == malformed + 1

    # The hung node goes offline after the TTL; the bridge keeps serving the others.
    await eventually(lambda: _equals(connected(gateway), ["alice", "shapes"]))
    response = await gateway.client.get("/search-available-models")
    assert response.json() == ["mnist-cnn", "shapes-model", "toy-linear"]
    assert counts(response) == ("2", "2")
    flaky.hang = False
    await models_answered_by(gateway, 3)
    assert "dora-net" in (await gateway.client.get("/search-available-models")).json()


async def test_bridged_node_whose_server_stops_goes_offline_and_comes_back(
        harness: Harness, settings) -> None:
    gateway = await fast_gateway(harness)
    await harness.node(gateway, "alice", example("alice"), **FAST)
    app = HttpNodeApp({"carol": example("carol")})
    server = HttpNodeServer(app)
    await server.start()
    harness._stoppers.append(server.stop)  # safe twice
    await join(gateway, "carol", server.address("carol"))
    await start_bridge(harness, settings)
    await gateway.wait_search_sees(2)

    await server.stop()
    await eventually(lambda: _equals(connected(gateway), ["alice"]), within=TTL_S * 5)
    await gateway.wait_search_sees(1)

    await serve(harness, app, port=server.port)  # the same address serves again
    await eventually(lambda: _equals(connected(gateway), ["alice", "carol"]), within=TTL_S * 5)
    await gateway.wait_search_sees(2)
    assert "bert-tiny" in (await gateway.client.get("/search-available-models")).json()


async def test_amqp_node_is_never_bridged(harness: Harness, settings) -> None:
    """AMQP nodes whose addresses serve the HTTP routes too: the bridge never calls them."""
    gateway = await fast_gateway(harness)
    impostor = Inventory(models=["over-http"])
    app = HttpNodeApp({"alice": impostor, "bob": impostor, "carol": example("carol")})
    server = await serve(harness, app)
    await harness.node(gateway, "bob", example("bob"), address=server.address("bob"), **FAST)
    await join(gateway, "carol", server.address("carol"))
    bridge = await start_bridge(harness, settings)
    # alice joins while the bridge runs
    await harness.node(gateway, "alice", example("alice"), address=server.address("alice"),
                       **FAST)
    await gateway.wait_search_sees(3)
    # From here on every node is live for the search worker, so any reply it does not
    # expect is a second answer for a node (the bridge answering for alice or bob).
    # Before, alice's own reply to a broadcast sent between her subscribing and the
    # worker hearing her first heartbeat is dropped as unexpected, rightly.
    unexpected = sample(gateway.searches[0], "grid_search_replies_dropped_total",
                        reason="unexpected")
    for _ in range(3):
        response = await gateway.client.get("/search-available-models")
        assert response.json() == ["bert-tiny", "mnist-cnn", "resnet18", "toy-linear"]
        assert counts(response) == ("3", "3")
    # several probe rounds of carol (every 0.2 s) pass, and still no call to alice or bob
    probes = app.requests["carol"]
    await eventually(lambda: _true(app.requests["carol"] >= probes + 5))
    assert (app.requests["alice"], app.requests["bob"]) == (0, 0)
    assert sorted(bridge.roster.bridged()) == ["carol"]
    assert sample(gateway.searches[0], "grid_search_replies_dropped_total",
                  reason="unexpected") == unexpected


async def test_two_bridges_share_the_work_and_answer_each_node_once(
        harness: Harness, settings) -> None:
    gateway = await fast_gateway(harness)
    await harness.node(gateway, "alice", example("alice"), **FAST)
    app = HttpNodeApp({"carol": example("carol"), "dora": Inventory.model_validate(DORA)})
    server = await serve(harness, app)
    for node_id in ("carol", "dora"):
        await join(gateway, node_id, server.address(node_id))
    bridges = [await start_bridge(harness, settings, name) for name in ("bridge-a", "bridge-b")]
    await gateway.wait_search_sees(3)
    before = [sample(b, "grid_bridge_broadcasts_total", outcome="answered") for b in bridges]
    replies_before = sum(sample(b, "grid_bridge_replies_total") for b in bridges)

    for i in range(20):
        response = await gateway.client.post("/search-model", json={"model_id": f"m{i}"})
        assert (response.json(), counts(response)) == ([], ("3", "3"))

    async def handled() -> list[float]:
        done = [sample(b, "grid_bridge_broadcasts_total", outcome="answered") - was
                for b, was in zip(bridges, before, strict=True)]
        return done if sum(done) == 20 else []

    split = await eventually(handled)
    assert all(share > 0 for share in split), split  # competing consumers: both took some
    assert sum(sample(b, "grid_bridge_replies_total") for b in bridges) - replies_before == 40
    assert sample(gateway.searches[0], "grid_search_replies_dropped_total",
                  reason="unexpected") == 0


async def test_http_nodes_join_and_rejoin(harness: Harness, settings) -> None:
    gateway = await fast_gateway(harness)
    server = await serve(harness, HttpNodeApp(dict.fromkeys(("h0", "h1"), example("dora"))))
    addresses = {node_id: server.address(node_id) for node_id in ("h0", "h1")}
    node_settings = settings(NodeSettings, gateway_url=gateway.api.url)
    await join_all(node_settings, addresses)
    assert await connected(gateway) == ["h0", "h1"]
    await asyncio.wait_for(join_all(node_settings, addresses), WAIT_S)  # 409s: joined already
    await start_bridge(harness, settings)
    await models_answered_by(gateway, 2)


async def test_poison_broadcasts_are_dropped(harness: Harness, settings, amqp_url: str,
                                             namespace: str) -> None:
    gateway = await fast_gateway(harness)
    server = await serve(harness, HttpNodeApp({"carol": example("carol")}))
    await join(gateway, "carol", server.address("carol"))
    bridge = await start_bridge(harness, settings)
    await gateway.wait_search_sees(1)
    connection = await aio_pika.connect(amqp_url)
    harness._stoppers.append(connection.close)
    channel = await connection.channel()
    broadcast = await channel.get_exchange(Names(namespace).broadcast_exchange)
    for body in (b"\xff not json", b"[]", b'{"op": "nonsense"}', b'{"op": "has_model"}'):
        await broadcast.publish(aio_pika.Message(body, reply_to="nowhere"), routing_key="")
    await eventually(lambda: _true(
        sample(bridge, "grid_bridge_broadcasts_total", outcome="malformed") == 4))
    response = await gateway.client.get("/search-available-models")
    assert (response.json(), counts(response)) == (["bert-tiny"], ("1", "1"))


@pytest.mark.slow
async def test_bridge_process_serves_metrics_and_stops_on_sigterm(
        harness: Harness, amqp_url: str, namespace: str) -> None:
    gateway = await fast_gateway(harness)
    server = await serve(harness, HttpNodeApp({"carol": example("carol")}))
    await join(gateway, "carol", server.address("carol"))
    port = free_port()
    bridge = spawn("services.bridge", amqp_url, namespace, GRID_HEARTBEAT_S="0.2",
                   GRID_NODE_TTL_S=str(TTL_S), GRID_METRICS_PORT=str(port))
    try:
        await gateway.wait_search_sees(1)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as metrics:
            text = (await metrics.get("/metrics")).text
        assert "grid_bridge_live_nodes 1.0" in text
        assert 'grid_bridge_calls_total{outcome="ok",route="/dataset-tags"}' in text
        assert "grid_bridge_call_seconds_bucket" in text
        bridge.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(bridge.wait, WAIT_S) == 0
    finally:
        stop_processes([bridge])


def _released(switch: Switch):
    async def release() -> None:
        switch.release()

    return release


async def _equals(awaitable, expected) -> bool:
    return await awaitable == expected


async def _true(value: bool) -> bool:
    return value
