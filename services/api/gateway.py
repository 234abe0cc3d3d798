"""The API's only link to the workers: a bus, one RPC client, a consumer watch.

The API keeps no state of its own. It knows whether each work queue has
consumers (checked every ``consumer_check_s``), so a request for a worker
that is not running fails at once with a clear 503 instead of waiting for
its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel

from shared.bus import Bus
from shared.contracts import SEARCH, NodeQuery, SearchResult
from shared.errors import BusUnavailable, NoConsumer
from shared.metrics import LATENCY_BUCKETS
from shared.rpc import R, RpcClient
from shared.settings import ApiSettings
from shared.topology import Names, declare_work_queue, work_queue_arguments

log = logging.getLogger(__name__)


class Gateway:
    """Connection, RPC client and worker presence for one API process."""

    def __init__(self, settings: ApiSettings, metrics: CollectorRegistry) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.bus = Bus(settings, "grid-api")
        self.rpc = RpcClient(self.bus, self.names, "api")
        self.consumers: dict[str, int] = {}
        # Counts seen on a lost connection say nothing about the next one: until
        # the watch has counted again, /readyz is not ready.
        self.bus.on_connection_lost(self.consumers.clear)
        self._tasks: list[asyncio.Task] = []
        self._rpc_seconds = Histogram(
            "grid_api_rpc_seconds", "RPC round trip from the API to a worker.",
            ["op", "outcome"], buckets=LATENCY_BUCKETS, registry=metrics,
        )
        self.rpc.observe = lambda op, outcome, s: self._rpc_seconds.labels(op, outcome).observe(s)
        self._search_nodes = Counter(
            "grid_api_search_nodes_total", "Nodes asked, answered and timed out across searches.",
            ["outcome"], registry=metrics,
        )

    async def start(self) -> None:
        """Connect in the background: the API serves (503s) while the broker is down."""
        self._tasks.append(asyncio.create_task(self._connect()))

    async def _connect(self) -> None:
        await self.bus.connect_with_retry()
        if self.bus.connection is None:
            return
        channel = await self.bus.channel()
        for queue in self.names.work_queues():
            await declare_work_queue(channel, self.names, queue, self.settings.queue_type)
        await self.rpc.start()
        log.info("connected to the message broker")
        await self._watch_consumers(channel)

    async def _watch_consumers(self, channel) -> None:
        arguments = work_queue_arguments(self.names, self.settings.queue_type)
        while True:
            for queue in self.names.work_queues():
                with contextlib.suppress(Exception):  # a reconnect in progress: try next time
                    # asyncio.timeout, not the timeout argument: Python 3.11's
                    # wait_for can swallow a cancellation that races the reply.
                    async with asyncio.timeout(1):
                        declared = await channel.declare_queue(
                            queue, durable=True, arguments=arguments, robust=False
                        )
                    self.consumers[queue] = declared.declaration_result.consumer_count
            await asyncio.sleep(self.settings.consumer_check_s)

    async def stop(self) -> None:
        pending = set(self._tasks)
        for _attempt in range(3):  # again if a cancellation was swallowed midway
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=1)
        await self.bus.close()

    def readiness(self) -> str | None:
        """None when ready, else the reason it is not."""
        if not self.bus.ready:
            return "the message broker is unreachable"
        for queue in self.names.work_queues():
            if self.consumers.get(queue, 0) == 0:
                return f"no worker consumes {queue}"
        return None

    def _check(self, queue: str, worker: str) -> None:
        if not self.bus.ready:
            raise BusUnavailable("The message broker is unavailable; try again shortly.")
        if self.consumers.get(queue) == 0:
            raise NoConsumer(f"No {worker} worker is running; try again shortly.")

    async def registry(self, op: str, request: BaseModel, reply: type[R],
                       deadline_s: float | None = None) -> R:
        """Call the registry worker."""
        self._check(self.names.registry_queue, "registry")
        return await self.rpc.call(self.names.registry_queue, op, request, reply,
                                   deadline_s or self.settings.rpc_timeout_s)

    async def search(self, query: NodeQuery) -> SearchResult:
        """Call the search worker (``query`` may be a SearchRequest, for per-node detail)."""
        self._check(self.names.search_queue, "search")
        result = await self.rpc.call(
            self.names.search_queue, SEARCH, query, SearchResult, self.settings.rpc_timeout_s
        )
        self._search_nodes.labels("asked").inc(result.asked)
        self._search_nodes.labels("answered").inc(result.answered)
        self._search_nodes.labels("timed_out").inc(result.asked - result.answered)
        return result
