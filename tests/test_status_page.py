"""The operator status page: its data routes, their cost, their failures, and a real browser.

The browser is Debian's ``chromium`` driven by selenium through ``chromedriver``
(:mod:`bench.browser`; ``./scripts/test`` installs both where missing). Selenium
blocks, and the gateway runs in the test's event loop, so every browser call runs
in a thread. The page at 10,000 nodes is tested in ``test_status_page_scale.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver

from bench.browser import BrowserMissing, chromium
from services.node.inventory import Inventory
from services.node.sdk import GridNode
from services.search.index import LISTS
from tests.harness import Gateway, Harness, eventually

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_NODES = ("alice", "bob", "carol")
TTL_S = 1.5
HEARTBEAT_S = 0.3
LIVENESS = {"node_ttl_s": TTL_S, "heartbeat_s": HEARTBEAT_S}
# What the page shows, read from its DOM in one call.
READ_PAGE = """
const chips = (line) => line === null ? null
  : [...line.querySelectorAll('.chip')].map((chip) => chip.textContent);
const body = document.querySelector('#nodes tbody');
return {
  ready: document.getElementById('readiness-badge').textContent,
  counts: Object.fromEntries([...document.querySelectorAll('#summary [data-count]')]
            .map((cell) => [cell.dataset.count, Number(cell.querySelector('b').textContent)])),
  rows: Object.fromEntries([...body.querySelectorAll('tr[data-node-id]')]
          .map((tr) => [tr.dataset.nodeId, tr.cells[2].textContent])),
  details: Object.fromEntries([...body.querySelectorAll('tr.detail')].map((tr) =>
             [tr.dataset.detailOf, {models: chips(tr.querySelector('.models')),
                                    tags: chips(tr.querySelector('.tags'))}])),
  pageInfo: document.getElementById('page-info').textContent,
  searches: [...document.querySelectorAll('#recent-searches tbody tr:not(.empty)')]
              .map((tr) => tr.cells[1].textContent),
};
"""
# Open (or close) a node's row, as a click does.
CLICK_ROW = """
document.querySelector('#nodes tr[data-node-id="' + CSS.escape(arguments[0]) + '"]').click();
"""
# Filter the table, as a viewer typing in the filter box and pressing Enter does.
FILTER = """
document.getElementById('filter-kind').value = arguments[0];
document.getElementById('filter-text').value = arguments[1];
document.getElementById('node-filter').requestSubmit();
"""


def inventory(name: str) -> Inventory:
    return Inventory.model_validate(json.loads((EXAMPLES / f"{name}.json").read_text()))


def shown(node: Inventory) -> dict[str, list[str]]:
    """How the page lists a node's models and tags."""
    return {"models": sorted(set(node.models)), "tags": sorted(set(node.tags()))}


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile; quit (browser and driver) in every case."""
    try:
        driver = chromium(tmp_path / "chromium-profile")
    except BrowserMissing as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield driver
    finally:
        driver.quit()


class Page:
    """The page in the browser, read and driven from the test's event loop."""

    def __init__(self, browser: webdriver.Chrome) -> None:
        self.browser = browser

    async def open(self, url: str) -> None:
        await asyncio.to_thread(self.browser.get, url)

    async def read(self) -> dict:
        return await asyncio.to_thread(self.browser.execute_script, READ_PAGE)

    async def click(self, node_id: str) -> None:
        await asyncio.to_thread(self.browser.execute_script, CLICK_ROW, node_id)

    async def filter(self, kind: str, text: str) -> None:
        await asyncio.to_thread(self.browser.execute_script, FILTER, kind, text)

    async def until(self, check) -> dict:
        """The page once ``check(page)`` holds (bounded by ``eventually``)."""

        async def read_when() -> dict | None:
            page = await self.read()
            return page if check(page) else None

        return await eventually(read_when)


async def network(harness: Harness, search_timeout_s: float = 0.6,
                  **api: Any) -> tuple[Gateway, dict[str, GridNode]]:
    """A gateway with short liveness and the three demo nodes, all answering searches."""
    gateway = await harness.gateway(registry=LIVENESS,
                                    search={**LIVENESS, "search_timeout_s": search_timeout_s},
                                    **LIVENESS, **api)
    nodes = {name: await harness.node(gateway, name, inventory(name), **LIVENESS)
             for name in DEMO_NODES}
    await gateway.wait_search_sees(len(DEMO_NODES))
    return gateway, nodes


async def status(client: httpx.AsyncClient, **params: Any) -> dict:
    response = await client.get("/status.json", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


async def index_settled(gateway: Gateway) -> None:
    """Until the search worker has indexed every node: it asks none of them again by itself."""
    worker = gateway.searches[0]

    async def settled() -> bool:
        view = worker.membership.view()
        return all(worker.index.unindexed(op, view) == 0
                   for op in LISTS) and len(view.expected) == len(DEMO_NODES)

    await eventually(settled)


def ids(data: dict) -> list[str]:
    return [row["node_id"] for row in data["nodes"]["rows"]]


# --- in a real browser ------------------------------------------------------------


async def test_page_lists_filters_details_and_drops_a_dead_node(
        harness: Harness, browser: webdriver.Chrome, tmp_path: Path) -> None:
    gateway, nodes = await network(harness, status_cache_s=0.5, gateway_name="test lab")
    await gateway.client.post("/search-model", json={"model_id": "mnist-cnn"})
    await gateway.client.post("/search", json={"query": ["#mnist"]})
    page = Page(browser)
    await page.open(gateway.api.url + "/")

    seen = await page.until(lambda p: set(p["rows"]) == set(DEMO_NODES))
    assert seen["rows"] == dict.fromkeys(DEMO_NODES, "live")
    assert seen["counts"]["live"] == 3 and seen["counts"]["offline"] == 0
    assert seen["ready"] == "ready"
    assert seen["searches"][:2] == ["/search", "/search-model"]
    assert "test lab" in await asyncio.to_thread(lambda: browser.title)

    await page.click("alice")  # her detail, asked of her
    seen = await page.until(lambda p: p["details"].get("alice", {}).get("models"))
    assert seen["details"] == {"alice": shown(inventory("alice"))}

    await page.filter("model", "mnist-cnn")  # alice and bob host it (examples/)
    await page.until(lambda p: sorted(p["rows"]) == ["alice", "bob"])
    await page.filter("node", "CAR")
    await page.until(lambda p: list(p["rows"]) == ["carol"])
    await page.filter("node", "")

    await nodes["bob"].stop()  # silent from now on: offline once the TTL passes
    seen = await page.until(lambda p: p["rows"].get("bob") == "offline")
    assert seen["counts"]["live"] == 2 and seen["counts"]["offline"] == 1
    screenshot = tmp_path / "status-page.png"
    assert await asyncio.to_thread(browser.save_screenshot, str(screenshot))
    print(f"status page screenshot: {screenshot}")


# --- the data route -------------------------------------------------------------


async def test_status_counts_and_lists_the_nodes_from_the_membership_view(
        harness: Harness) -> None:
    gateway, _ = await network(harness)
    data = await status(gateway.client)
    assert data["name"] == data["namespace"] == gateway.api.settings.namespace
    assert data["address"] == gateway.api.url
    summary = data["summary"]
    assert (summary["registered"], summary["live"], summary["offline"], summary["heard"],
            summary["versioned"]) == (3, 3, 0, 3, 3)
    assert (summary["source"], summary["error"]) == ("membership", None)
    assert ids(data) == list(DEMO_NODES)
    for row in data["nodes"]["rows"]:
        assert row["node_address"] == f"http://{row['node_id']}:5000"
        assert row["live"] and row["heard"] and row["version"] is not None
    assert data["readiness"]["ready"] and data["readiness"]["reason"] is None
    assert set(data["readiness"]["consumers"].values()) == {1}


async def test_a_refresh_asks_no_node_and_no_worker(harness: Harness) -> None:
    """However many viewers refresh, the node list costs no search and no registry call."""
    gateway, nodes = await network(harness)
    await index_settled(gateway)
    api = gateway.api.app.state.metrics

    def calls() -> tuple:
        rpc = {op: api.get_sample_value("grid_api_rpc_seconds_count",
                                        {"op": op, "outcome": "ok"}) or 0
               for op in ("search", "list", "membership")}
        return rpc["search"], rpc["list"], [node.queries_answered for node in nodes.values()]

    before = calls()
    answers = await asyncio.gather(*(gateway.client.get("/status.json") for _ in range(40)))
    assert {answer.status_code for answer in answers} == {200}
    assert {len(answer.json()["nodes"]["rows"]) for answer in answers} == {3}
    assert calls() == before


async def test_filters_by_id_model_tag_and_state_and_pages(harness: Harness) -> None:
    gateway, nodes = await network(harness)
    client = gateway.client
    assert ids(await status(client, node="O")) == ["bob", "carol"]  # any case
    by_model = await status(client, model="mnist-cnn")
    assert ids(by_model) == ["alice", "bob"]
    assert by_model["nodes"]["search"] == {"asked": 3, "answered": 3, "error": None}
    assert ids(await status(client, model="mnist-cnn", node="b")) == ["bob"]
    assert ids(await status(client, model="no-such-model")) == []
    tagged = await client.post("/search", json={"query": ["#mnist", "#train"]})
    assert ids(await status(client, tag=["#mnist", "#train"])) == [
        node_id for node_id, _ in tagged.json()] == ["alice"]
    first = await status(client, per_page=2)
    assert (ids(first), first["nodes"]["pages"], first["nodes"]["matching"]) == (
        ["alice", "bob"], 2, 3)
    assert ids(await status(client, per_page=2, page=2)) == ["carol"]
    assert ids(await status(client, per_page=2, page=9)) == []  # past the end: no rows

    await nodes["bob"].stop()

    async def bob_offline() -> dict | None:
        data = await status(client, state="offline")
        return data if ids(data) == ["bob"] else None

    await eventually(bob_offline, within=TTL_S + 15)
    assert ids(await status(client, state="live")) == ["alice", "carol"]
    # A model filter finds live nodes only: bob is not asked, so he is not listed.
    assert ids(await status(client, model="mnist-cnn")) == ["alice"]


@pytest.mark.parametrize(("query", "message"), [
    ("page=0", "Invalid query parameter 'page': Input should be greater than or equal to 1."),
    ("per_page=201",
     "Invalid query parameter 'per_page': Input should be less than or equal to 200."),
    ("page=two", "Invalid query parameter 'page': Input should be a valid integer, unable to "
                 "parse string as an integer."),
    ("state=gone", "Invalid query parameter 'state': Input should be 'all', 'live' or "
                   "'offline'."),
    ("node=", "Invalid query parameter 'node': String should have at least 1 character."),
    ("node=a&node=b", "Invalid query parameter 'node': given twice."),
    ("tag=" + "&tag=".join(f"%23t{i}" for i in range(17)),
     "Invalid query parameter 'tag': List should have at most 16 items after validation, "
     "not 17."),
    ("colour=red", "Unknown query parameter 'colour' (known: page, per_page, node, model, "
                   "tag, state)."),
])
async def test_a_wrong_parameter_is_a_400_that_names_it(harness: Harness, query: str,
                                                         message: str) -> None:
    server = await harness.api()
    client = await harness.client(server)
    response = await client.get(f"/status.json?{query}")
    assert (response.status_code, response.json()) == (400, {"message": message})


async def test_detail_is_known_from_the_index_or_asked_of_that_node_alone(
        harness: Harness) -> None:
    gateway, nodes = await network(harness)
    await index_settled(gateway)
    before = {name: node.queries_answered for name, node in nodes.items()}
    response = await gateway.client.get("/status/nodes/alice.json")
    assert response.status_code == 200, response.text
    detail = response.json()
    assert detail["node"]["node_id"] == "alice" and detail["asked"]
    assert {"models": detail["models"]["names"], "tags": detail["tags"]["names"]} == shown(
        inventory("alice"))
    assert detail["models"]["total"] == len(shown(inventory("alice"))["models"])
    assert detail["note"] is None
    after = {name: node.queries_answered for name, node in nodes.items()}
    assert after == before  # the search worker's index knew alice's lists: nobody asked
    await nodes["alice"].set_version(None)  # unversioned: the index no longer answers for her
    await eventually(lambda: _unversioned(gateway, "alice"))
    again = (await gateway.client.get("/status/nodes/alice.json")).json()
    assert again["models"] == detail["models"] and again["tags"] == detail["tags"]
    final = {name: node.queries_answered for name, node in nodes.items()}
    assert final == {**after, "alice": after["alice"] + 2}  # list_models, list_tags

    missing = await gateway.client.get("/status/nodes/nobody.json")
    assert (missing.status_code, missing.json()) == (
        404, {"message": "No node with this id is registered."})

    await nodes["bob"].stop()

    async def bob_offline() -> dict | None:
        detail = (await gateway.client.get("/status/nodes/bob.json")).json()
        return detail if not detail["node"]["live"] else None

    detail = await eventually(bob_offline, within=TTL_S + 15)
    assert (detail["asked"], detail["models"]["names"], detail["note"]) == (
        False, None, "Offline: not asked.")


async def test_detail_caps_the_names_it_lists(harness: Harness) -> None:
    gateway, _ = await network(harness, status_max_names=2)
    detail = (await gateway.client.get("/status/nodes/alice.json")).json()
    names = shown(inventory("alice"))
    assert detail["models"]["names"] == names["models"][:2]
    assert detail["models"]["total"] == len(names["models"])
    assert detail["tags"]["names"] == names["tags"][:2]


async def test_an_unsynced_view_falls_back_to_one_shared_registry_read(
        harness: Harness) -> None:
    gateway, _ = await network(harness, status_cache_s=60, membership_refresh_s=600)
    board = gateway.api.app.state.status_board
    gateway.api.app.state.gateway.membership.invalidate()  # as after a lost delta
    answers = await asyncio.gather(*(gateway.client.get("/status.json") for _ in range(20)))
    assert {answer.status_code for answer in answers} == {200}
    data = answers[0].json()
    assert (data["summary"]["source"], data["summary"]["live"]) == ("registry", 3)
    assert ids(data) == list(DEMO_NODES)
    # The registry knows when each node was last heard; the view does not.
    assert all(0 <= row["last_seen_s"] < TTL_S + 1 for row in data["nodes"]["rows"])
    assert board.registry_list.reads == 1


async def test_recent_searches_newest_first_and_bounded(harness: Harness) -> None:
    gateway, _ = await network(harness, status_recent_searches=3)
    await gateway.client.post("/search-model", json={"model_id": "mnist-cnn"})
    await gateway.client.post("/search", json={"query": ["#mnist"]})
    await gateway.client.get("/search-available-models")
    await gateway.client.post("/search-encrypted-model", json={"model_id": "convnet"})
    recent = (await status(gateway.client))["recent_searches"]
    assert [(search["route"], search["op"]) for search in recent] == [
        ("/search-encrypted-model", "encrypted_model"),
        ("/search-available-models", "list_models"),
        ("/search", "search_tags")]
    for search in recent:
        assert (search["asked"], search["answered"], search["outcome"]) == (3, 3, "ok")
        assert search["latency_ms"] > 0
    # The page's own searches (a filter by model) are not listed.
    await status(gateway.client, model="mnist-cnn")
    assert (await status(gateway.client))["recent_searches"] == recent


# --- failures ---------------------------------------------------------------------


async def test_search_worker_down_is_shown_not_waited_for(harness: Harness) -> None:
    await harness.registry()
    # A long RPC deadline: had the page waited on a missing worker, the client would time out.
    server = await harness.api(rpc_timeout_s=60)
    client = await harness.client(server)

    async def search_missing() -> bool:  # connected, and the consumers counted
        return "search" in (await client.get("/readyz")).json()["reason"]

    await eventually(search_missing)
    joined = await client.post("/join", json={"node-id": "alice",
                                              "node-address": "http://alice:5000"})
    assert joined.status_code == 200, joined.text
    data = await status(client)  # the table needs no search worker
    assert ids(data) == ["alice"] and data["summary"]["live"] == 1
    assert data["readiness"]["broker_connected"] and not data["readiness"]["ready"]
    data = await status(client, model="mnist-cnn")  # a filter by model does
    assert ids(data) == []
    assert data["nodes"]["search"]["error"] == "No search worker is running; try again shortly."
    assert (await client.get("/search-available-models")).status_code == 503
    data = await status(client)
    assert data["recent_searches"][0]["outcome"] == "no_consumer"
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")


async def test_broker_down_page_and_data_still_answer(harness: Harness) -> None:
    server = await harness.api(amqp_url="amqp://guest:guest@127.0.0.1:1/", rpc_timeout_s=60)
    client = await harness.client(server)
    response = await client.get("/status.json")
    assert response.status_code == 200
    data = response.json()
    assert data["readiness"] == {"ready": False, "broker_connected": False, "consumers": {},
                                 "reason": "the message broker is unreachable"}
    assert (data["summary"]["registered"], data["summary"]["source"]) == (0, "registry")
    assert data["summary"]["error"] == "The message broker is unavailable; try again shortly."
    assert data["nodes"]["rows"] == []
    detail = await client.get("/status/nodes/alice.json")
    assert (detail.status_code, detail.json()) == (
        404, {"message": "The message broker is unavailable; try again shortly."})
    assert (await client.get("/")).status_code == 200


# --- the page itself --------------------------------------------------------------


async def test_page_escapes_its_name_and_serves_its_script(harness: Harness) -> None:
    server = await harness.api(gateway_name="<lab & co>",
                               gateway_address="https://grid.example.org")
    client = await harness.client(server)
    page = await client.get("/")
    assert page.status_code == 200
    assert "&lt;lab &amp; co&gt;" in page.text and "<lab & co>" not in page.text
    assert "https://grid.example.org" in page.text
    assert '<script src="/static/status.js"></script>' in page.text
    script = await client.get("/static/status.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "textContent" in script.text and "innerHTML" not in script.text
    wrong = await client.post("/")
    assert (wrong.status_code, wrong.json()) == (405, {"message": "Method Not Allowed"})


async def test_closed_read_routes_close_the_page(harness: Harness) -> None:
    server = await harness.api(admin_token="s3cret", auth_read_routes=True)
    client = await harness.client(server)
    for path in ("/", "/status.json", "/status/nodes/alice.json"):
        response = await client.get(path)
        assert (response.status_code, response.json()) == (
            401, {"message": "Missing or invalid bearer token."})
    allowed = await client.get("/", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200


async def _unversioned(gateway, node_id: str) -> bool:
    return all(search.membership.versions.get(node_id, "") is None
               for search in gateway.searches)
