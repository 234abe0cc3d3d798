"""A gateway (api, registry, search workers) and a fleet of simulated nodes, as subprocesses.

Each stack has its own namespace on the broker and its own SQLite file, so
runs never see each other; ``stop`` ends every process it started and
deletes the namespace's queues and exchanges.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import cpu, procs
from bench import inventory as inv
from bench.http import RawClient
from shared.bus import Bus
from shared.settings import BaseGridSettings, split_amqp_urls
from shared.topology import Names, delete_namespace

log = logging.getLogger("bench")
# The admin token of a secure gateway (--secure): the load generator's joins and the
# fleet's enrollments carry it.
SECURE_ADMIN_TOKEN = f"bench-admin-{secrets.token_hex(8)}"
NODES_PER_FLEET_PROCESS = 250


class StackError(Exception):
    """The gateway or the fleet did not come up."""


@dataclass
class StackConfig:
    amqp_url: str
    nodes: int
    hang: int = 0
    search_workers: int = 1
    fleet_processes: int = 0  # 0: picked from the fleet size
    fleet_connections: int | str = 2  # or "per-node" (wire)
    fleet_client: str = "wire"  # or "sdk": the node SDK's GridNode
    fleet_versions: bool = True
    join_concurrency: int = 8
    keep_logs: bool = False
    ready_timeout_s: float = 30.0
    queue_type: str | None = None  # GRID_QUEUE_TYPE for the gateway; None: the environment's
    # Secure mode: the broker's management API (GRID_BROKER_ADMIN_URL); None: open mode.
    secure_admin_url: str | None = None

    def fleet_split(self) -> list[tuple[int, int]]:
        """(first index, count) of each fleet process."""
        # At least two, so a fleet's replies are computed on both cores of a small
        # machine, as real nodes on their own machines would answer in parallel.
        count = self.fleet_processes or max(2, math.ceil(self.nodes / NODES_PER_FLEET_PROCESS))
        count = max(1, min(count, self.nodes))
        bounds = [self.nodes * p // count for p in range(count + 1)]
        return [(bounds[p], bounds[p + 1] - bounds[p]) for p in range(count)]

    def hung_indices(self) -> list[int]:
        """Hung nodes, spread over the fleet."""
        return [(2 * h + 1) * self.nodes // (2 * self.hang) for h in range(self.hang)]


async def fleet_ready(child: procs.Child, timeout_s: float) -> None:
    """Until a fleet process prints READY; StackError if it fails or takes too long."""
    assert child.process.stdout is not None
    try:
        async with asyncio.timeout(timeout_s):
            line = (await child.process.stdout.readline()).decode().strip()
    except TimeoutError:
        raise StackError(f"{child.name} not ready after {timeout_s:.0f} s:\n"
                         f"{child.log_tail()}") from None
    if not line.startswith("READY"):
        raise StackError(f"{child.name} failed: {line or 'exited'}\n{child.log_tail()}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def starting_at(env: dict[str, str], first: int) -> dict[str, str]:
    """``env`` with its broker address list rotated to start at address ``first``.

    With a cluster, each process starts on another node (api on the first,
    registry on the second, search workers and fleet processes after), as
    behind a load balancer; each still fails over along the whole list. One
    address: unchanged.
    """
    urls = split_amqp_urls(env["AMQP_URL"])
    first %= len(urls)
    return {**env, "AMQP_URL": ",".join(urls[first:] + urls[:first])}


def _spent(before: cpu.Snapshot, after: cpu.Snapshot) -> dict[str, float]:
    """CPU seconds of each group between two snapshots (a process started since: all of it)."""
    return {name: round(sum(value - before.get(name, {}).get(pid, 0.0)
                            for pid, value in pids.items()), 2)
            for name, pids in after.items()}


@dataclass
class LocalStack:
    config: StackConfig
    namespace: str = field(default_factory=lambda: f"bench-{secrets.token_hex(4)}")
    children: list[procs.Child] = field(default_factory=list)
    url: str = ""
    fleet_start_s: float = 0.0
    # CPU seconds each group spent while the fleet joined (the join storm), "machine" the
    # machine's busy time: where a join storm's time goes.
    join_cpu_s: dict[str, float] = field(default_factory=dict)
    kept_logs: Path | None = None
    _dir: Path | None = None
    _failed: bool = False

    def env(self, port: int) -> dict[str, str]:
        assert self._dir is not None
        queue_type = {"GRID_QUEUE_TYPE": self.config.queue_type} if self.config.queue_type else {}
        if self.config.secure_admin_url:
            queue_type.update(GRID_NODE_AUTH="true", GRID_ADMIN_TOKEN=SECURE_ADMIN_TOKEN,
                              GRID_BROKER_ADMIN_URL=self.config.secure_admin_url)
        return {**os.environ, "AMQP_URL": self.config.amqp_url,
                "GRID_NAMESPACE": self.namespace, "GRID_LOG_LEVEL": "WARNING",
                "GRID_DATABASE_URL": f"sqlite:///{self._dir / 'registry.sqlite3'}",
                "GRID_API_HOST": "127.0.0.1", "GRID_API_PORT": str(port),
                "GRID_GATEWAY_URL": f"http://127.0.0.1:{port}", **queue_type}

    def pid_groups(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {"api": [], "registry": [], "search": [], "fleet": []}
        for child in self.children:
            groups[child.role].append(child.pid)
        return groups

    async def start(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix=f"grid-{self.namespace}-"))
        try:
            port = free_port()
            env = self.env(port)
            self.url = f"http://127.0.0.1:{port}"
            await self._start_gateway(env)
            await self._start_fleet(env)
            await self._wait_nodes_seen()
        except BaseException:
            self._failed = True
            raise

    async def _start_gateway(self, env: dict[str, str]) -> None:
        assert self._dir is not None
        self.children.append(await procs.spawn("registry", "registry", "services.registry", [],
                                               starting_at(env, 1), self._dir))
        for n in range(self.config.search_workers):
            self.children.append(await procs.spawn(f"search-{n}", "search", "services.search",
                                                   [], starting_at(env, 2 + n), self._dir))
        self.children.append(await procs.spawn("api", "api", "services.api", [],
                                               starting_at(env, 0), self._dir))
        await self._poll("the gateway to be ready", self._ready, self.config.ready_timeout_s)

    async def _ready(self, client: RawClient) -> bool:
        return (await client.request("GET", "/readyz", None)).status == 200

    async def _start_fleet(self, env: dict[str, str]) -> None:
        assert self._dir is not None
        hung = self.config.hung_indices()
        before = cpu.snapshot(self._cpu_groups())
        fleet = []
        for process, (first, count) in enumerate(self.config.fleet_split()):
            mine = [str(i) for i in hung if first <= i < first + count]
            args = ["--first", str(first), "--count", str(count),
                    "--total", str(self.config.nodes), "--hang", ",".join(mine),
                    "--client", self.config.fleet_client,
                    "--join-concurrency", str(self.config.join_concurrency),
                    *self._fleet_options()]
            child = await procs.spawn(f"fleet-{first}", "fleet", "bench.fleet", args,
                                      starting_at(env, process), self._dir, stdout_pipe=True)
            self.children.append(child)
            fleet.append(child)
        started = time.perf_counter()
        timeout = self.config.ready_timeout_s + 0.1 * self.config.nodes
        await asyncio.gather(*(fleet_ready(child, timeout) for child in fleet))
        self.fleet_start_s = time.perf_counter() - started
        self.join_cpu_s = _spent(before, cpu.snapshot(self._cpu_groups()))

    def _cpu_groups(self) -> dict[str, list[int]]:
        return {**self.pid_groups(), "broker": cpu.brokers_of(self.config.amqp_url)}

    def _fleet_options(self) -> list[str]:
        config = self.config
        options = (["--per-node-connections"] if config.fleet_connections == "per-node"
                   else ["--connections", str(config.fleet_connections)])
        return options + ([] if config.fleet_versions else ["--no-versions"])

    def churn(self, on: bool) -> None:
        """Start or stop inventory churn in the first fleet process (one change per 100 ms)."""
        fleet = next(c for c in self.children if c.role == "fleet")
        fleet.process.send_signal(signal.SIGUSR1 if on else signal.SIGUSR2)

    async def _wait_nodes_seen(self) -> None:
        """Until a search is sent to every node of the fleet (hung ones included)."""
        wanted = str(self.config.nodes)

        async def seen(client: RawClient) -> bool:
            response = await client.request("GET", "/search-available-tags", None)
            return response.headers.get("x-grid-nodes-asked") == wanted

        timeout = self.config.ready_timeout_s + 0.05 * self.config.nodes
        await self._poll(f"the search worker to see {wanted} nodes", seen, timeout)

    async def _poll(self, what: str, check: Callable[[RawClient], Awaitable[bool]],
                    timeout_s: float) -> None:
        client = RawClient(self.url)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    if await check(client):
                        return
                except (OSError, ValueError):
                    pass  # not listening yet
                await asyncio.sleep(0.2)
        finally:
            await client.close()
        raise StackError(f"timed out after {timeout_s:.0f} s waiting for {what}")

    def _check_alive(self) -> None:
        for child in self.children:
            if not child.running:
                raise StackError(f"{child.name} exited with {child.process.returncode}:\n"
                                 f"{child.log_tail()}")

    async def stop(self) -> None:
        """Fleet first, then the api and the workers; then the namespace; then the files."""
        fleet = [c for c in self.children if c.role == "fleet"]
        await procs.stop(fleet)
        await procs.stop([c for c in self.children if c.role == "api"])
        await procs.stop([c for c in self.children if c.role in ("search", "registry")])
        try:
            await self._delete_namespace()
        except Exception as exc:  # noqa: BLE001 - report, keep cleaning up
            log.warning("could not delete namespace %s: %s", self.namespace, exc)
        self._remove_files()

    async def _delete_namespace(self) -> None:
        settings = BaseGridSettings(amqp_url=self.config.amqp_url, namespace=self.namespace)
        bus = Bus(settings, "bench-cleanup")
        await bus.connect()
        try:
            names = Names(self.namespace)
            await delete_namespace(bus.fast, names)
            for index in range(self.config.nodes):
                await bus.fast.queue_delete(names.node_queue(inv.node_id(index)))
        finally:
            await bus.close()

    def _remove_files(self) -> None:
        if self._dir is None:
            return
        if self._failed or self.config.keep_logs:
            self.kept_logs = self._dir
        else:
            shutil.rmtree(self._dir, ignore_errors=True)


@dataclass
class HttpFleet:
    """The fleet as HTTP-only nodes (``bench.httpfleet``), joined to another gateway."""

    gateway_url: str
    nodes: int
    child: procs.Child | None = None
    _dir: Path | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="grid-httpfleet-"))
        env = {**os.environ, "GRID_GATEWAY_URL": self.gateway_url, "GRID_LOG_LEVEL": "WARNING"}
        self.child = await procs.spawn("httpfleet", "compare-fleet", "bench.httpfleet",
                                       ["--total", str(self.nodes)], env, self._dir,
                                       stdout_pipe=True)
        try:
            await fleet_ready(self.child, timeout_s + 0.05 * self.nodes)
        except StackError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM: the fleet deletes its nodes from the gateway, then exits."""
        if self.child is not None:
            await procs.stop([self.child], grace_s=30.0 + 0.05 * self.nodes)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
