"""The search worker: one broadcast per query, replies gathered until all or the deadline.

Identical queries in flight at the same time share one broadcast
(coalescing), so a burst of the same search costs one fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from pamqp.commands import Basic
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from services.search.budget import QueryBudget
from services.search.gather import Gather, aggregate
from shared import codec
from shared.answers import AnswerCache
from shared.bus import Bus, deadline_after
from shared.contracts import (
    NODE_QUERY,
    SEARCH,
    NodeReply,
    SearchRequest,
    SearchResult,
)
from shared.errors import Overloaded
from shared.frames import Delivery
from shared.logs import REQUEST_ID_HEADER, request_id
from shared.membership import Membership, MembershipFeed
from shared.metrics import LATENCY_BUCKETS, WorkerMetrics
from shared.rpc import (
    DEADLINE_HEADER,
    Operation,
    RpcClient,
    RpcServer,
    request_deadline,
    request_sent,
)
from shared.settings import SearchSettings
from shared.topology import Names, declare_broadcast

log = logging.getLogger(__name__)
# Time left for a search's answer to travel back to the client after the gather.
RETURN_ALLOWANCE_S = 0.02


class SearchMetrics(WorkerMetrics):
    def __init__(self) -> None:
        super().__init__("search")
        self.searches = Histogram(
            "grid_search_seconds", "Time from broadcast to answer, by query op.",
            ["op"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.nodes = Counter("grid_search_nodes_total",
                             "Nodes asked, answered, and timed out across searches.",
                             ["outcome"], registry=self.registry)
        self.replies_dropped = Counter("grid_search_replies_dropped_total",
                                       "Node replies ignored: late, malformed or unexpected.",
                                       ["reason"], registry=self.registry)
        self.coalesced = Counter("grid_search_coalesced_total",
                                 "Searches answered by an identical search already in flight.",
                                 registry=self.registry)
        self.overloaded = Counter("grid_search_overloaded_total",
                                  "Searches refused: no room in the node-query budget in time.",
                                  registry=self.registry)
        self.cache = Counter("grid_search_cache_total",
                             "Search look-ups in the answer cache: hit, miss, or uncacheable "
                             "(a live node reports no inventory version).",
                             ["outcome"], registry=self.registry)


class SearchWorker:
    """Consumes ``<ns>.search``; broadcasts to nodes on ``<ns>.broadcast``."""

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.bus = Bus(settings, "grid-search")
        self.membership = Membership(settings.node_ttl_s)
        self.registry = RpcClient(self.bus, self.names, "search")
        self.metrics = SearchMetrics()
        self.server = RpcServer(self.bus, self.names, self.names.search_queue,
                                {SEARCH: Operation(SearchRequest, self.search)},
                                prefetch=settings.prefetch)
        self.server.observe = self.metrics.observe_message
        self.reply_queue = self.names.reply_queue("search", uuid.uuid4().hex[:12])
        self._gathers: dict[str, Gather] = {}
        self._coalesced: dict[tuple, asyncio.Future[SearchResult]] = {}
        self.budget = QueryBudget(settings.search_max_node_queries)
        self.cache = AnswerCache(settings.search_cache_entries) if settings.search_cache else None
        self.feed = MembershipFeed(self.bus, self.names, self.membership, self.registry,
                                   settings.membership_refresh_s)

    async def start(self) -> None:
        await self.bus.connect()
        await declare_broadcast(self.bus.fast, self.names)
        await self.bus.fast.declare_queue(self.reply_queue, exclusive=True, auto_delete=True)
        await self.bus.consume_direct(self.reply_queue, self._on_node_reply)
        await self.registry.start()
        await self.feed.start()
        await self.server.start()
        self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)

    async def stop(self) -> None:
        """Stop taking searches, finish those in hand, then close the bus."""
        await self.server.stop(self.settings.shutdown_grace_s)
        await self.feed.stop()
        await self.bus.close()

    # --- search -----------------------------------------------------------------

    async def search(self, query: SearchRequest) -> SearchResult:
        """Answer a query from the cache, or share the broadcast of an identical one in flight."""
        key = query.key()
        if self.cache is not None:
            hit = self._cached(key)
            if hit is not None:
                return hit
        shared = self._coalesced.get(key)
        if shared is not None:
            self.metrics.coalesced.inc()
            return await asyncio.shield(shared)
        future: asyncio.Future[SearchResult] = asyncio.get_running_loop().create_future()
        self._coalesced[key] = future
        try:
            result = await self._scatter_gather(query)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: no waiter may be left
            raise
        finally:
            del self._coalesced[key]

    def _cached(self, key: tuple) -> SearchResult | None:
        membership = self.membership
        if not membership.all_versioned():  # also notices nodes that fell silent
            self.metrics.cache.labels("uncacheable").inc()
            return None
        hit = self.cache.get(key, membership.generation)
        self.metrics.cache.labels("miss" if hit is None else "hit").inc()
        return hit

    def _keep(self, query: SearchRequest, generation: int, state: str | None, gather: Gather,
              result: SearchResult) -> SearchResult:
        """Keep an answer every node gave at one generation, each from its announced version.

        A reply without the version (or with another) is never cached: it may
        come from before a change, or from someone else. A kept answer carries
        the state it holds for, so that an API process may cache it too.
        """
        versions = self.membership.versions
        if (result.answered == result.asked and state is not None
                and self.membership.all_versioned()
                and generation == self.membership.generation  # read after the refresh above
                and all(reply.version == versions.get(node_id)
                        for node_id, reply in gather.replies.items())):
            result = result.model_copy(update={"state": state})
            self.cache.put(query.key(), generation, result)
        return result

    async def _scatter_gather(self, query: SearchRequest) -> SearchResult:
        expected, state = self.membership.expected(), self.membership.state()
        generation = self.membership.generation
        gather = Gather(expected)
        if not expected:
            return aggregate(query, gather)
        try:
            async with self.budget.take(len(expected), self._may_wait_s()):
                result = await self._broadcast_and_gather(query, gather)
        except Overloaded:
            self.metrics.overloaded.inc()
            log.warning("search refused: node-query budget full",
                        extra={"op": query.op, "in_use": self.budget.in_use})
            raise
        if self.cache is not None:
            result = self._keep(query, generation, state, gather, result)
        return result

    def _may_wait_s(self) -> float:
        """How long a search may wait for budget and still finish before its caller gives up."""
        deadline = request_deadline.get()
        if deadline is None:
            return self.settings.search_timeout_s
        return deadline - time.time() - self.settings.search_timeout_s / 2

    def _gather_timeout_s(self) -> float:
        """The search deadline, less the time the request already spent queued.

        Searches answer within ``search_timeout_s`` as their client sees it, not
        as the worker does; a search that queued long still gets half of it.
        """
        timeout = self.settings.search_timeout_s
        sent = request_sent.get()
        if sent is None:
            return timeout
        queued = max(time.time() - sent, 0.0)
        return max(timeout - queued - RETURN_ALLOWANCE_S, timeout / 2)

    async def _broadcast_and_gather(self, query: SearchRequest, gather: Gather) -> SearchResult:
        started = time.perf_counter()
        correlation_id = uuid.uuid4().hex
        self._gathers[correlation_id] = gather
        timeout = self._gather_timeout_s()
        try:
            await self.bus.publish_raw(
                codec.dumps(query.node_query()), "",
                Basic.Properties(
                    content_type=codec.CONTENT_TYPE,
                    message_type=NODE_QUERY,
                    correlation_id=correlation_id,
                    reply_to=self.reply_queue,
                    expiration=str(int(timeout * 1000)),
                    headers={DEADLINE_HEADER: deadline_after(timeout),
                             REQUEST_ID_HEADER: request_id.get()},
                    delivery_mode=1,
                ),
                exchange=self.names.broadcast_exchange,
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(gather.done), timeout)
        finally:
            del self._gathers[correlation_id]
        result = aggregate(query, gather)
        self._observe(query, result, time.perf_counter() - started)
        return result

    def _observe(self, query: SearchRequest, result: SearchResult, seconds: float) -> None:
        self.metrics.searches.labels(query.op).observe(seconds)
        self.metrics.nodes.labels("asked").inc(result.asked)
        self.metrics.nodes.labels("answered").inc(result.answered)
        if result.answered < result.asked:
            self.metrics.nodes.labels("timed_out").inc(result.asked - result.answered)
            log.info("search deadline passed", extra={
                "op": query.op, "asked": result.asked, "answered": result.answered})

    def _on_node_reply(self, message: Delivery) -> None:
        gather = self._gathers.get(message.correlation_id or "")
        if gather is None:
            self.metrics.replies_dropped.labels("late").inc()
            return
        try:
            reply = NodeReply.model_validate_json(message.body)
        except (ValidationError, ValueError):
            self.metrics.replies_dropped.labels("malformed").inc()
            return
        if self.settings.verify_node_user and message.user_id != reply.node_id:
            self.metrics.replies_dropped.labels("impostor").inc()
            return
        if not gather.add(reply):
            self.metrics.replies_dropped.labels("unexpected").inc()
