"""``grid-node --id ID --address URL --inventory FILE.json``: a demo grid node.

The same as ``python -m services.node``; it needs only the ``node`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from services.node.inventory import Inventory
from services.node.sdk import GridNode
from shared.logs import setup_logging
from shared.settings import NodeSettings

log = logging.getLogger("services.node")
# How often the inventory file is checked for changes (SIGHUP checks at once).
WATCH_S = 1.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="grid-node",
                                     description="Run a demo grid node serving an inventory file.")
    # An enrolled node's env file (python -m services.admin enroll) names both.
    node_id, address = os.environ.get("GRID_NODE_ID"), os.environ.get("GRID_NODE_ADDRESS")
    parser.add_argument("--id", default=node_id, required=node_id is None,
                        help="node id (letters, digits, ._:@-); default: GRID_NODE_ID")
    parser.add_argument("--address", default=address, required=address is None,
                        help="the node's public URL; default: GRID_NODE_ADDRESS")
    parser.add_argument("--inventory", required=True, help="inventory JSON file")
    parser.add_argument("--leave", action="store_true",
                        help="delete the node from the gateway on exit")
    return parser.parse_args()


async def serve(args: argparse.Namespace, settings: NodeSettings) -> None:
    node = GridNode(settings, args.id, args.address, Inventory.from_file(args.inventory))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while True:  # the gateway may still be starting: retry the join
        try:
            await node.start()
            break
        except Exception as exc:  # noqa: BLE001 - report and retry, whatever failed
            log.warning("cannot join yet, retrying", extra={"error": str(exc)})
            await node.stop()
            node = GridNode(settings, args.id, args.address, Inventory.from_file(args.inventory))
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
                return
            except TimeoutError:
                continue
    log.info("node running", extra={"node_id": args.id})
    watcher = asyncio.create_task(watch_inventory(node, Path(args.inventory)))
    await stop.wait()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    await node.stop(leave=args.leave)


async def watch_inventory(node: GridNode, path: Path) -> None:
    """Serve the file's new content whenever it changes (checked every second, or on SIGHUP)."""
    wake = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, wake.set)
    seen = _mtime(path)
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), WATCH_S)
        forced, current = wake.is_set(), _mtime(path)
        wake.clear()
        if current == seen and not forced:
            continue
        seen = current
        try:
            inventory = Inventory.from_file(path)
        except (OSError, ValueError) as exc:
            log.warning("kept the old inventory: the file is unreadable", extra={"error": str(exc)})
            continue
        if inventory.version() != node.version:
            await node.update_inventory(inventory)
            log.info("inventory changed", extra={"node_id": node.node_id,
                                                 "version": node.version})


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def main() -> None:
    """``grid-node``: the demo node, configured by its arguments and ``GRID_*``."""
    args = parse_args()
    settings = NodeSettings()
    setup_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(args, settings))


if __name__ == "__main__":
    main()
