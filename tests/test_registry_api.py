"""The registry routes over HTTP, against the real broker and workers."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from tests.harness import Harness, eventually

ALICE = {"node-id": "alice", "node-address": "http://alice:5000"}
CONNECTED = {"message": "Successfully Connected!"}
INVALID_JSON = {"message": "Invalid json."}
DUPLICATE = {"message": "This ID has already been registered."}
NOT_FOUND = {"message": "This ID was not found in connected nodes"}


async def join(client: httpx.AsyncClient, node_id: str, address: str | None = None):
    body = {"node-id": node_id, "node-address": address or f"http://{node_id}:5000"}
    return await client.post("/join", json=body)


async def test_join_then_connected_nodes(client: httpx.AsyncClient) -> None:
    response = await client.post("/join", json=ALICE)
    assert (response.status_code, response.json()) == (200, CONNECTED)
    assert response.headers["content-type"] == "application/json"
    response = await client.get("/connected-nodes")
    assert (response.status_code, response.json()) == (200, {"grid-nodes": ["alice"]})


async def test_connected_nodes_sorted(client: httpx.AsyncClient) -> None:
    for node_id in ("carol", "alice", "bob"):
        assert (await join(client, node_id)).status_code == 200
    nodes = (await client.get("/connected-nodes")).json()
    assert nodes == {"grid-nodes": ["alice", "bob", "carol"]}


async def test_duplicate_join_is_409(client: httpx.AsyncClient) -> None:
    assert (await client.post("/join", json=ALICE)).status_code == 200
    response = await join(client, "alice", "http://elsewhere:1")
    assert (response.status_code, response.json()) == (409, DUPLICATE)
    assert response.headers["content-type"] == "application/json"


async def test_body_parsed_whatever_the_content_type(client: httpx.AsyncClient) -> None:
    """The original client posts data=json.dumps(...) with no JSON content type."""
    response = await client.post(
        "/join", content=b'{"node-id": "x1", "node-address": "http://x1:5000"}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert (response.status_code, response.json()) == (200, CONNECTED)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"42",
        b"[]",
        b'"alice"',
        b"null",
        b"node-id=alice&node-address=http://a",
        b'{"node-id": "alice"}',
        b'{"node-address": "http://alice:5000"}',
        b'{"node-id": "", "node-address": "http://alice:5000"}',
        b'{"node-id": "alice", "node-address": ""}',
        b'{"node-id": 7, "node-address": "http://alice:5000"}',
        b'{"node-id": "alice", "node-address": ["http://alice:5000"]}',
        b'{"node-id": "alice", "node-address": "alice:5000"}',
        b'{"node-id": "has space", "node-address": "http://a:1"}',
        b'{"node-id": "' + b"x" * 129 + b'", "node-address": "http://a:1"}',
        b'{"node-id": "\\ud800", "node-address": "http://a:1"}',
        b'\xff\xfe{"node-id": "a"}',
    ],
)
async def test_join_bad_input_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post("/join", content=body)
    assert (response.status_code, response.json()) == (400, INVALID_JSON)
    assert (await client.get("/connected-nodes")).json() == {"grid-nodes": []}


async def test_huge_body_is_413(client: httpx.AsyncClient) -> None:
    body = b'{"node-id": "a", "node-address": "http://a:1", "pad": "' + b"x" * (1 << 20) + b'"}'
    response = await client.post("/join", content=body)
    assert (response.status_code, response.json()) == (413, {"message": "Request body too large."})


async def test_huge_chunked_body_is_413(client: httpx.AsyncClient) -> None:
    async def chunks():
        for _ in range(20):
            yield b"x" * 65536

    response = await client.post("/join", content=chunks())
    assert response.status_code == 413


async def test_delete_node(client: httpx.AsyncClient) -> None:
    assert (await client.post("/join", json=ALICE)).status_code == 200
    response = await client.request("DELETE", "/delete-node", json=ALICE)
    assert (response.status_code, response.json()) == (200, {"message": "Successfully Deleted!"})
    assert (await client.get("/connected-nodes")).json() == {"grid-nodes": []}
    response = await client.request("DELETE", "/delete-node", json=ALICE)
    assert (response.status_code, response.json()) == (404, NOT_FOUND)


async def test_delete_with_another_address_deletes_nothing(client: httpx.AsyncClient) -> None:
    assert (await client.post("/join", json=ALICE)).status_code == 200
    body = {"node-id": "alice", "node-address": "http://mallory:5000"}
    response = await client.request("DELETE", "/delete-node", json=body)
    assert (response.status_code, response.json()) == (404, NOT_FOUND)
    assert (await client.get("/connected-nodes")).json() == {"grid-nodes": ["alice"]}


@pytest.mark.parametrize("body", [b"", b"[1]", b'{"node-id": "alice"}', b'{"node-id": 1}'])
async def test_delete_bad_input_is_400(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.request("DELETE", "/delete-node", content=body)
    assert (response.status_code, response.json()) == (400, INVALID_JSON)


async def test_deleted_id_can_join_again(client: httpx.AsyncClient) -> None:
    assert (await client.post("/join", json=ALICE)).status_code == 200
    assert (await client.request("DELETE", "/delete-node", json=ALICE)).status_code == 200
    assert (await client.post("/join", json=ALICE)).status_code == 200


async def test_unknown_route_and_wrong_method_are_json(client: httpx.AsyncClient) -> None:
    response = await client.get("/no-such-route")
    assert (response.status_code, response.json()) == (404, {"message": "Not Found"})
    response = await client.get("/join")
    assert (response.status_code, response.json()) == (405, {"message": "Method Not Allowed"})
    assert response.headers["content-type"] == "application/json"


async def test_choose_model_host(client: httpx.AsyncClient) -> None:
    assert (await client.get("/choose-model-host")).json() == []
    for node_id in ("a1", "a2", "a3"):
        await join(client, node_id)
    hosts = (await client.get("/choose-model-host")).json()
    assert len(hosts) == 1
    assert hosts[0] in [["a1", "http://a1:5000"], ["a2", "http://a2:5000"], ["a3", "http://a3:5000"]]


async def test_choose_encrypted_model_host(client: httpx.AsyncClient) -> None:
    for node_id in ("a1", "a2", "a3"):
        await join(client, node_id)
    assert (await client.get("/choose-encrypted-model-host")).json() == []
    await join(client, "a4")
    await join(client, "a5")
    hosts = (await client.get("/choose-encrypted-model-host")).json()
    assert len(hosts) == 4 and len({node_id for node_id, _ in hosts}) == 4
    assert all(address == f"http://{node_id}:5000" for node_id, address in hosts)


async def test_n_replica_setting(harness: Harness) -> None:
    gateway = await harness.gateway(registry={"n_replica": 2})
    client = gateway.client
    await join(client, "a1")
    assert len((await client.get("/choose-model-host")).json()) == 1  # fewer exist
    for node_id in ("a2", "a3", "a4", "a5", "a6", "a7"):
        await join(client, node_id)
    assert len((await client.get("/choose-model-host")).json()) == 2
    assert (await client.get("/choose-encrypted-model-host")).json() == []  # needs 8
    await join(client, "a8")
    hosts = (await client.get("/choose-encrypted-model-host")).json()
    assert len({node_id for node_id, _ in hosts}) == 8


async def test_no_registry_worker_is_a_fast_503(harness: Harness) -> None:
    gateway = await harness.gateway(registries=0, wait=False)
    watch = gateway.api.app.state.gateway

    async def counted() -> bool:  # the API's consumer watch has seen the empty queue
        return watch.consumers.get(watch.names.registry_queue) == 0

    await eventually(counted)
    started = time.monotonic()
    response = await gateway.client.post("/join", json=ALICE)
    assert response.status_code == 503
    assert "registry" in response.json()["message"]
    assert time.monotonic() - started < 1.0
    assert (await gateway.client.get("/readyz")).status_code == 503


async def test_broker_unreachable_is_a_fast_503(harness: Harness) -> None:
    server = await harness.api(amqp_url="amqp://guest:guest@127.0.0.1:1/")
    client = await harness.client(server)
    for path in ("/connected-nodes", "/search-available-models"):
        started = time.monotonic()
        response = await client.get(path)
        assert response.status_code == 503
        assert "broker" in response.json()["message"]
        assert time.monotonic() - started < 1.0
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "not ready",
                               "reason": "the message broker is unreachable"}
    assert (await client.get("/healthz")).json() == {"status": "ok"}


async def test_registry_that_stops_answering_gives_503_within_deadline(harness: Harness) -> None:
    """A registry that holds a request past the deadline: 503, not a hang."""
    gateway = await harness.gateway(rpc_timeout_s=0.5)
    worker = gateway.registries[0]
    gate = asyncio.Event()

    async def stuck(_request, _context):
        await gate.wait()

    worker.server.operations["join"] = type(worker.server.operations["join"])(
        worker.server.operations["join"].request, stuck)
    started = time.monotonic()
    response = await gateway.client.post(
        "/join", json={"node-id": "slow", "node-address": "http://slow:5000"})
    assert response.status_code == 503
    assert time.monotonic() - started < 1.5
    gate.set()
