"""One node asked directly, for the status page's detail on demand.

A search goes through the search worker, which answers for every node it
expects. The status page's detail of one node needs that node's lists only, so
the API publishes the query straight to the node's own queue (as the search
worker does when it asks few nodes) and waits for that one reply on a reply
queue of its own. Nothing else goes to the nodes: no broadcast.

The reply is held to the search worker's rules: only from the node itself (or
its bridge, in secure mode), at most ``MAX_REPLY_BYTES``. A node with no queue
of its own (one an HTTP bridge speaks for, which hears only broadcasts) is not
reached this way: the ask ends at its deadline with no answer.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from pamqp.commands import Basic
from pydantic import ValidationError

from shared import codec
from shared.auth import REPLY_EXCHANGE_HEADER, SpeakerCheck, stamp
from shared.bus import Bus, deadline_after
from shared.contracts import NODE_QUERY, NodeQuery, NodeReply
from shared.errors import BusUnavailable
from shared.frames import Delivery
from shared.logs import REQUEST_ID_HEADER, request_id
from shared.membership import Membership
from shared.rpc import DEADLINE_HEADER
from shared.topology import Names, declare_replies

log = logging.getLogger(__name__)
# The largest reply read (the search worker's default GRID_MAX_REPLY_BYTES).
MAX_REPLY_BYTES = 1024 * 1024


class NodeAsker:
    """Asks single nodes on their own queues; one reply queue per API process."""

    def __init__(self, bus: Bus, names: Names, membership: Membership) -> None:
        self.bus = bus
        self.names = names
        self.reply_queue = names.reply_queue("api-node", uuid.uuid4().hex[:12])
        self.speakers = SpeakerCheck(bus.settings, lambda: membership.bridged)
        self.user_id = stamp(bus.settings)
        # correlation id -> (the node asked, its future reply)
        self._pending: dict[str, tuple[str, asyncio.Future[NodeReply]]] = {}
        self._headers = ({REPLY_EXCHANGE_HEADER: names.replies_exchange}
                         if bus.settings.node_auth else {})
        self.started = False

    async def start(self) -> None:
        """Declare and consume the reply queue (bound to the replies exchange in secure mode)."""
        queue = await self.bus.fast.declare_queue(self.reply_queue, exclusive=True,
                                                  auto_delete=True)
        if self.bus.settings.node_auth:
            await queue.bind(await declare_replies(self.bus.fast, self.names),
                             routing_key=self.reply_queue)
        await self.bus.consume_direct(self.reply_queue, self._on_reply)
        self.started = True

    async def ask(self, node_id: str, query: NodeQuery, timeout_s: float) -> NodeReply | None:
        """The node's reply to ``query``; None when none came within ``timeout_s``."""
        if not self.started or not self.bus.ready:
            raise BusUnavailable("The message broker is unavailable; try again shortly.")
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[NodeReply] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = (node_id, future)
        try:
            await self.bus.publish_raw(codec.dumps(query), self.names.node_queue(node_id),
                                       self._properties(correlation_id, timeout_s))
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError:
            return None
        finally:
            del self._pending[correlation_id]

    def _properties(self, correlation_id: str, timeout_s: float) -> Basic.Properties:
        return Basic.Properties(
            content_type=codec.CONTENT_TYPE, message_type=NODE_QUERY,
            correlation_id=correlation_id, reply_to=self.reply_queue,
            expiration=str(int(timeout_s * 1000)),
            headers={DEADLINE_HEADER: deadline_after(timeout_s),
                     REQUEST_ID_HEADER: request_id.get() or correlation_id, **self._headers},
            user_id=self.user_id, delivery_mode=1)

    def _on_reply(self, message: Delivery) -> None:
        pending = self._pending.get(message.correlation_id or "")
        if pending is None or pending[1].done() or len(message.body) > MAX_REPLY_BYTES:
            return  # late, stray, or larger than any honest list
        node_id, future = pending
        try:
            reply = NodeReply.model_validate_json(message.body)
        except (ValidationError, ValueError):
            return
        if reply.node_id == node_id and self.speakers.may_speak_for(message.user_id, node_id):
            future.set_result(reply)
