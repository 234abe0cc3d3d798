"""``python -m bench.fleet``: many simulated grid nodes in one process.

Two kinds of fleet speak the same node protocol. ``--client wire`` (the
default) runs the nodes on :mod:`bench.wirefleet`, a minimal AMQP client whose
reply path costs a small fraction of aio-pika's, so that the benchmark
measures the gateway rather than its simulator. ``--client sdk`` runs real
:class:`~services.node.sdk.GridNode` objects, sharing a few ``Bus``
connections (the broker has too few file descriptors for one per node).
Either way every node joins over HTTP, consumes its own queue and heartbeats.
Settings come from the environment (``AMQP_URL``, ``GRID_NAMESPACE``,
``GRID_GATEWAY_URL``...). Prints ``READY <count> <seconds>`` on stdout once
every node has joined, then runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator

from aiormq.abc import DeliveredMessage

from bench import inventory as inv
from bench.wirefleet import WireFleet
from services.node.sdk import GridNode
from shared.bus import Bus
from shared.logs import setup_logging
from shared.settings import NodeSettings

log = logging.getLogger("bench.fleet")


class HungNode(GridNode):
    """A node that heartbeats and receives every broadcast, but never answers one."""

    async def _on_query(self, message: DeliveredMessage) -> None:
        return None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run simulated grid nodes.")
    parser.add_argument("--first", type=int, required=True, help="index of the first node")
    parser.add_argument("--count", type=int, required=True, help="nodes in this process")
    parser.add_argument("--total", type=int, required=True, help="nodes in the whole fleet")
    parser.add_argument("--hang", default="", help="comma-separated indices of hung nodes")
    parser.add_argument("--client", choices=("wire", "sdk"), default="wire",
                        help="the nodes' AMQP client: bench.wire, or the node SDK")
    parser.add_argument("--connections", type=int, default=2,
                        help="AMQP connections (sdk) or channels (wire)")
    parser.add_argument("--join-concurrency", type=int, default=8,
                        help="nodes starting (and joining) at once")
    return parser.parse_args(argv)


def build_nodes(args: argparse.Namespace, settings: NodeSettings,
                buses: list[Bus]) -> list[GridNode]:
    hung = hung_indices(args)
    nodes = []
    for index in range(args.first, args.first + args.count):
        kind = HungNode if index in hung else GridNode
        nodes.append(kind(settings, inv.node_id(index), inv.node_address(index),
                          inv.inventory(index, args.total), bus=buses[index % len(buses)]))
    return nodes


async def start_all(nodes: list[GridNode], concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def start(node: GridNode) -> None:
        async with gate:
            await node.start(join=True)

    await asyncio.gather(*(start(node) for node in nodes))


async def stop_all(nodes: list[GridNode], buses: list[Bus], timeout_s: float = 10.0) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            await asyncio.gather(*(node.stop() for node in nodes), return_exceptions=True)
    for bus in buses:
        await bus.close()


def hung_indices(args: argparse.Namespace) -> set[int]:
    return {int(i) for i in args.hang.split(",") if i}


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    run_fleet = run_wire if args.client == "wire" else run_sdk

    ready = asyncio.Event()

    async def serve() -> None:
        started = time.perf_counter()
        async with run_fleet(args, NodeSettings()) as count:
            print(f"READY {count} {time.perf_counter() - started:.2f}", flush=True)
            ready.set()
            await stop.wait()

    serving = asyncio.ensure_future(serve())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([serving, stopping], return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not ready.is_set():
        serving.cancel()  # stopped while starting: cut the start-up short
    try:
        await serving
    except asyncio.CancelledError:
        return 1
    except Exception as exc:  # noqa: BLE001 - tell the parent, then exit non-zero
        print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
        return 1
    return 0


@contextlib.asynccontextmanager
async def run_wire(args: argparse.Namespace, settings: NodeSettings) -> AsyncIterator[int]:
    fleet = WireFleet(settings, args.first, args.count, args.total, hung_indices(args),
                      channels=args.connections)
    try:
        await fleet.start(args.join_concurrency)
        yield len(fleet.nodes)
    finally:
        await fleet.stop()


@contextlib.asynccontextmanager
async def run_sdk(args: argparse.Namespace, settings: NodeSettings) -> AsyncIterator[int]:
    buses = [Bus(settings, f"bench-fleet-{args.first}-{n}") for n in range(args.connections)]
    nodes: list[GridNode] = []
    try:
        for bus in buses:
            await bus.connect()
        nodes = build_nodes(args, settings, buses)
        await start_all(nodes, args.join_concurrency)
        yield len(nodes)
    finally:
        await stop_all(nodes, buses)


def main() -> None:
    args = parse_args()
    setup_logging(NodeSettings().log_level)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        sys.exit(asyncio.run(run(args)))
    sys.exit(uvloop.run(run(args)))


if __name__ == "__main__":
    main()
