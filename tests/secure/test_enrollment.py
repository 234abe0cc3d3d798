"""Enrollment: ``python -m services.admin`` and the admin routes, the store, the bridge.

On a private broker with the management plugin (tests/secure/managed_broker.py),
every gateway process in secure mode. The store's enrollment table is tested
on SQLite and PostgreSQL from the same code.
"""

from __future__ import annotations

import asyncio
import os
import sys

import aio_pika
import pytest

from services.bridge.worker import BridgeWorker
from services.client import GridClient
from services.node.httpnode import HttpNodeApp, HttpNodeServer
from services.node.inventory import Inventory
from services.registry.store import open_store
from shared.auth import token_hash
from shared.settings import BridgeSettings
from tests.harness import ROOT, WAIT_S, eventually
from tests.secure.gateway import ADMIN, FAST, Secure

ALICE = {"models": ["alice-model"], "tensors": [{"id": "a1", "tags": ["#alice"]}]}
CAROL = {"models": ["carol-model"]}


async def admin_cli(secure: Secure, *args: str) -> tuple[int, str, str]:
    """Run ``python -m services.admin ARGS`` as the operator would, bounded."""
    env = {**os.environ, "AMQP_URL": secure.broker.url,
           "GRID_NAMESPACE": secure.names.namespace, "GRID_LOG_LEVEL": "WARNING"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.admin", *args, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode, out.decode(), err.decode()


def settings_of(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)


async def listed(client, node_id: str) -> bool:
    return node_id in (await client.get("/connected-nodes")).json()["grid-nodes"]


async def test_enroll_list_rotate_and_revoke_from_the_command_line(secure: Secure) -> None:
    gateway = await secure.start()
    alice = secure.id("alice")
    code, out, err = await admin_cli(secure, "enroll", alice, "--address", "http://alice:5000")
    assert code == 0, err
    env = settings_of(out)
    assert set(env) == {"GRID_NODE_ID", "AMQP_URL", "GRID_NAMESPACE", "GRID_NODE_TOKEN",
                        "GRID_NODE_ADDRESS"}
    assert env["GRID_NODE_ID"] == alice and f"{alice}:" in env["AMQP_URL"]
    await secure.harness.node(gateway, alice, ALICE, address=env["GRID_NODE_ADDRESS"],
                              amqp_url=env["AMQP_URL"], node_token=env["GRID_NODE_TOKEN"], **FAST)
    await gateway.wait_search_sees(1)
    code, out, _ = await admin_cli(secure, "list")
    assert code == 0 and out.startswith(f"{alice}\tamqp\tenrolled ") and "registered" in out
    assert "last heard never" not in out

    # Rotation: the old password and token stop working, the new ones work.
    code, out, _ = await admin_cli(secure, "enroll", alice)
    rotated = settings_of(out)
    assert code == 0 and rotated["GRID_NODE_TOKEN"] != env["GRID_NODE_TOKEN"]
    with pytest.raises(aio_pika.exceptions.ProbableAuthenticationError):
        await aio_pika.connect(env["AMQP_URL"], timeout=5)
    await (await aio_pika.connect(rotated["AMQP_URL"], timeout=5)).close()
    body = {"node-id": alice, "node-address": "http://alice:5000"}
    old = {"Authorization": f"Bearer {env['GRID_NODE_TOKEN']}"}
    assert (await gateway.client.post("/join", json=body, headers=old)).status_code == 401

    code, out, _ = await admin_cli(secure, "revoke", alice)
    assert code == 0 and out.strip() == "done"
    assert not await listed(gateway.client, alice)
    code, _, err = await admin_cli(secure, "revoke", alice)
    assert code == 1 and "not enrolled" in err
    code, out, _ = await admin_cli(secure, "list")
    assert out.strip() == "(no node enrolled)"


async def test_admin_routes_need_the_admin_token(secure: Secure) -> None:
    gateway = await secure.start()
    client = gateway.client
    body = {"node-id": secure.id("x")}
    assert (await client.post("/admin/enroll", json=body)).status_code == 401
    bad = {"Authorization": "Bearer not-the-admin"}
    assert (await client.post("/admin/revoke", json=body, headers=bad)).status_code == 401
    assert (await client.get("/admin/nodes", headers=bad)).status_code == 401
    admin = {"Authorization": f"Bearer {ADMIN}"}
    response = await client.post("/admin/enroll", json={"node-id": "bad id"}, headers=admin)
    assert (response.status_code, response.json()) == (400, {"message": "Invalid json fields."})
    response = await client.post("/admin/revoke", json=body, headers=admin)
    assert response.status_code == 404
    # The gateway's own broker user is never a node's: not taken over, not deleted.
    response = await client.post("/admin/enroll", json={"node-id": "guest"}, headers=admin)
    assert (response.status_code, response.json()) == (
        400, {"message": "guest is one of the gateway's own broker users"})
    response = await client.post("/admin/revoke", json={"node-id": "guest"}, headers=admin)
    assert response.status_code == 404
    await (await aio_pika.connect(secure.broker.url, timeout=5)).close()
    credentials = await secure.operator.enroll(secure.id("x"), "http://x:5000")
    assert credentials.env().splitlines()[0] == f"GRID_NODE_ID={secure.id('x')}"
    nodes = (await client.get("/admin/nodes", headers=admin)).json()["nodes"]
    assert [(n["node_id"], n["registered"], n["last_heard"]) for n in nodes] == [
        (secure.id("x"), False, None)]
    assert await secure.operator.revoke(secure.id("x")) == "Revoked."

    def with_the_sync_client() -> str:
        with GridClient(gateway.api.url, token=ADMIN) as grid:
            grid.enroll(secure.id("y"), bridged=True)
            return grid.revoke(secure.id("y"))

    assert await asyncio.to_thread(with_the_sync_client) == "Revoked."


async def test_admin_routes_are_off_without_an_admin_token(secure: Secure) -> None:
    gateway = await secure.start(admin_token=None)
    response = await gateway.client.post("/admin/enroll", json={"node-id": "x"})
    assert response.status_code == 403


async def test_a_secure_bridge_answers_only_for_nodes_enrolled_bridged(secure: Secure) -> None:
    bridge_user = secure.id("bridge")
    gateway = await secure.start(workers={"bridge_users": bridge_user}, bridge_users=bridge_user)
    alice = await secure.enroll("alice")
    await secure.node(alice, ALICE, **FAST)
    app = HttpNodeApp({secure.id("carol"): Inventory.model_validate(CAROL),
                       secure.id("dave"): Inventory.model_validate(CAROL)})
    server = HttpNodeServer(app)
    await server.start()
    secure.harness._stoppers.append(server.stop)
    carol = await secure.operator.enroll(secure.id("carol"), server.address(secure.id("carol")),
                                         bridged=True)
    dave = await secure.operator.enroll(secure.id("dave"), server.address(secure.id("dave")))
    for node in (carol, dave):  # HTTP-only nodes join with their own token
        body = {"node-id": node.node_id, "node-address": node.address}
        response = await gateway.client.post(
            "/join", json=body, headers={"Authorization": f"Bearer {node.token}"})
        assert response.status_code == 200
    response = await gateway.client.post("/admin/bridge-user", json={"user": bridge_user},
                                         headers={"Authorization": f"Bearer {ADMIN}"})
    bridge = BridgeWorker(BridgeSettings(
        amqp_url=response.json()["amqp-url"], namespace=secure.names.namespace,
        node_auth=True, gateway_users="guest", bridge_name="b", log_level="WARNING", **FAST))
    secure.harness._stoppers.append(bridge.stop)
    await bridge.start()
    await asyncio.wait_for(bridge.consuming.wait(), WAIT_S)
    await gateway.wait_search_sees(2)  # alice, and carol through the bridge; never dave
    response = await gateway.client.get("/search-available-models")
    assert response.json() == ["alice-model", "carol-model"]
    assert response.headers["x-grid-nodes-asked"] == "2"
    assert app.requests[dave.node_id] == 0


async def test_forged_bridge_replies_for_other_nodes_are_dropped(secure: Secure) -> None:
    """The bridge's user answering in alice's name (not bridged) is an impostor."""
    bridge_user = secure.id("bridge")
    # No cache and no index: every search asks the nodes, so the forger is asked too.
    gateway = await secure.start(workers={"bridge_users": bridge_user, "search_cache": False,
                                          "search_index": False}, search_cache=False)
    alice = await secure.enroll("alice")
    await secure.node(alice, ALICE, **FAST)
    await gateway.wait_search_sees(1)
    response = await gateway.client.post("/admin/bridge-user", json={"user": bridge_user},
                                         headers={"Authorization": f"Bearer {ADMIN}"})
    names, search = secure.names, gateway.searches[0]
    async with await aio_pika.connect(response.json()["amqp-url"]) as connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(names.bridge_queue, auto_delete=True,
                                            arguments={"x-message-ttl": 10_000,
                                                       "x-max-length": 1000,
                                                       "x-overflow": "drop-head"})
        await queue.bind(names.broadcast_exchange)
        replies = await channel.get_exchange(names.replies_exchange, ensure=False)

        async def forge(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            body = b'{"node_id": "%s", "models": ["forged"]}' % alice.node_id.encode()
            await replies.publish(aio_pika.Message(body, correlation_id=message.correlation_id,
                                                   user_id=bridge_user),
                                  routing_key=message.reply_to)

        await queue.consume(forge, no_ack=True)

        async def impostor_dropped() -> bool:
            response = await gateway.client.get("/search-available-models")
            assert response.json() == ["alice-model"]
            return (search.metrics.registry.get_sample_value(
                "grid_search_replies_dropped_total", {"reason": "impostor"}) or 0) >= 1

        await eventually(impostor_dropped)


async def test_the_store_keeps_only_token_hashes(database_url: tuple[str, str]) -> None:
    store = open_store(*database_url)
    await store.open()
    try:
        await store.enroll("alice", token_hash("t1"), False, "http://alice:5000")
        await store.add("alice", "http://alice:5000", "r1")
        assert await store.token_owner(token_hash("t1")) == "alice"
        await store.enroll("alice", token_hash("t2"), True, "")  # rotation
        assert await store.token_owner(token_hash("t1")) is None
        [row] = await store.enrolled()
        assert (row.node_id, row.bridged) == ("alice", True)
        assert await store.revoke("alice") and not await store.revoke("alice")
        assert await store.nodes() == [] and await store.enrolled() == []
        assert await store.token_owner(token_hash("t2")) is None
    finally:
        await store.close()
