"""Collecting the replies of one broadcast, and turning them into one answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from shared.contracts import EncryptedHost, NodeQuery, NodeReply, SearchRequest, SearchResult


class Gather:
    """The replies to one search; ``done`` resolves when every expected node answered.

    Some answers are known before asking (``known``: what the index says, see
    :mod:`services.search.index`): those nodes are not asked, or if asked by a
    broadcast their replies are redundant. A known answer that adds nothing to
    the result (None: no match) is counted, not kept.
    """

    __slots__ = ("expected", "replies", "derived", "answered", "done")

    def __init__(self, expected: dict[str, str],
                 known: Mapping[str, NodeReply | None] | None = None) -> None:
        self.expected = expected
        known = known or {}
        self.replies: dict[str, NodeReply] = {
            node_id: reply for node_id, reply in known.items() if reply is not None}
        self.derived: frozenset[str] = frozenset(known)
        self.answered = len(known)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._check_done()

    def add(self, reply: NodeReply) -> bool:
        """Keep a reply from an expected node, once; False for anyone else."""
        node_id = reply.node_id
        if node_id not in self.expected or node_id in self.replies or node_id in self.derived:
            return False
        self.replies[node_id] = reply
        self.answered += 1
        self._check_done()
        return True

    def _check_done(self) -> None:
        if self.answered == len(self.expected) and not self.done.done():
            self.done.set_result(None)

    def queried(self) -> int:
        """Nodes whose answer was asked for rather than known."""
        return len(self.expected) - len(self.derived)

    def asked_replies(self) -> dict[str, NodeReply]:
        """The replies that came from the nodes themselves (not known beforehand)."""
        return {node_id: reply for node_id, reply in self.replies.items()
                if node_id not in self.derived}

    def settled(self, versions: Mapping[str, str | None]) -> bool:
        """Every expected node answered, each from the version ``versions`` says it announced.

        A reply without the version (or with another) may come from before a
        change, or from someone else: an answer that holds one is never cached.
        """
        return (self.answered == len(self.expected)
                and all(reply.version == versions.get(node_id)
                        for node_id, reply in self.replies.items()))


def aggregate(query: NodeQuery, gather: Gather) -> SearchResult:
    """Merge the replies into the answer for ``query`` (sorted, so answers are stable)."""
    replies = gather.replies
    counts = {"asked": len(gather.expected), "answered": gather.answered,
              "queried": gather.queried()}
    if query.op in ("list_models", "list_tags"):
        field = "models" if query.op == "list_models" else "tags"
        names = {name for reply in replies.values() for name in (getattr(reply, field) or ())}
        by_node = {}
        if isinstance(query, SearchRequest) and query.nodes is not None:
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
