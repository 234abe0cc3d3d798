"""Limits on what one node may send the search worker: a reply's size, its lists' lengths.

A node is not trusted to keep its answers small. A reply larger than
``max_reply_bytes`` is dropped unread, and counts as that node not answering.
A ``models`` or ``tags`` list longer than its cap is cut to the cap, and the
reply loses its inventory version, so that the truncated list is never kept
by the index or the answer cache (the node is asked again next time, and a
model beyond the cap is still found by asking it). Normal replies pass
unchanged.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter

from shared.contracts import NodeReply
from shared.frames import Delivery
from shared.settings import SearchSettings

log = logging.getLogger(__name__)
# (Kind, node) pairs logged already: one line each, not one per search; bounded.
LOGGED_NODES_MAX = 1024


class ReplyScreen:
    """Applies the search worker's per-node limits to each reply."""

    def __init__(self, settings: SearchSettings, capped: Counter) -> None:
        self.max_bytes = settings.max_reply_bytes
        self.caps = {"models": settings.max_node_models, "tags": settings.max_node_tags}
        self.capped = capped
        self._logged: set[str] = set()

    def oversized(self, message: Delivery) -> bool:
        """True when ``message`` is larger than a reply may be (logged once per sender)."""
        if len(message.body) <= self.max_bytes:
            return False
        if self._first_time(f"oversized\0{message.user_id}"):
            log.warning("node reply dropped: larger than GRID_MAX_REPLY_BYTES", extra={
                "bytes": len(message.body), "limit": self.max_bytes,
                "user_id": message.user_id})
        return True

    def cap(self, reply: NodeReply) -> NodeReply:
        """``reply`` with every over-long list cut to its cap (and no version then)."""
        update: dict = {}
        for field, limit in self.caps.items():
            names = getattr(reply, field)
            if names is not None and len(names) > limit:
                update[field] = names[:limit]
                self.capped.labels(field).inc()
                if self._first_time(f"{field}\0{reply.node_id}"):
                    log.warning("node list capped", extra={
                        "node_id": reply.node_id, "list": field, "length": len(names),
                        "limit": limit})
        if not update:
            return reply
        return reply.model_copy(update={**update, "version": None})

    def _first_time(self, key: str) -> bool:
        """Whether ``key`` (what, and whose) is new: one log line each, not one per search."""
        if key in self._logged or len(self._logged) >= LOGGED_NODES_MAX:
            return False
        self._logged.add(key)
        return True
