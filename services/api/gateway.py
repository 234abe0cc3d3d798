"""The API's only link to the workers: a bus, one RPC client, a consumer watch.

The API keeps no state of record. It knows whether each work queue has
consumers (checked every ``consumer_check_s``), so a request for a worker
that is not running fails at once with a clear 503 instead of waiting for
its deadline; and it keeps the search answers the search worker marks as
cacheable (:mod:`shared.answers`), answering a repeated search
without a round trip while the network is as the answer saw it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from pydantic import BaseModel

from services.api.live_nodes import LiveNodes
from shared.answers import AnswerCache
from shared.bus import Bus
from shared.contracts import SEARCH, NodeQuery, SearchResult
from shared.errors import BusUnavailable, GridError, NoConsumer
from shared.membership import Membership
from shared.membership_feed import MembershipFeed
from shared.metrics import LATENCY_BUCKETS
from shared.rpc import R, RpcClient
from shared.settings import ApiSettings
from shared.topology import Names, declare_work_queue, work_queue_arguments

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchRecord:
    """One search made through this API process, as the status page lists it."""

    route: str
    op: str
    at: float  # epoch seconds
    latency_s: float
    asked: int
    answered: int
    outcome: str  # "ok", or the error's type (e.g. "deadline_exceeded")


class Gateway:
    """Connection, RPC client and worker presence for one API process."""

    def __init__(self, settings: ApiSettings, metrics: CollectorRegistry) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.bus = Bus(settings, "grid-api")
        self._rpc_seconds = Histogram(
            "grid_api_rpc_seconds", "RPC round trip from the API to a worker.",
            ["op", "outcome"], buckets=LATENCY_BUCKETS, registry=metrics,
        )
        self.rpc = RpcClient(self.bus, self.names, "api", observe=self._observe_rpc)
        # The live nodes and search caching, from the liveness owner's deltas.
        self.membership = Membership()
        self.feed = MembershipFeed(self.membership, self.rpc, settings.membership_refresh_s)
        # The API's own copy of cacheable answers: a repeated search without a round trip.
        self.near = (AnswerCache(self.membership, settings.search_cache_entries)
                     if settings.search_cache else None)
        self.live = LiveNodes(self.membership, self.feed, settings.n_replica)
        self.consumers: dict[str, int] = {}
        # Counts seen on a lost connection say nothing about the next one: until
        # the watch has counted again, /readyz is not ready.
        self.bus.on_connection_lost(self.consumers.clear)
        self._tasks: list[asyncio.Task] = []
        self._search_nodes = Counter(
            "grid_api_search_nodes_total", "Nodes asked, answered and timed out across searches.",
            ["outcome"], registry=metrics,
        )
        self._near_lookups = Counter(
            "grid_api_search_cache_total",
            "Searches looked up in the API's own cache: hit (no round trip) or miss.",
            ["outcome"], registry=metrics)
        self.recent_searches: deque[SearchRecord] = deque(
            maxlen=settings.status_recent_searches)

    def _observe_rpc(self, op: str, outcome: str, seconds: float) -> None:
        self._rpc_seconds.labels(op, outcome).observe(seconds)

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
        await self.feed.start()
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
        await self.feed.stop()
        await self.bus.close()

    def readiness(self) -> str | None:
        """None when ready, else the reason it is not."""
        if not self.bus.ready:
            return self.bus.tls_failure or "the message broker is unreachable"
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

    @property
    def cadence_headers(self) -> dict[str, str]:
        """What a join answer tells a node: how often to heartbeat, and when it counts as gone."""
        return {"X-Grid-Heartbeat-S": f"{self.settings.heartbeat_s:g}",
                "X-Grid-Node-TTL-S": f"{self.settings.node_ttl_s:g}"}

    def check_registry(self) -> None:
        """Raise the 503 a registry call would, when the bus or the registry is not there."""
        self._check(self.names.registry_queue, "registry")

    async def search(self, query: NodeQuery, route: str | None) -> SearchResult:
        """Call the search worker (``query`` may be a SearchRequest, for per-node detail).

        A search made for a ``route`` joins ``recent_searches``; the status
        page's own (``route`` None) do not, so that they never crowd out the clients'.
        """
        started = time.perf_counter()
        try:
            result = await self._search(query)
        except GridError as exc:
            if route is not None:
                self._record(route, query, started, 0, 0, exc.type)
            raise
        if route is not None:
            self._record(route, query, started, result.asked, result.answered, "ok")
        return result

    def _record(self, route: str, query: NodeQuery, started: float, asked: int, answered: int,
                outcome: str) -> None:
        self.recent_searches.append(SearchRecord(
            route, query.op, time.time(), time.perf_counter() - started,
            asked, answered, outcome))

    async def _search(self, query: NodeQuery) -> SearchResult:
        self._check(self.names.search_queue, "search")
        near, key = self.near, query.key()
        view = self.membership.view()  # the one view this search is looked up and kept at
        if near is not None:
            lookup = near.lookup(key, view)
            self._near_lookups.labels("miss" if lookup.answer is None else "hit").inc()
            if lookup.answer is not None:
                return lookup.answer
        result = await self.rpc.call(
            self.names.search_queue, SEARCH, query, SearchResult, self.settings.rpc_timeout_s
        )
        if near is not None:
            near.keep(key, view, result)
        self._search_nodes.labels("asked").inc(result.asked)
        self._search_nodes.labels("answered").inc(result.answered)
        self._search_nodes.labels("timed_out").inc(result.asked - result.answered)
        return result
