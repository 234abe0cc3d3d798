"""Collecting the replies of one broadcast, and turning them into one answer."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from shared.contracts import EncryptedHost, NodeQuery, NodeReply, SearchRequest, SearchResult


class Gather:
    """The replies to one search; ``done`` resolves when every node asked has answered.

    Some answers are known before asking (``known``: what the index says, see
    :mod:`services.search.index`): those nodes are not asked, or if asked by a
    broadcast their replies are redundant. Every expected node not asked counts
    as answered; a known answer that adds nothing (no match) is not even kept.
    """

    __slots__ = ("expected", "asked", "replies", "waiting", "done")

    def __init__(self, expected: dict[str, str], asked: Mapping[str, str],
                 known: Mapping[str, NodeReply] | None = None) -> None:
        self.expected = expected
        self.asked = asked
        self.replies: dict[str, NodeReply] = dict(known or {})
        self.waiting: set[str] = set(asked)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._check_done()

    @property
    def answered(self) -> int:
        return len(self.expected) - len(self.waiting)

    def add(self, reply: NodeReply) -> bool:
        """Keep a reply from a node asked and not yet heard, once; False for anyone else."""
        node_id = reply.node_id
        if node_id not in self.waiting:
            return False
        self.waiting.discard(node_id)
        self.replies[node_id] = reply
        self._check_done()
        return True

    def _check_done(self) -> None:
        if not self.waiting and not self.done.done():
            self.done.set_result(None)

    def queried(self) -> int:
        """Nodes whose answer was asked for rather than known."""
        return len(self.asked)

    def asked_replies(self) -> dict[str, NodeReply]:
        """The replies that came from the nodes themselves (not known beforehand)."""
        return {node_id: self.replies[node_id] for node_id in self.asked
                if node_id in self.replies}

    def settled(self, versions: Mapping[str, str | None]) -> bool:
        """Every expected node answered, each from the version ``versions`` says it announced.

        A reply without the version (or with another) may come from before a
        change, or from someone else: an answer that holds one is never cached.
        """
        return (not self.waiting
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
