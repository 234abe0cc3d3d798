"""``python -m bench.status_page``: the operator status page at N nodes, in a real browser.

Starts a gateway and a fleet of simulated nodes (:class:`bench.stack.LocalStack`,
as ``python -m bench`` does), then measures:

- the page load: from navigation until the page first shows the network
  (counts and the first page of the table), as the page's own clock says
  (``performance.now()``, recorded by ``status.js``), over ``--loads`` loads;
- a filter by id and one by model: from the viewer's Enter until the table
  shows the matching rows;
- ``/status.json``: its size, and its latency over ``--requests`` requests
  (unfiltered, and filtered by model);
- one node's detail (``/status/nodes/<id>.json``), asked of that node alone.

Prints one line per figure. Needs chromium and chromedriver (see bench/browser.py).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from selenium import webdriver

from bench import inventory as inv
from bench.browser import chromium
from bench.stack import LocalStack, StackConfig

# Poll the page's DOM this often while waiting for it (the figures come from the page's clock).
POLL_S = 0.01
WAIT_S = 60.0
MARKS = """
const marks = document.documentElement.dataset;
const rows = [...document.querySelectorAll('#nodes tbody tr[data-node-id]')];
const live = document.querySelector('#summary [data-count="live"] b');
return {first: marks.firstRenderMs, last: marks.lastRenderMs,
        live: live ? Number(live.textContent) : null,
        rows: rows.map((tr) => tr.dataset.nodeId)};
"""
FILTER = """
document.getElementById('filter-kind').value = arguments[0];
document.getElementById('filter-text').value = arguments[1];
const at = performance.now();
document.getElementById('node-filter').requestSubmit();
return at;
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@localhost:5672/")
    parser.add_argument("--loads", type=int, default=5, help="page loads measured")
    parser.add_argument("--requests", type=int, default=50,
                        help="/status.json requests timed, per kind")
    return parser.parse_args(argv)


def wait_page(driver: webdriver.Chrome, check) -> dict:
    """The page's marks once ``check(marks)`` holds; TimeoutError after ``WAIT_S``."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        marks = driver.execute_script(MARKS)
        if check(marks):
            return marks
        time.sleep(POLL_S)
    raise TimeoutError("the page did not show what was awaited")


def page_loads(driver: webdriver.Chrome, url: str, nodes: int, loads: int) -> list[float]:
    """Milliseconds from navigation to the page first showing the ``nodes`` live nodes."""
    figures = []
    for _ in range(loads):
        driver.get(url)
        marks = wait_page(driver, lambda m: m["live"] == nodes and m["rows"])
        figures.append(float(marks["first"]))
    return figures


def filtered(driver: webdriver.Chrome, kind: str, text: str, first_row: str) -> float:
    """Milliseconds from the viewer's Enter until the table's first row is ``first_row``."""
    asked = driver.execute_script(FILTER, kind, text)
    marks = wait_page(driver, lambda m: m["rows"][:1] == [first_row])
    return float(marks["last"]) - asked


async def timed_gets(client: httpx.AsyncClient, path: str, params: dict,
                     count: int) -> tuple[list[float], int]:
    """Latencies (ms) of ``count`` sequential GETs, and the size of the last body."""
    latencies, size = [], 0
    for _ in range(count):
        started = time.perf_counter()
        response = await client.get(path, params=params)
        latencies.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        size = len(response.content)
    return latencies, size


def line(what: str, figures: list[float], extra: str = "") -> None:
    print(f"{what:<38} median {statistics.median(figures):8.1f} ms   "
          f"max {max(figures):8.1f} ms   (n={len(figures)}){extra}")


async def measure_http(url: str, args: argparse.Namespace) -> None:
    model = inv.model_query(7)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for what, path, params in [
                ("/status.json", "/status.json", {}),
                (f"/status.json?model={model}", "/status.json", {"model": model}),
                ("/status.json?node=node-0432", "/status.json", {"node": "node-0432"}),
                ("/status/nodes/<id>.json", f"/status/nodes/{inv.node_id(4321)}.json", {})]:
            latencies, size = await timed_gets(client, path, params, args.requests)
            line(what, latencies, f"   {size} bytes")


def measure_browser(url: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="grid-status-bench-") as profile:
        driver = chromium(Path(profile))
        try:
            line("page load (navigation to first render)",
                 page_loads(driver, url + "/", args.nodes, args.loads))
            by_id = [filtered(driver, "node", "node-0432", inv.node_id(4320)),
                     filtered(driver, "node", "", inv.node_id(0))]
            line("filter by id (Enter to rows shown)", by_id)
            hosts = [inv.pairs_of_class(k, args.nodes)[0][0] for k in (7, 8)]
            by_model = [filtered(driver, "model", inv.model_query(7), hosts[0]),
                        filtered(driver, "model", inv.model_query(8), hosts[1])]
            line("filter by model (Enter to rows shown)", by_model)
        finally:
            driver.quit()


async def main(argv: list[str]) -> int:
    args = parse_args(argv)
    stack = LocalStack(StackConfig(amqp_url=args.amqp_url, nodes=args.nodes,
                                   ready_timeout_s=120))
    print(f"starting a gateway and {args.nodes} simulated nodes ...", file=sys.stderr)
    try:
        await stack.start()
        print(f"nodes: {args.nodes} (fleet joined in {stack.fleet_start_s:.1f} s)")
        await measure_http(stack.url, args)
        await asyncio.to_thread(measure_browser, stack.url, args)
    finally:
        await stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
