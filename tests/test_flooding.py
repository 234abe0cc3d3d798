"""A node that floods the gateway: an absurd inventory, an oversized reply.

Node ``mallory`` runs on the bus like any node (the SDK, on the shared broker,
in the test's namespace) but answers with lists far beyond any real node.
The search worker caps her lists (GRID_MAX_NODE_MODELS, GRID_MAX_NODE_TAGS)
and drops a reply over GRID_MAX_REPLY_BYTES, counting her as not answering;
the API's answers and /status.json stay small, and nothing honest ``alice``
answers changes.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import orjson

from services.node.inventory import Inventory
from shared.contracts import NodeQuery, NodeReply
from tests.harness import ROOT, Gateway, Harness, eventually

# Every search must end within its deadline, the hostile node's share dropped.
SEARCH = {"search_timeout_s": 1.0}
# Bounds on what a client receives with mallory on the network (the caps' purpose:
# without them the same network answers /status.json in 6.4 MB).
STATUS_MAX_BYTES = 64 * 1024
TAGS_MAX_BYTES = 256 * 1024
EXAMPLES = Path(ROOT) / "examples"


def alice() -> Inventory:
    return Inventory.model_validate(json.loads((EXAMPLES / "alice.json").read_text()))


def hostile(models: int, tags: int):
    """A node answering ``models`` models and ``tags`` tags, and matching any of them."""
    names = {"models": [f"m{i:07d}" for i in range(models)],
             "tags": [f"#t{i:07d}" for i in range(tags)]}
    held = {"models": set(names["models"]), "tags": set(names["tags"])}

    def answer(node_id: str, query: NodeQuery) -> NodeReply:
        if query.op in ("list_models", "list_tags"):
            field = "models" if query.op == "list_models" else "tags"
            return NodeReply(node_id=node_id, version="v1", **{field: names[field]})
        if query.op == "has_model":
            return NodeReply(node_id=node_id, version="v1", match=query.model_id in held["models"])
        if query.op == "search_tags":
            return NodeReply(node_id=node_id, version="v1",
                             match=held["tags"].issuperset(query.tags or ()))
        return NodeReply(node_id=node_id, version="v1")

    return answer


async def what_alice_gets(gateway: Gateway) -> dict:
    """Every answer that concerns alice, as a client and the status page see it."""
    client = gateway.client
    own = (await client.get("/status/nodes/alice.json")).json()
    models = set((await client.get("/search-available-models")).json())
    tags = set((await client.get("/search-available-tags")).json())
    return {
        "has_model": (await client.post("/search-model", json={"model_id": "mnist-cnn"})).json(),
        "tags": (await client.post("/search", json={"query": ["#mnist", "#train"]})).json(),
        "encrypted": (await client.post("/search-encrypted-model",
                                        json={"model_id": "convnet"})).json(),
        "own_models": sorted(models & set(alice().models)),
        "own_tags": sorted(tags & set(alice().tags())),
        "status": own,
    }


async def with_alice(harness: Harness) -> tuple[Gateway, dict]:
    gateway = await harness.gateway(search=SEARCH)
    await harness.node(gateway, "alice", alice())
    await gateway.wait_search_sees(1)
    return gateway, await what_alice_gets(gateway)


async def mallory_shown(gateway: Gateway) -> tuple[httpx.Response, httpx.Response]:
    """/status.json and mallory's detail on the status page (asked of her alone)."""
    status = await gateway.client.get("/status.json")
    assert [row["node_id"] for row in status.json()["nodes"]["rows"]] == ["alice", "mallory"]
    detail = await gateway.client.get("/status/nodes/mallory.json")
    assert detail.status_code == 200, detail.text
    return status, detail


def sample(gateway: Gateway, name: str, labels: dict) -> float:
    return gateway.searches[0].metrics.registry.get_sample_value(name, labels) or 0


async def test_an_absurd_inventory_is_capped_per_node(harness: Harness) -> None:
    gateway, before = await with_alice(harness)
    await harness.node(gateway, "mallory", hostile(50_000, 50_000), version="v1")
    await gateway.wait_search_sees(2)
    client = gateway.client

    tags = await client.get("/search-available-tags")
    assert len(tags.content) < TAGS_MAX_BYTES
    names = tags.json()
    assert set(alice().tags()) <= set(names)
    assert len(names) == len(set(alice().tags())) + 10_000  # GRID_MAX_NODE_TAGS
    assert sample(gateway, "grid_search_lists_capped_total", {"list": "tags"}) >= 1
    # A model beyond her cap is still found: a cut list is never indexed, she is asked.
    found = await client.post("/search-model", json={"model_id": "m0049999"})
    assert [node[0] for node in found.json()] == ["mallory"]

    status, detail = await mallory_shown(gateway)
    assert len(status.content) < STATUS_MAX_BYTES and len(detail.content) < STATUS_MAX_BYTES
    shown = detail.json()["models"]
    assert len(shown["names"]) == 100 and shown["total"] == 10_000  # the caps
    assert await what_alice_gets(gateway) == before


async def test_an_oversized_reply_is_dropped_and_counts_as_no_answer(harness: Harness) -> None:
    gateway, before = await with_alice(harness)
    # The figures of the report: 200,000 models and 300,000 tags from one node.
    await harness.node(gateway, "mallory", hostile(200_000, 300_000), version="v1")
    client = gateway.client

    async def asked_both():
        answer = await client.get("/search-available-tags")
        return answer if answer.headers["x-grid-nodes-asked"] == "2" else None

    tags = await eventually(asked_both)
    assert tags.json() == sorted(set(alice().tags()))
    assert tags.headers["x-grid-nodes-answered"] == "1"
    assert sample(gateway, "grid_search_replies_dropped_total", {"reason": "oversized"}) >= 1
    # Small answers from her still count: she is not banned, only her floods are.
    found = await client.post("/search-model", json={"model_id": "m0199999"})
    assert [node[0] for node in found.json()] == ["mallory"]

    status, detail = await mallory_shown(gateway)  # her lists are dropped unread there too
    assert len(status.content) < STATUS_MAX_BYTES and len(detail.content) < STATUS_MAX_BYTES
    shown = orjson.loads(detail.content)
    assert shown["models"]["names"] is None and shown["tags"]["names"] is None
    assert shown["note"] == "The node did not answer in time."
    assert await what_alice_gets(gateway) == before
