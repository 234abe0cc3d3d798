"""The operator status page: its data route, its cost, its failures, and a real browser.

The browser is Debian's ``chromium`` driven by selenium through ``chromedriver``
(``./scripts/test`` installs both where missing). Selenium blocks, and the
gateway runs in the test's event loop, so every browser call runs in a thread.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

from services.node.inventory import Inventory
from shared.contracts import NodeReply
from tests.harness import Gateway, Harness, eventually

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DEMO_NODES = ("alice", "bob", "carol")
TTL_S = 1.5
HEARTBEAT_S = 0.3
LIVENESS = {"node_ttl_s": TTL_S, "heartbeat_s": HEARTBEAT_S}
# Flags that let Chromium run headless as root on a machine without outside web.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1000"]
# What the page shows, read from its DOM in one call.
READ_PAGE = """
const chips = (cell) => [...cell.querySelectorAll('.chip')].map((chip) => chip.textContent);
const rows = (id) => [...document.querySelectorAll('#' + id + ' tbody tr[data-node-id]')];
return {
  ready: document.getElementById('readiness-badge').textContent,
  live: Object.fromEntries(rows('live-nodes').map((tr) => [tr.dataset.nodeId,
          {models: chips(tr.cells[3]), tags: chips(tr.cells[4])}])),
  offline: rows('offline-nodes').map((tr) => tr.dataset.nodeId),
  searches: [...document.querySelectorAll('#recent-searches tbody tr:not(.empty)')]
              .map((tr) => tr.cells[1].textContent),
};
"""


def inventory(name: str) -> Inventory:
    return Inventory.model_validate(json.loads((EXAMPLES / f"{name}.json").read_text()))


def shown(node: Inventory) -> dict[str, list[str]]:
    """How the page lists a node's models and tags."""
    return {"models": sorted(set(node.models)), "tags": sorted(set(node.tags()))}


def _executable(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not os.access(path, os.X_OK):
        pytest.fail(f"{name} is not installed; ./scripts/test installs it with "
                    "'apt-get install chromium chromium-driver' (as root)", pytrace=False)
    return path


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile; quit (browser and driver) in every case."""
    options = Options()
    options.binary_location = _executable("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(_executable("chromedriver")))
    try:
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(10)
        yield driver
    finally:
        driver.quit()


async def network(harness: Harness, search_timeout_s: float = 0.6,
                  **api: Any) -> tuple[Gateway, dict]:
    """A gateway with short liveness and the three demo nodes, all answering searches."""
    gateway = await harness.gateway(registry=LIVENESS,
                                    search={**LIVENESS, "search_timeout_s": search_timeout_s},
                                    **LIVENESS, **api)
    nodes = {name: await harness.node(gateway, name, inventory(name), **LIVENESS)
             for name in DEMO_NODES}
    await gateway.wait_search_sees(len(DEMO_NODES))
    return gateway, nodes


async def status(client: httpx.AsyncClient) -> dict:
    response = await client.get("/status.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


# --- in a real browser ------------------------------------------------------------


async def test_page_shows_the_nodes_and_drops_a_dead_one(
        harness: Harness, browser: webdriver.Chrome, tmp_path: Path) -> None:
    gateway, nodes = await network(harness, status_cache_s=0.5, gateway_name="test lab")
    await gateway.client.post("/search-model", json={"model_id": "mnist-cnn"})
    await gateway.client.post("/search", json={"query": ["#mnist"]})
    await asyncio.to_thread(browser.get, gateway.api.url + "/")

    async def read_page() -> dict:
        return await asyncio.to_thread(browser.execute_script, READ_PAGE)

    async def all_live() -> dict | None:
        page = await read_page()
        return page if set(page["live"]) == set(DEMO_NODES) else None

    page = await eventually(all_live)
    assert page["live"] == {name: shown(inventory(name)) for name in DEMO_NODES}
    assert page["ready"] == "ready" and page["offline"] == []
    assert page["searches"][:2] == ["/search", "/search-model"]
    assert "test lab" in await asyncio.to_thread(lambda: browser.title)

    await nodes["bob"].stop()  # silent from now on: offline once the TTL passes

    async def bob_offline() -> dict | None:
        page = await read_page()
        return page if "bob" not in page["live"] and page["offline"] == ["bob"] else None

    page = await eventually(bob_offline, within=TTL_S + 15)
    assert page["live"] == {name: shown(inventory(name)) for name in ("alice", "carol")}
    screenshot = tmp_path / "status-page.png"
    assert await asyncio.to_thread(browser.save_screenshot, str(screenshot))
    print(f"status page screenshot: {screenshot}")


# --- the data route -------------------------------------------------------------


async def test_status_lists_nodes_with_their_models_and_tags(harness: Harness) -> None:
    gateway, _ = await network(harness)
    data = await status(gateway.client)
    assert data["name"] == data["namespace"] == gateway.api.settings.namespace
    assert data["address"] == gateway.api.url
    assert [node["node_id"] for node in data["nodes"]["live"]] == list(DEMO_NODES)
    for node in data["nodes"]["live"]:
        assert {"models": node["models"], "tags": node["tags"]} == shown(
            inventory(node["node_id"]))
        assert node["node_address"] == f"http://{node['node_id']}:5000"
        assert 0 <= node["last_seen_s"] < TTL_S
    assert data["inventory"] == {"asked": 3, "answered": 3, "error": None}
    assert data["readiness"]["ready"] and data["readiness"]["reason"] is None
    assert set(data["readiness"]["consumers"].values()) == {1}


async def test_concurrent_viewers_share_one_look(harness: Harness) -> None:
    gateway, _ = await network(harness, status_cache_s=60)
    board = gateway.api.app.state.status_board
    api_searches = gateway.api.app.state.metrics
    worker = gateway.searches[0].metrics.registry

    def searches() -> tuple[float, float]:
        return (api_searches.get_sample_value("grid_api_rpc_seconds_count",
                                              {"op": "search", "outcome": "ok"}) or 0,
                worker.get_sample_value("grid_worker_message_seconds_count",
                                        {"service": "search", "op": "search",
                                         "outcome": "ok"}) or 0)

    before = searches()
    answers = await asyncio.gather(*(gateway.client.get("/status.json") for _ in range(40)))
    assert {answer.status_code for answer in answers} == {200}
    assert len({len(answer.json()["nodes"]["live"]) for answer in answers}) == 1
    assert board.looks_taken == 1
    # One look is one list_models and one list_tags search, however many viewers.
    after = searches()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 2)
    await status(gateway.client)
    assert board.looks_taken == 1 and searches() == after


async def test_a_slow_look_never_holds_the_page(harness: Harness) -> None:
    """While a new look waits on a node that does not answer, viewers get the last one."""
    gateway, _ = await network(harness, search_timeout_s=60, rpc_timeout_s=90,
                               status_cache_s=0.2)
    board = gateway.api.app.state.status_board
    gate = asyncio.Event()
    gate.set()

    async def answer_when_let(node_id: str, _: object) -> NodeReply:
        await gate.wait()
        return NodeReply(node_id=node_id, models=["slow-model"], tags=["#slow"])

    await harness.node(gateway, "dora", answer_when_let, **LIVENESS)
    await gateway.wait_search_sees(4)
    try:
        fresh = await status(gateway.client)
        assert fresh["nodes"]["live"][-1]["models"] == ["slow-model"]
        gate.clear()  # dora now holds every search until its deadline, a minute away

        async def second_look_pending() -> dict | None:
            data = await status(gateway.client)
            return data if board.looks_taken == 2 else None

        stale = await eventually(second_look_pending)
        # Answered the first look (older than the cache), not held for the second.
        assert stale["refreshed_s_ago"] >= 0.2
        assert ([node["node_id"] for node in stale["nodes"]["live"]]
                == [node["node_id"] for node in fresh["nodes"]["live"]])
        await status(gateway.client)
        assert board.looks_taken == 2  # the pending look is shared, not taken again
    finally:
        gate.set()

    async def fresh_again() -> bool:
        return (await status(gateway.client))["refreshed_s_ago"] < 0.2

    await eventually(fresh_again)


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
    # The page's own searches are not listed.
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
    data = await status(client)
    assert data["nodes"]["live"][0]["node_id"] == "alice"
    assert data["nodes"]["live"][0]["models"] is None
    assert data["readiness"]["broker_connected"] and not data["readiness"]["ready"]
    assert data["inventory"]["error"] == "No search worker is running; try again shortly."
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
    assert data["nodes"] == {
        "live": [], "offline": [],
        "error": "The message broker is unavailable; try again shortly."}
    assert data["inventory"]["error"] == "The message broker is unavailable; try again shortly."
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
    for path in ("/", "/status.json"):
        response = await client.get(path)
        assert (response.status_code, response.json()) == (
            401, {"message": "Missing or invalid bearer token."})
    allowed = await client.get("/", headers={"Authorization": "Bearer s3cret"})
    assert allowed.status_code == 200
