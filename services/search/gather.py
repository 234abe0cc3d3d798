"""Collecting the replies of one broadcast, and turning them into one answer."""

from __future__ import annotations

import asyncio

from shared.contracts import EncryptedHost, NodeQuery, NodeReply, SearchRequest, SearchResult


class Gather:
    """The replies to one search; ``done`` resolves when every expected node answered.

    Some answers may be known before asking (``derived``, see
    :mod:`services.search.index`): those nodes are not asked, or if asked by a
    broadcast their replies are redundant. A derived answer that adds nothing
    to the result (no match) is counted, not kept.
    """

    __slots__ = ("expected", "replies", "derived", "answered", "done")

    def __init__(self, expected: dict[str, str]) -> None:
        self.expected = expected
        self.replies: dict[str, NodeReply] = {}
        self.derived: set[str] = set()
        self.answered = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, reply: NodeReply) -> bool:
        """Keep a reply from an expected node, once; False for anyone else."""
        node_id = reply.node_id
        if node_id not in self.expected or node_id in self.replies or node_id in self.derived:
            return False
        self.replies[node_id] = reply
        self._answered()
        return True

    def derive(self, node_id: str, reply: NodeReply | None) -> None:
        """The answer of a node that need not be asked (None: one that adds nothing)."""
        self.derived.add(node_id)
        if reply is not None:
            self.replies[node_id] = reply
        self._answered()

    def _answered(self) -> None:
        self.answered += 1
        if self.answered == len(self.expected) and not self.done.done():
            self.done.set_result(None)

    def queried(self) -> int:
        """Nodes whose answer was asked for rather than known."""
        return len(self.expected) - len(self.derived)


def aggregate(query: NodeQuery, gather: Gather) -> SearchResult:
    """Merge the replies into the answer for ``query`` (sorted, so answers are stable)."""
    replies = gather.replies
    counts = {"asked": len(gather.expected), "answered": gather.answered,
              "queried": gather.queried()}
    if query.op in ("list_models", "list_tags"):
        field = "models" if query.op == "list_models" else "tags"
        names = {name for reply in replies.values() for name in (getattr(reply, field) or ())}
        by_node = {}
        if isinstance(query, SearchRequest) and query.per_node:
            by_node = {node_id: sorted(set(getattr(reply, field) or ()))
                       for node_id, reply in replies.items()}
        return SearchResult(**counts, names=sorted(names), by_node=by_node)
    if query.op in ("has_model", "search_tags"):
        nodes = [(node_id, gather.expected[node_id])
                 for node_id in sorted(replies) if replies[node_id].match]
        return SearchResult(**counts, nodes=nodes)
    hosts = encrypted_hosts(gather)
    if not hosts:
        return SearchResult(**counts)
    first = hosts[0]
    return SearchResult(**counts, host=(first.node_id, first.node_address),
                        encrypted=first.encrypted, hosts=hosts)


def encrypted_hosts(gather: Gather) -> list[EncryptedHost]:
    """Every node that answered an encrypted_model query as a host, sorted by id."""
    replies = gather.replies
    return [EncryptedHost(node_id=node_id, node_address=gather.expected[node_id],
                          encrypted=replies[node_id].encrypted)
            for node_id in sorted(replies) if replies[node_id].encrypted is not None]
