"""The status page at 10,000 nodes: it loads, filters by id and by model, and stays small.

The gateway and a fleet of 10,000 simulated nodes run as subprocesses
(:class:`bench.stack.LocalStack`, as ``python -m bench`` starts them), the page
in a real browser. Timing is the benchmark's (``python -m bench.status_page``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from selenium import webdriver

from bench import inventory as inv
from bench.stack import LocalStack, StackConfig
from tests.test_status_page import Page, browser  # noqa: F401 - the fixture

NODES = 10_000
# /status.json at the default page size, and at the largest, with 10,000 nodes.
STATUS_MAX_BYTES = 48 * 1024
FULL_PAGE_MAX_BYTES = 96 * 1024

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
async def stack(amqp_url: str) -> AsyncIterator[LocalStack]:
    stack = LocalStack(StackConfig(amqp_url=amqp_url, nodes=NODES, ready_timeout_s=120))
    try:
        await stack.start()
        yield stack
    finally:
        await stack.stop()


async def test_the_page_at_ten_thousand_nodes(stack: LocalStack,
                                              browser: webdriver.Chrome) -> None:  # noqa: F811
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        default = await client.get("/status.json")
        full = await client.get("/status.json", params={"per_page": 200})
        by_model = await client.get("/status.json", params={"model": inv.model_query(7)})
        detail = await client.get(f"/status/nodes/{inv.node_id(4321)}.json")
    assert default.status_code == full.status_code == by_model.status_code == 200
    assert len(default.content) < STATUS_MAX_BYTES, len(default.content)
    assert len(full.content) < FULL_PAGE_MAX_BYTES, len(full.content)
    assert default.json()["summary"]["live"] == NODES
    hosts = [node_id for node_id, _ in inv.pairs_of_class(7, NODES)]
    assert by_model.json()["nodes"]["matching"] == len(hosts)
    assert detail.json()["models"]["names"] == sorted(set(inv.inventory(4321, NODES).models))

    page = Page(browser)
    await page.open(stack.url + "/")
    seen = await page.until(lambda p: p["counts"].get("live") == NODES)
    assert list(seen["rows"]) == [inv.node_id(i) for i in range(50)]
    assert seen["pageInfo"] == f"page 1 of {NODES // 50} · {NODES} nodes"

    await page.filter("node", "node-0432")  # node-04320 .. node-04329
    seen = await page.until(lambda p: list(p["rows"])[:1] == [inv.node_id(4320)])
    assert list(seen["rows"]) == [inv.node_id(i) for i in range(4320, 4330)]

    await page.filter("model", inv.model_query(7))
    seen = await page.until(lambda p: list(p["rows"])[:1] == hosts[:1])
    assert list(seen["rows"]) == hosts[:50]
    assert seen["pageInfo"].endswith(f"{len(hosts)} matching")

    await page.click(inv.node_id(7))
    seen = await page.until(lambda p: p["details"].get(inv.node_id(7), {}).get("models"))
    assert seen["details"][inv.node_id(7)]["models"] == [inv.model_query(7)]
