"""The search worker: a query goes to the nodes whose answer is open, replies gathered.

A repeated search is answered from the cache (:mod:`shared.answers`) while
nothing it saw has changed. Otherwise the index of what versioned nodes said
they hold (:mod:`services.search.index`) answers for every node whose answer
follows, and the query goes only to the others: as one broadcast, or straight
to each node's queue when they are few. Identical queries in flight at the
same time share one query (coalescing), so a burst of the same search costs
one fan-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict

from pamqp.commands import Basic
from pydantic import ValidationError

from services.search.budget import QueryBudget
from services.search.gather import Gather, aggregate
from services.search.index import LISTS, InventoryIndex, Split
from services.search.metrics import SearchMetrics
from services.search.screen import ReplyScreen
from shared import codec
from shared.answers import AnswerCache
from shared.auth import REPLY_EXCHANGE_HEADER, SpeakerCheck
from shared.bus import Bus, deadline_after
from shared.contracts import (
    NODE_QUERY,
    SEARCH,
    NodeReply,
    SearchRequest,
    SearchResult,
)
from shared.errors import GridError, Overloaded
from shared.frames import Delivery
from shared.logs import REQUEST_ID_HEADER
from shared.membership import Membership, MembershipView
from shared.membership_feed import MembershipFeed
from shared.rpc import (
    DEADLINE_HEADER,
    Operation,
    RequestContext,
    RpcClient,
    RpcServer,
)
from shared.settings import SearchSettings
from shared.topology import Names, declare_broadcast, declare_replies

log = logging.getLogger(__name__)
# Time left for a search's answer to travel back to the client after the gather.
RETURN_ALLOWANCE_S = 0.02
# RabbitMQ's sender-selected distribution: the queues a publish goes to, unseen by them.
BCC_HEADER = "BCC"
# The most bytes of queue names one publish's BCC header carries: a header frame cannot be
# split, and one larger than the connection's frame_max (128 KiB) closes the connection.
BCC_MAX_BYTES = 64 * 1024
# A query for at most this share of the live nodes goes to each one's queue, not to all.
DIRECT_SHARE = 0.25
# How long the indexer lets changes pile up before asking the changed nodes.
INDEX_DEBOUNCE_S = 0.02
# The pause before asking again the nodes a pass left unindexed, and its cap (it doubles
# while a pass indexes nobody new).
INDEX_RETRY_S = 1.0
INDEX_RETRY_MAX_S = 30.0
# A list answer that comes after its query's deadline still indexes its node (it names the
# version it holds for): the correlation ids of this many recent list queries are kept.
LATE_LISTS_KEPT = 64


def bcc_batches(queues: list[str]) -> list[list[str]]:
    """``queues`` in batches whose BCC header stays within ``BCC_MAX_BYTES``."""
    batches: list[list[str]] = [[]]
    size = 0
    for queue in queues:
        cost = len(queue.encode()) + 5  # a long string in a field array: type, length, bytes
        if batches[-1] and size + cost > BCC_MAX_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(queue)
        size += cost
    return batches


def _asked_of(query: SearchRequest, view: MembershipView) -> dict[str, str]:
    """The live nodes a search is for: every one, or those it names."""
    if query.nodes is None:
        return view.expected
    return {node_id: view.expected[node_id] for node_id in query.nodes
            if node_id in view.expected}


def index_retry_s(last_s: float | None, left: int, before: int, changed: bool) -> float | None:
    """The pause before the next index pass: None when nothing is left to index;
    ``INDEX_RETRY_S`` after a change or a pass that indexed someone; else twice the last."""
    if not left:
        return None
    if changed or last_s is None or left < before:
        return INDEX_RETRY_S
    return min(last_s * 2, INDEX_RETRY_MAX_S)


class SearchWorker:
    """Consumes ``<ns>.search``; broadcasts to nodes on ``<ns>.broadcast``."""

    def __init__(self, settings: SearchSettings) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.bus = Bus(settings, "grid-search")
        self.membership = Membership()
        self.registry = RpcClient(self.bus, self.names, "search")
        self.metrics = SearchMetrics()
        self.screen = ReplyScreen(settings, self.metrics.capped)
        self.server = RpcServer(self.bus, self.names, self.names.search_queue,
                                {SEARCH: Operation(SearchRequest, self.search)},
                                prefetch=settings.prefetch,
                                observe=self.metrics.observe_message)
        self.reply_queue = self.names.reply_queue("search", uuid.uuid4().hex[:12])
        self._gathers: dict[str, Gather] = {}
        self._coalesced: dict[tuple, asyncio.Future[SearchResult]] = {}
        self.budget = QueryBudget(settings.search_max_node_queries)
        self.cache = (AnswerCache(self.membership, settings.search_cache_entries)
                      if settings.search_cache else None)
        self.index = InventoryIndex() if settings.search_index else None
        self._index_wanted = asyncio.Event()
        self.membership.watch(self._index_wanted.set)
        self._indexer: asyncio.Task | None = None
        self._late_lists: OrderedDict[str, str] = OrderedDict()  # correlation id -> list op
        self.feed = MembershipFeed(self.membership, self.registry, settings.membership_refresh_s)
        self.speakers = SpeakerCheck(settings, lambda: self.membership.bridged)
        # Secure mode: the query names the exchange a node must reply through.
        self._reply_headers = ({REPLY_EXCHANGE_HEADER: self.names.replies_exchange}
                               if settings.node_auth else {})

    async def start(self) -> None:
        await self.bus.connect()
        await declare_broadcast(self.bus.fast, self.names)
        queue = await self.bus.fast.declare_queue(self.reply_queue, exclusive=True,
                                                  auto_delete=True)
        if self.settings.node_auth:  # nodes reply through the replies exchange (protocol 2)
            await queue.bind(await declare_replies(self.bus.fast, self.names),
                             routing_key=self.reply_queue)
        await self.bus.consume_direct(self.reply_queue, self._on_node_reply)
        await self.registry.start()
        await self.feed.start()
        if self.index is not None:
            self._indexer = asyncio.create_task(self._index_forever())
        await self.server.start()
        self.metrics.serve(self.settings.metrics_port, self.settings.metrics_host)

    async def stop(self) -> None:
        """Stop taking searches, finish those in hand, then close the bus."""
        await self.server.stop(self.settings.shutdown_grace_s)
        if self._indexer is not None:
            self._indexer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._indexer
        await self.feed.stop()
        await self.bus.close()

    # --- the index ----------------------------------------------------------------

    async def _index_forever(self) -> None:
        """Whenever the network changed, ask the nodes not yet indexed for their lists.

        Nodes still unindexed after a pass (no reply by the deadline, or no budget
        free) are asked again after ``INDEX_RETRY_S``; the pause doubles, up to
        ``INDEX_RETRY_MAX_S``, while a pass indexes nobody new. The membership of an
        idle network no longer changes: waiting for the next change could leave
        every search a broadcast to every node.
        """
        retry_s: float | None = None
        left = 0
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(retry_s):
                    await self._index_wanted.wait()
            await asyncio.sleep(INDEX_DEBOUNCE_S)
            changed = self._index_wanted.is_set()
            self._index_wanted.clear()
            left, before = await self._index_once(), left
            retry_s = index_retry_s(retry_s, left, before, changed)

    async def _index_once(self) -> int:
        """Ask the nodes not yet indexed for their lists; how many lists are still missing."""
        view = self.membership.view()
        self.index.forget_except(self.membership.addresses)
        left = 0
        for op in LISTS:
            if self.index.unindexed(op, view):
                with contextlib.suppress(GridError):  # asked again after a pause
                    await self._scatter_gather(SearchRequest(op=op), view, RequestContext())
                left += self.index.unindexed(op, view)
        return left

    # --- search -----------------------------------------------------------------

    async def search(self, query: SearchRequest, context: RequestContext) -> SearchResult:
        """Answer a query from the cache, or share the broadcast of an identical one in flight."""
        key = query.key()
        view = self.membership.view()  # the one view this search sees, taken once
        if self.cache is not None:
            lookup = self.cache.lookup(key, view)
            self.metrics.cache.labels(lookup.outcome).inc()
            if lookup.answer is not None:
                return lookup.answer
        shared = self._coalesced.get(key)
        if shared is not None:
            self.metrics.coalesced.inc()
            return await asyncio.shield(shared)
        future: asyncio.Future[SearchResult] = asyncio.get_running_loop().create_future()
        self._coalesced[key] = future
        try:
            result = await self._scatter_gather(query, view, context)
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: no waiter may be left
            raise
        finally:
            del self._coalesced[key]

    async def _scatter_gather(self, query: SearchRequest, view: MembershipView,
                              context: RequestContext, use_index: bool = True) -> SearchResult:
        """Ask the nodes of ``view`` whose answer is open (every one without ``use_index``)."""
        expected = _asked_of(query, view)
        split = self._split(query, expected, view, use_index)
        gather = Gather(expected, split.ask, split.known)
        if split.ask:
            await self._ask_within_budget(query, gather, split.ask, view, context)
        result = aggregate(query, gather)
        if split.ask:
            self._observe(query, result)
        self._learn(query, gather)
        return self._keep(query, view, gather, result)

    def _split(self, query: SearchRequest, expected: dict[str, str], view: MembershipView,
               use_index: bool) -> Split:
        """The answers the index already knows, and the nodes to ask."""
        if use_index and self.index is not None:
            return self.index.split(query, expected, view)
        return Split({}, expected)

    async def _ask_within_budget(self, query: SearchRequest, gather: Gather, ask: dict[str, str],
                                 view: MembershipView, context: RequestContext) -> None:
        """Ask, once the node-query budget has room for ``ask`` (else Overloaded: a 503)."""
        try:
            async with self.budget.take(len(ask), self._may_wait_s(context)):
                await self._ask_and_gather(query, gather, ask, view, context)
        except Overloaded:
            self.metrics.overloaded.inc()
            log.warning("search refused: node-query budget full",
                        extra={"op": query.op, "in_use": self.budget.in_use})
            raise

    def _learn(self, query: SearchRequest, gather: Gather) -> None:
        """The index keeps the lists nodes answered (what it gave, it already knows)."""
        if self.index is not None and query.op in LISTS:
            for reply in gather.asked_replies().values():
                self.index.learn(query.op, reply)

    def _keep(self, query: SearchRequest, view: MembershipView, gather: Gather,
              result: SearchResult) -> SearchResult:
        """Mark and keep an answer every node gave from its announced version, at ``view``.

        The mark (the view's digest) lets an API process keep the answer too
        (:mod:`shared.answers`).
        """
        if self.cache is None or not gather.settled(view.versions):
            return result
        result = result.model_copy(update={"state": view.digest})
        self.cache.keep(query.key(), view, result)
        return result

    def _may_wait_s(self, context: RequestContext) -> float:
        """How long a search may wait for budget and still finish before its caller gives up."""
        if context.deadline is None:
            return self.settings.search_timeout_s
        return context.deadline - time.time() - self.settings.search_timeout_s / 2

    def _gather_timeout_s(self, context: RequestContext) -> float:
        """The search deadline, less the time the request already spent queued.

        Searches answer within ``search_timeout_s`` as their client sees it, not
        as the worker does; a search that queued long still gets half of it.
        """
        timeout = self.settings.search_timeout_s
        if context.sent is None:
            return timeout
        queued = max(time.time() - context.sent, 0.0)
        return max(timeout - queued - RETURN_ALLOWANCE_S, timeout / 2)

    async def _ask_and_gather(self, query: SearchRequest, gather: Gather, ask: dict[str, str],
                              view: MembershipView, context: RequestContext) -> None:
        """Send the query to ``ask``; wait until every expected node answered, or the deadline."""
        started = time.perf_counter()
        correlation_id = uuid.uuid4().hex
        self._gathers[correlation_id] = gather
        timeout = self._gather_timeout_s(context)
        body, properties = codec.dumps(query.node_query()), Basic.Properties(
            content_type=codec.CONTENT_TYPE, message_type=NODE_QUERY,
            correlation_id=correlation_id, reply_to=self.reply_queue,
            expiration=str(int(timeout * 1000)),
            headers={DEADLINE_HEADER: deadline_after(timeout),
                     REQUEST_ID_HEADER: context.request_id, **self._reply_headers},
            user_id=self.registry.user_id,
            delivery_mode=1)
        try:
            if self._direct(gather, ask, view):
                # One publish for many queues: the broker routes it to every queue BCC names
                # (sender-selected distribution) and takes the header off before delivery;
                # the routing key is "" (no queue), so that no node learns whom else was asked.
                headers = properties.headers
                for queues in bcc_batches([self.names.node_queue(node_id) for node_id in ask]):
                    properties.headers = {**headers, BCC_HEADER: queues}
                    await self.bus.publish_raw(body, "", properties)
            else:
                await self.bus.publish_raw(body, "", properties,
                                           exchange=self.names.broadcast_exchange)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(gather.done), timeout)
        finally:
            del self._gathers[correlation_id]
            if query.op in LISTS:
                self._late_lists[correlation_id] = query.op
                if len(self._late_lists) > LATE_LISTS_KEPT:
                    self._late_lists.popitem(last=False)
        self.metrics.searches.labels(query.op).observe(time.perf_counter() - started)

    def _direct(self, gather: Gather, ask: dict[str, str], view: MembershipView) -> bool:
        """Few nodes (or the nodes a search names), each with a queue of its own: to each queue.

        A node a bridge speaks for has no queue of its own and hears only broadcasts.
        """
        few = (len(ask) <= DIRECT_SHARE * len(view.expected)
               or len(gather.expected) < len(view.expected))
        return few and view.own.issuperset(ask)

    def _observe(self, query: SearchRequest, result: SearchResult) -> None:
        self.metrics.nodes.labels("asked").inc(result.asked)
        self.metrics.nodes.labels("answered").inc(result.answered)
        if result.answered < result.asked:
            self.metrics.nodes.labels("timed_out").inc(result.asked - result.answered)
            log.info("search deadline passed", extra={
                "op": query.op, "asked": result.asked, "answered": result.answered})

    def _learn_late(self, message: Delivery) -> None:
        """Index a list answer that came after its query's deadline (see ``LATE_LISTS_KEPT``)."""
        op = self._late_lists.get(message.correlation_id or "")
        if op is None or self.index is None:
            return
        try:
            reply = NodeReply.model_validate_json(message.body)
        except (ValidationError, ValueError):
            return
        if self.speakers.may_speak_for(message.user_id, reply.node_id):
            self.index.learn(op, self.screen.cap(reply))  # capped: kept as a timely one is

    def _on_node_reply(self, message: Delivery) -> None:
        if self.screen.oversized(message):
            self.metrics.replies_dropped.labels("oversized").inc()
            return
        gather = self._gathers.get(message.correlation_id or "")
        if gather is None and not self.speakers.on:
            self.metrics.replies_dropped.labels("late").inc()
            self._learn_late(message)
            return
        try:
            reply = NodeReply.model_validate_json(message.body)
        except (ValidationError, ValueError):
            self.metrics.replies_dropped.labels("malformed").inc()
            return
        # Checked before lateness: an impostor is one however late it comes.
        if not self.speakers.may_speak_for(message.user_id, reply.node_id):
            self.metrics.replies_dropped.labels("impostor").inc()
            return
        if gather is None:
            self.metrics.replies_dropped.labels("late").inc()
            return
        node_id = reply.node_id
        # A known node's reply to a broadcast is redundant, not dropped: it was not asked.
        if (not gather.add(self.screen.cap(reply))
                and (node_id in gather.asked or node_id not in gather.expected)):
            waited = node_id in gather.expected or node_id not in self.membership.nodes
            self.metrics.replies_dropped.labels("unexpected" if waited else "not_waited").inc()
