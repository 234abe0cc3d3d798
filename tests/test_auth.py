"""Optional bearer-token auth: open by default, closed by an admin token.

With ``admin_token`` set, /join and /delete-node need ``Authorization: Bearer
<token>``; with ``auth_read_routes`` as well, so do the read and search routes.
The operations routes stay open, and the token never reaches the logs.
"""

from __future__ import annotations

import base64
import logging

import httpx
import pytest

from services.node.sdk import JoinRefused
from shared.logs import JsonFormatter
from shared.settings import ApiSettings, NodeSettings
from tests.harness import Gateway, Harness, eventually

TOKEN = "s3cret"
GOOD = {"Authorization": f"Bearer {TOKEN}"}
UNAUTHORIZED = {"message": "Missing or invalid bearer token."}
ALICE = {"node-id": "alice", "node-address": "http://alice:5000"}
INVENTORY = {"models": ["m1"], "tensors": [{"id": "t1", "tags": ["#a"]}]}

# Requests that must be refused by a closed gateway.
BAD_CREDENTIALS = [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": "Bearer wr0ng-t0ken"}, id="wrong-token"),
    pytest.param({"Authorization": f"Bearer {TOKEN}x"}, id="token-plus-suffix"),
    pytest.param({"Authorization": f"Bearer {TOKEN[:-1]}"}, id="token-prefix"),
    pytest.param({"Authorization": "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()},
                 id="basic-scheme"),
    pytest.param({"Authorization": f"Basic {TOKEN}"}, id="basic-with-the-token"),
    pytest.param({"Authorization": TOKEN}, id="token-without-scheme"),
    # "Bearer " on the wire: the trailing space is stripped by every HTTP parser (and
    # refused by httpx), so this is what the API sees.
    pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
    pytest.param({"Authorization": "Bearer \"\""}, id="quoted-empty-bearer"),
]

# (method, path, JSON body) of every read and search route.
READ_ROUTES = [
    ("GET", "/connected-nodes", None),
    ("GET", "/choose-model-host", None),
    ("GET", "/choose-encrypted-model-host", None),
    ("GET", "/search-available-models", None),
    ("GET", "/search-available-tags", None),
    ("POST", "/search", {"query": ["#a"]}),
    ("POST", "/search-model", {"model_id": "m1"}),
    ("POST", "/search-encrypted-model", {"model_id": "m1"}),
]
OPERATIONS_ROUTES = ["/healthz", "/readyz", "/metrics"]


def assert_unauthorized(response: httpx.Response) -> None:
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED)
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/json"


async def connected(gateway: Gateway) -> list[str]:
    response = await gateway.client.get("/connected-nodes", headers=GOOD)
    assert response.status_code == 200
    return response.json()["grid-nodes"]


async def send(client: httpx.AsyncClient, method: str, path: str, body: object,
               headers: dict[str, str] | None = None) -> httpx.Response:
    return await client.request(method, path, json=body, headers=headers)


# --- open by default ---------------------------------------------------------


async def test_write_routes_are_open_by_default(client: httpx.AsyncClient) -> None:
    response = await client.post("/join", json=ALICE)
    assert (response.status_code, response.json()) == (200, {"message": "Successfully Connected!"})
    response = await client.request("DELETE", "/delete-node", json=ALICE)
    assert (response.status_code, response.json()) == (200, {"message": "Successfully Deleted!"})


async def test_read_routes_flag_alone_does_not_close_anything(harness: Harness) -> None:
    """auth_read_routes only means something once a token is set."""
    gateway = await harness.gateway(auth_read_routes=True)
    assert (await gateway.client.post("/join", json=ALICE)).status_code == 200
    for method, path, body in READ_ROUTES:
        response = await send(gateway.client, method, path, body)
        assert response.status_code == 200, (method, path, response.text)


# --- write routes with a token -----------------------------------------------


@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
async def test_join_without_the_token_is_401(harness: Harness, headers: dict[str, str]) -> None:
    gateway = await harness.gateway(admin_token=TOKEN)
    response = await gateway.client.post("/join", json=ALICE, headers=headers)
    assert_unauthorized(response)
    assert await connected(gateway) == []


@pytest.mark.parametrize("headers", BAD_CREDENTIALS)
async def test_delete_without_the_token_is_401(harness: Harness, headers: dict[str, str]) -> None:
    gateway = await harness.gateway(admin_token=TOKEN)
    assert (await gateway.client.post("/join", json=ALICE, headers=GOOD)).status_code == 200
    response = await gateway.client.request("DELETE", "/delete-node", json=ALICE, headers=headers)
    assert_unauthorized(response)
    assert await connected(gateway) == ["alice"]


async def test_write_routes_accept_the_token(harness: Harness) -> None:
    gateway = await harness.gateway(admin_token=TOKEN)
    response = await gateway.client.post("/join", json=ALICE, headers=GOOD)
    assert (response.status_code, response.json()) == (200, {"message": "Successfully Connected!"})
    assert await connected(gateway) == ["alice"]
    # The scheme is case-insensitive (RFC 7235).
    response = await gateway.client.request("DELETE", "/delete-node", json=ALICE,
                                            headers={"Authorization": f"bearer {TOKEN}"})
    assert (response.status_code, response.json()) == (200, {"message": "Successfully Deleted!"})
    assert await connected(gateway) == []


@pytest.mark.parametrize("body", [b"not json", b'{"node-id": "a"}', b"x" * (2 << 20)],
                         ids=["not-json", "field-missing", "too-large"])
async def test_token_is_checked_before_the_body(harness: Harness, body: bytes) -> None:
    """Without the token a client learns nothing about what the route would accept."""
    gateway = await harness.gateway(admin_token=TOKEN)
    assert_unauthorized(await gateway.client.post("/join", content=body))
    assert_unauthorized(await gateway.client.request("DELETE", "/delete-node", content=body))


# --- read routes ---------------------------------------------------------------


async def test_read_routes_stay_open_with_only_a_token(harness: Harness) -> None:
    gateway = await harness.gateway(admin_token=TOKEN)
    await harness.node(gateway, "alice", INVENTORY, admin_token=TOKEN)
    for method, path, body in READ_ROUTES:
        response = await send(gateway.client, method, path, body)
        assert response.status_code == 200, (method, path, response.text)


@pytest.mark.parametrize(("method", "path", "body"), READ_ROUTES,
                         ids=[f"{method} {path}" for method, path, _ in READ_ROUTES])
async def test_read_routes_closed_with_auth_read_routes(
    harness: Harness, method: str, path: str, body: object
) -> None:
    gateway = await harness.gateway(admin_token=TOKEN, auth_read_routes=True)
    await harness.node(gateway, "alice", INVENTORY, admin_token=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wr0ng-t0ken"}, {"Authorization": "Bearer"}):
        assert_unauthorized(await send(gateway.client, method, path, body, headers))
    response = await send(gateway.client, method, path, body, GOOD)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"


async def test_read_routes_closed_answer_real_data_with_the_token(harness: Harness) -> None:
    gateway = await harness.gateway(admin_token=TOKEN, auth_read_routes=True)
    await harness.node(gateway, "alice", INVENTORY, admin_token=TOKEN)
    assert await connected(gateway) == ["alice"]

    async def search_sees_alice() -> httpx.Response | None:
        # Gateway.wait_search_sees asks without a token, which these routes refuse.
        response = await gateway.client.post("/search-model", json={"model_id": "m1"},
                                             headers=GOOD)
        return response if response.headers.get("x-grid-nodes-answered") == "1" else None

    response = await eventually(search_sees_alice)
    assert response.json() == [["alice", "http://alice:5000"]]


@pytest.mark.parametrize("path", OPERATIONS_ROUTES)
async def test_operations_routes_stay_open(harness: Harness, path: str) -> None:
    gateway = await harness.gateway(admin_token=TOKEN, auth_read_routes=True)
    response = await gateway.client.get(path)
    assert response.status_code == 200, response.text


# --- nodes -------------------------------------------------------------------


async def test_node_with_the_token_joins_a_closed_gateway(harness: Harness) -> None:
    gateway = await harness.gateway(admin_token=TOKEN)
    node = await harness.node(gateway, "alice", INVENTORY, admin_token=TOKEN)
    assert await connected(gateway) == ["alice"]
    await gateway.wait_search_sees(1)
    await node.stop(leave=True)  # DELETE /delete-node carries the token too
    assert await connected(gateway) == []


async def test_node_without_the_token_is_refused(harness: Harness) -> None:
    gateway = await harness.gateway(admin_token=TOKEN)
    with pytest.raises(JoinRefused, match="401"):
        await harness.node(gateway, "alice", INVENTORY)
    with pytest.raises(JoinRefused, match="401"):
        await harness.node(gateway, "bob", INVENTORY, admin_token="not-the-token")
    assert await connected(gateway) == []


async def test_node_joins_an_open_gateway_without_a_token(harness: Harness) -> None:
    gateway = await harness.gateway()
    await harness.node(gateway, "alice", INVENTORY)
    assert await connected(gateway) == ["alice"]


# --- logs ----------------------------------------------------------------------


def _capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    """DEBUG for the root and for every logger that sets its own level (restored after)."""
    caplog.set_level(logging.DEBUG)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            caplog.set_level(logging.DEBUG, logger=name)


async def test_token_never_appears_in_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "wr0ng-t0ken"
    gateway = await harness.gateway(admin_token=TOKEN, auth_read_routes=True)
    _capture_everything(caplog)

    assert_unauthorized(await gateway.client.post(
        "/join", json=ALICE, headers={"Authorization": f"Bearer {wrong}"}))
    assert_unauthorized(await gateway.client.get(
        "/connected-nodes", headers={"Authorization": f"Bearer {wrong}"}))
    assert (await gateway.client.post("/join", json=ALICE, headers=GOOD)).status_code == 200
    assert (await gateway.client.get("/connected-nodes", headers=GOOD)).status_code == 200
    await harness.node(gateway, "bob", INVENTORY, admin_token=TOKEN)

    statuses = {getattr(record, "status", None) for record in caplog.records
                if record.name == "services.api"}
    assert {200, 401} <= statuses, "the API's request log lines were not captured"
    formatter = JsonFormatter()
    for record in caplog.records:
        line = formatter.format(record) + repr(record.args)
        assert TOKEN not in line, line
        assert wrong not in line, line
    assert TOKEN not in caplog.text and wrong not in caplog.text


@pytest.mark.parametrize("blank", ["", "   "])
def test_a_blank_admin_token_leaves_the_gateway_open(
        blank: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # An empty GRID_ADMIN_TOKEN is a token nobody meant to set, and with it
    # "Authorization: Bearer" (an empty credential) would otherwise match.
    monkeypatch.setenv("GRID_ADMIN_TOKEN", blank)
    assert ApiSettings().admin_token is None
    assert NodeSettings().admin_token is None
    monkeypatch.setenv("GRID_ADMIN_TOKEN", TOKEN)
    assert ApiSettings().admin_token.get_secret_value() == TOKEN
