"""The benchmark's wire-level fleet speaks the node protocol: the gateway answers from it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bench import inventory as inv
from bench.wirefleet import WireFleet
from shared.settings import NodeSettings
from tests.harness import Gateway, Harness, eventually

NODES = 8
HUNG = 3


async def asked_all(gateway: Gateway) -> bool:
    response = await gateway.client.get("/search-available-models")
    return response.headers.get("x-grid-nodes-asked") == str(NODES)


@pytest.fixture
async def fleet_gateway(harness: Harness) -> AsyncIterator[tuple[Gateway, WireFleet]]:
    gateway = await harness.gateway(search={"search_timeout_s": 0.5})
    fleet = WireFleet(harness.make(NodeSettings, gateway_url=gateway.api.url),
                      first=0, count=NODES, total=NODES, hung={HUNG})
    try:
        await fleet.start(join_concurrency=4)
        await eventually(lambda: asked_all(gateway))
        yield gateway, fleet
    finally:
        await fleet.stop()


async def test_every_node_joins_and_answers_but_the_hung_one(fleet_gateway) -> None:
    gateway, fleet = fleet_gateway
    connected = await gateway.client.get("/connected-nodes")
    assert connected.json() == {"grid-nodes": sorted(inv.fleet_ids(NODES))}
    response = await gateway.client.get("/search-available-tags")
    answering = [i for i in range(NODES) if i != HUNG]
    assert response.json() == sorted({tag for i in answering
                                      for tag in inv.inventory(i, NODES).tags()})
    assert response.headers["x-grid-nodes-asked"] == str(NODES)
    assert response.headers["x-grid-nodes-answered"] == str(NODES - 1)
    assert fleet.nodes[f"n{HUNG}"].answered == 0


async def test_search_answers_match_the_inventories(fleet_gateway) -> None:
    gateway, fleet = fleet_gateway
    for k in (0, 1, 5):
        response = await gateway.client.post("/search", json={"query": inv.search_query(k)})
        expected = [pair for pair in inv.pairs_of_class(k, NODES) if pair[0] != inv.node_id(HUNG)]
        assert response.json() == expected
        response = await gateway.client.post("/search-model", json={"model_id": inv.model_query(k)})
        assert response.json() == expected
    response = await gateway.client.post("/search-encrypted-model", json={"model_id": "enc-0"})
    assert next(iter(response.json())) == inv.first_encrypted_host(0, NODES)
    assert fleet.malformed == 0
