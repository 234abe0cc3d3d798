"""``python -m bench.httpfleet --total N``: the benchmark's fleet as HTTP-only nodes.

For a gateway that calls its nodes over HTTP, such as the 2019 PyGrid gateway
(``--compare-url URL --compare-fleet http``): one process serves the N nodes
of the benchmark's inventories (:mod:`bench.inventory`) with the original
node's routes (:mod:`services.node.httpnode`), node ``<id>`` at
``http://127.0.0.1:<port>/n/<id>``, joins them all to ``GRID_GATEWAY_URL``,
prints ``READY <count> <seconds>`` and serves until SIGTERM, when it deletes
them from the gateway again.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time

from bench import inventory as inv
from services.node.httpnode import HttpNodeApp, HttpNodeServer, join_all, leave_all
from shared.logs import setup_logging
from shared.settings import NodeSettings


async def run(total: int, settings: NodeSettings) -> None:
    started = time.perf_counter()
    app = HttpNodeApp({inv.node_id(i): inv.inventory(i, total) for i in range(total)})
    server = HttpNodeServer(app)
    await server.start()
    addresses = {node_id: server.address(node_id) for node_id in app.nodes}
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    try:
        await join_all(settings, addresses)
        print(f"READY {total} {time.perf_counter() - started:.2f}", flush=True)
        await stop.wait()
        await leave_all(settings, addresses)
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the benchmark's fleet as HTTP nodes.")
    parser.add_argument("--total", type=int, required=True, help="nodes to serve and join")
    args = parser.parse_args()
    settings = NodeSettings()
    setup_logging(settings.log_level)
    asyncio.run(run(args.total, settings))


if __name__ == "__main__":
    main()
