"""``./scripts/run`` (``python -m services.devstack``): the whole gateway on one machine.

Starts the registry (SQLite under ./data), the search worker, the API and
three demo nodes (examples/alice.json, bob.json, carol.json) as child
processes against the broker at ``AMQP_URL``, waits until every route
answers, prints the URL, and on Ctrl-C or SIGTERM stops them all in order.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aio_pika
import httpx

from shared.settings import ApiSettings, split_amqp_urls

ROOT = Path(__file__).resolve().parent.parent
DEMO_NODES = ("alice", "bob", "carol")
STOP_GRACE_S = 10.0
START_TIMEOUT_S = 30.0


USAGE_EPILOG = """\
settings (environment):
  AMQP_URL         the broker (default amqp://guest:guest@localhost:5672/)
  GRID_NAMESPACE   names the gateway's queues and its SQLite file (default grid)
  GRID_API_PORT    the API's port (default 8000)
  GRID_LOG_FORMAT  text or json (default: text on a terminal, JSON otherwise)
  every GRID_* setting of the README applies to each process.
"""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """No arguments: ``--help`` prints the usage, anything else is an error."""
    parser = argparse.ArgumentParser(
        prog="./scripts/run", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run the whole grid gateway on this machine: the registry, the search "
                    "worker, the API and three demo nodes (alice, bob, carol). Ctrl-C stops it.",
        epilog=USAGE_EPILOG)
    return parser.parse_args(argv)


def fail(message: str) -> None:
    print(f"\n{message}", file=sys.stderr)
    sys.exit(1)


async def check_broker(url: str) -> None:
    """Return once a broker answers at an address of ``url`` (a list for a cluster)."""
    error = ""
    for address in split_amqp_urls(url):
        try:
            connection = await aio_pika.connect(address, timeout=3)
        except Exception as exc:  # noqa: BLE001 - any failure gets the same advice
            error = type(exc).__name__
        else:
            await connection.close()
            return
    fail(f"No RabbitMQ answers at {url} ({error}).\n"
         "Start one, then run this again:\n"
         "  Debian/Ubuntu:  sudo rabbitmq-server -detached   (package rabbitmq-server)\n"
         "  Docker:         docker run -d -p 5672:5672 rabbitmq:3.13\n"
         "or point AMQP_URL at another broker.")


class Stack:
    """The child processes, started in dependency order and stopped in reverse."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url
        self.children: list[tuple[str, subprocess.Popen]] = []

    def spawn(self, name: str, *args: str) -> None:
        env = {**os.environ, "GRID_GATEWAY_URL": self.api_url}
        process = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, env=env)
        self.children.append((name, process))

    def start(self) -> None:
        self.spawn("registry", "services.registry")
        self.spawn("search", "services.search")
        self.spawn("api", "services.api")
        for node in DEMO_NODES:
            self.spawn(node, "services.node", "--id", node, "--address",
                       f"http://{node}:5000", "--inventory",
                       str(ROOT / "examples" / f"{node}.json"))

    def exited(self) -> str | None:
        for name, process in self.children:
            if process.poll() is not None:
                return f"{name} exited with code {process.returncode}"
        return None

    def stop(self) -> None:
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for name, process in reversed(self.children):
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"{name} did not stop in time: killed", file=sys.stderr)
                process.kill()
                process.wait()


async def wait_until_serving(stack: Stack) -> None:
    """Until /readyz is ready and a search reaches every demo node."""
    deadline = time.monotonic() + START_TIMEOUT_S
    async with httpx.AsyncClient(base_url=stack.api_url, timeout=3) as client:
        while time.monotonic() < deadline:
            if problem := stack.exited():
                raise RuntimeError(problem)
            try:
                response = await client.get("/search-available-models")
                if response.headers.get("x-grid-nodes-answered") == str(len(DEMO_NODES)):
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError(f"the gateway did not come up within {START_TIMEOUT_S:g} s")


async def main() -> int:
    settings = ApiSettings()
    await check_broker(settings.amqp_url)
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    stack = Stack(api_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack.start()
    try:
        await wait_until_serving(stack)
        print(f"\nGrid gateway running at {api_url}  (API docs: {api_url}/docs)\n"
              f"Demo nodes: {', '.join(DEMO_NODES)}.  Try: curl {api_url}/connected-nodes\n"
              "Press Ctrl-C to stop.\n", flush=True)
        while not stop.is_set():
            if problem := stack.exited():
                raise RuntimeError(problem)
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
        return 0
    except RuntimeError as exc:
        print(f"\nStopping: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    parse_args()
    sys.exit(asyncio.run(main()))
