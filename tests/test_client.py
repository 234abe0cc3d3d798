"""The Python client (sync and async) and its CLI against a real gateway with real nodes.

Every test of the client API runs twice, with ``GridClient`` in a thread and
with ``AsyncGridClient`` in the test's loop (where the gateway also runs).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.client import (
    AsyncGridClient,
    BadRequest,
    Conflict,
    EncryptedHost,
    GatewayError,
    GridClient,
    NodeAddress,
    NotFound,
    TransportError,
    Unauthorized,
    Unavailable,
    UnexpectedAnswer,
)
from tests.harness import ROOT, WAIT_S, Gateway, Harness, eventually
from tests.http_stubs import free_port

EXAMPLES = Path(ROOT) / "examples"
TOKEN = "s3cret-t0ken"
NODES = {name: f"http://{name}:5000" for name in ("alice", "bob", "carol", "dave")}
ALICE, BOB, CAROL, DAVE = (NodeAddress(name, address) for name, address in NODES.items())
ALICE_CONVNET = EncryptedHost(host=ALICE, workers=(BOB, CAROL), crypto_provider=DAVE)
CAROL_CONVNET = EncryptedHost(host=CAROL, workers=(ALICE, BOB), crypto_provider=DAVE)


class Client:
    """Calls a client method the same way whether the client under test is sync or async."""

    def __init__(self, kind: str, url: str | None, **options: object) -> None:
        self.kind, self.url, self.options = kind, url, options

    async def __call__(self, method: str, *args: object):
        if self.kind == "sync":
            def run():
                with GridClient(self.url, **self.options) as grid:
                    return getattr(grid, method)(*args)

            return await asyncio.to_thread(run)
        async with AsyncGridClient(self.url, **self.options) as grid:
            return await getattr(grid, method)(*args)


async def start(harness: Harness, **api: object) -> Gateway:
    """A gateway with the example nodes alice, bob, carol and an empty dave."""
    gateway = await harness.gateway(**api)
    for name in NODES:
        inventory = EXAMPLES / f"{name}.json"
        await harness.node(gateway, name, json.loads(inventory.read_text()) if
                           inventory.exists() else {})
    await gateway.wait_search_sees(len(NODES))
    return gateway


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def network(harness: Harness) -> Gateway:
    return await start(harness)


@pytest.fixture
def grid(kind: str, network: Gateway) -> Client:
    return Client(kind, network.api.url, timeout=WAIT_S)


async def test_searches(grid: Client) -> None:
    found = await grid("search", "#mnist", "#train")
    assert (found.nodes, found.asked, found.answered) == ((ALICE,), 4, 4)
    assert list(await grid("search", "#train")) == [ALICE, BOB, CAROL]
    assert (await grid("search_model", "mnist-cnn")).nodes == (ALICE, BOB)
    assert len(await grid("search_model", "nope")) == 0
    models = await grid("available_models")
    assert (models.names, models.asked, models.answered) == (
        ("bert-tiny", "mnist-cnn", "resnet18", "toy-linear"), 4, 4)
    assert "#cifar10" in (await grid("available_tags")).names


async def test_encrypted_search_default_shape(grid: Client) -> None:
    found = await grid("search_encrypted_model", "convnet")
    assert found.hosts == (ALICE_CONVNET,) and found.first == ALICE_CONVNET
    assert (found.asked, found.answered) == (4, 4)
    none = await grid("search_encrypted_model", "nope")
    assert none.hosts == () and none.first is None


async def test_encrypted_search_by_node_shape(kind: str, harness: Harness) -> None:
    gateway = await start(harness, encrypted_search_format="by-node")
    grid = Client(kind, gateway.api.url)
    found = await grid("search_encrypted_model", "convnet")
    assert found.hosts == (ALICE_CONVNET, CAROL_CONVNET) and found.first == ALICE_CONVNET
    assert (await grid("search_encrypted_model", "nope")).hosts == ()


async def test_nodes_and_host_choices(grid: Client) -> None:
    assert await grid("connected_nodes") == ("alice", "bob", "carol", "dave")
    (chosen,) = await grid("choose_model_host")
    assert chosen in (ALICE, BOB, CAROL, DAVE)
    (placement,) = await grid("choose_encrypted_model_host")
    nodes = [*placement.workers, placement.crypto_provider, placement.host]
    assert sorted(nodes, key=lambda node: node.id) == [ALICE, BOB, CAROL, DAVE]


async def test_too_few_nodes_for_an_encrypted_placement(kind: str, gateway: Gateway) -> None:
    assert await Client(kind, gateway.api.url)("choose_encrypted_model_host") == ()


async def test_join_and_delete(grid: Client) -> None:
    assert await grid("join", "erin", "http://erin:5000") == "Successfully Connected!"
    with pytest.raises(Conflict) as conflict:
        await grid("join", "erin", "http://erin:5000")
    assert (conflict.value.status, conflict.value.message) == (
        409, "This ID has already been registered.")
    with pytest.raises(NotFound) as missing:
        await grid("delete", "erin", "http://elsewhere:5000")
    assert (missing.value.status, missing.value.message) == (
        404, "This ID was not found in connected nodes")
    assert await grid("delete", "erin", "http://erin:5000") == "Successfully Deleted!"


async def test_bad_requests(kind: str, gateway: Gateway) -> None:
    grid = Client(kind, gateway.api.url)
    with pytest.raises(BadRequest) as no_tags:
        await grid("search")
    assert (no_tags.value.status, no_tags.value.message) == (400, "Invalid json fields.")
    with pytest.raises(BadRequest, match=r"^Invalid json\. \(HTTP 400\)$"):
        await grid("join", "not an id!", "http://x:5000")


async def test_token(kind: str, harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = await harness.gateway(admin_token=TOKEN, auth_read_routes=True)
    url = gateway.api.url
    for options in ({}, {"token": "wrong"}):
        with pytest.raises(Unauthorized) as refused:
            await Client(kind, url, **options)("join", "erin", "http://erin:5000")
        assert (refused.value.status, refused.value.message) == (
            401, "Missing or invalid bearer token.")
    with pytest.raises(Unauthorized):
        await Client(kind, url)("available_tags")
    assert await Client(kind, url, token=TOKEN)("join", "erin", "http://erin:5000")
    monkeypatch.setenv("GRID_ADMIN_TOKEN", TOKEN)  # the token and the URL from the environment
    monkeypatch.setenv("GRID_GATEWAY_URL", url)
    assert await Client(kind, None)("connected_nodes") == ("erin",)


async def test_no_search_worker_is_unavailable(kind: str, harness: Harness) -> None:
    gateway = await harness.gateway(searches=0, wait=False)

    async def search_missed() -> bool:
        reason = (await gateway.client.get("/readyz")).json().get("reason", "")
        return reason.endswith(".search")

    await eventually(search_missed)
    with pytest.raises(Unavailable) as unavailable:
        await Client(kind, gateway.api.url)("available_models")
    assert (unavailable.value.status, unavailable.value.message) == (
        503, "No search worker is running; try again shortly.")


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """Accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


@pytest.fixture
async def not_a_gateway() -> AsyncIterator[str]:
    """Answers every request 200 with a body no gateway route answers."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    server.close()
    await server.wait_closed()


async def test_transport_errors(kind: str, silent_server: str) -> None:
    with pytest.raises(TransportError) as refused:
        await Client(kind, f"http://127.0.0.1:{free_port()}")("connected_nodes")
    assert refused.value.status is None and "/connected-nodes" in refused.value.message
    with pytest.raises(TransportError, match="no answer within the timeout"):
        await Client(kind, silent_server, timeout=0.3)("search", "#mnist")


async def test_an_answer_that_is_not_the_gateways(kind: str, not_a_gateway: str) -> None:
    for method, args in (("search", ("#a",)), ("search_encrypted_model", ("m",)),
                         ("connected_nodes", ()), ("join", ("a", "http://a"))):
        with pytest.raises(UnexpectedAnswer):
            await Client(kind, not_a_gateway)(method, *args)


def test_every_error_is_a_gateway_error() -> None:
    for kind in (BadRequest, Conflict, NotFound, TransportError, Unauthorized, Unavailable,
                 UnexpectedAnswer):
        assert issubclass(kind, GatewayError)
    assert str(Conflict("taken", 409)) == "taken (HTTP 409)"
    assert str(TransportError("refused")) == "refused"


# --- the CLI, as a subprocess -----------------------------------------------------


async def cli(*args: str, **env: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.client", *args, cwd=ROOT,
        env={**os.environ, **env}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 30)
    return process.returncode, out.decode(), err.decode()


async def test_cli_tables(network: Gateway) -> None:
    url = network.api.url
    assert await cli("search", "#mnist", "--url", url) == (0, (
        "NODE   ADDRESS\n"
        "alice  http://alice:5000\n"
        "bob    http://bob:5000\n"
        "4 nodes asked, 4 answered\n"), "")
    code, out, _ = await cli("--url", url, "encrypted", "convnet")
    assert (code, out.splitlines()) == (0, [
        "HOST   ROLE             NODE   ADDRESS",
        "alice  host             alice  http://alice:5000",
        "alice  worker           bob    http://bob:5000",
        "alice  worker           carol  http://carol:5000",
        "alice  crypto provider  dave   http://dave:5000",
        "4 nodes asked, 4 answered"])
    assert await cli("nodes", "--url", url) == (0, "NODE\nalice\nbob\ncarol\ndave\n", "")
    code, out, _ = await cli("choose", "--encrypted", "--url", url)
    assert code == 0 and out.count("worker") == 2 and out.startswith("REPLICA  ROLE")
    assert await cli("model", "nope", "--url", url) == (0, "(none)\n4 nodes asked, 4 answered\n",
                                                        "")


async def test_cli_json(network: Gateway) -> None:
    url = network.api.url
    code, out, _ = await cli("--json", "--url", url, "model", "mnist-cnn")
    assert (code, json.loads(out)) == (0, {"asked": 4, "answered": 4, "nodes": [
        {"id": "alice", "address": "http://alice:5000"},
        {"id": "bob", "address": "http://bob:5000"}]})
    code, out, _ = await cli("tags", "--json", "--url", url)
    assert "#text" in json.loads(out)["names"]
    code, out, _ = await cli("join", "erin", "http://erin:5000", "--json", "--url", url)
    assert (code, json.loads(out)) == (0, {"message": "Successfully Connected!"})
    code, out, _ = await cli("--json", "--url", url, "choose")
    assert code == 0 and json.loads(out)[0]["id"] in ("alice", "bob", "carol", "dave", "erin")


async def test_cli_errors(network: Gateway) -> None:
    url = network.api.url
    await cli("join", "erin", "http://erin:5000", "--url", url)
    assert await cli("join", "erin", "http://erin:5000", "--url", url) == (
        1, "", "error: This ID has already been registered. (HTTP 409)\n")
    assert await cli("delete", "erin", "http://x:1", "--url", url) == (
        1, "", "error: This ID was not found in connected nodes (HTTP 404)\n")
    code, out, err = await cli("nodes", "--url", f"http://127.0.0.1:{free_port()}")
    assert (code, out) == (1, "") and err.startswith("error: GET http://127.0.0.1:")
    code, _, err = await cli("nodes", GRID_GATEWAY_URL=url, GRID_CLIENT_TIMEOUT_S="soon")
    assert (code, err) == (1, "error: GRID_CLIENT_TIMEOUT_S: Input should be a valid number, "
                              "unable to parse string as a number\n")
    code, _, err = await cli("search", "--url", url)  # no tag: a usage error
    assert code == 2 and "Traceback" not in err


async def test_cli_token(harness: Harness) -> None:
    gateway = await harness.gateway(admin_token=TOKEN)
    url = gateway.api.url
    assert await cli("join", "erin", "http://erin:5000", "--url", url) == (
        1, "", "error: Missing or invalid bearer token. (HTTP 401)\n")
    assert (await cli("join", "erin", "http://erin:5000", "--url", url, "--token", TOKEN))[0] == 0
    assert (await cli("delete", "erin", "http://erin:5000", GRID_GATEWAY_URL=url,
                      GRID_ADMIN_TOKEN=TOKEN))[:2] == (0, "Successfully Deleted!\n")
