"""What each versioned node said it holds, so that a search asks only the nodes that matter.

A node that announces an inventory version promises that, at that version,
its answers do not change, that it hosts a model exactly when the model is in
its ``list_models`` answer, and that every tag of a ``search_tags`` match is in
its ``list_tags`` answer (docs/protocol.md). So once a node has answered
``list_models`` and ``list_tags`` at its current version, a search need not
ask it whether it hosts a model, nor whether it holds data carrying a tag it
never listed: those answers follow. Such a search asks only the nodes whose
answer is still open: the unversioned, the not yet indexed, and for a tag
search those whose tags include every tag of the query.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from shared.contracts import NodeReply, SearchRequest

# The ops whose answer the index keeps, and the reply field each fills.
LISTS = {"list_models": "models", "list_tags": "tags"}


class Split(NamedTuple):
    """A search's nodes: those whose answer is known (None: it adds nothing), and those to ask."""

    known: dict[str, NodeReply | None]
    ask: dict[str, str]


class InventoryIndex:
    """Each node's models and tags, with the version they were answered at."""

    def __init__(self) -> None:
        self._lists: dict[str, dict[str, tuple[str, frozenset[str]]]] = {
            op: {} for op in LISTS}

    def learn(self, op: str, reply: NodeReply) -> None:
        """Keep a list a node answered, if it names the version it is from."""
        field = LISTS.get(op)
        if field is not None and reply.version is not None:
            self._lists[op][reply.node_id] = (reply.version, frozenset(getattr(reply, field)
                                                                          or ()))

    def listed(self, op: str, node_id: str, version: str | None) -> frozenset[str] | None:
        """What the node answered to ``op`` at ``version``; None if unknown."""
        if version is None:
            return None
        known = self._lists[op].get(node_id)
        return known[1] if known is not None and known[0] == version else None

    def unindexed(self, op: str, nodes: Mapping[str, str],
                  versions: Mapping[str, str | None]) -> int:
        """How many of ``nodes`` announce a version but have no ``op`` list at it."""
        return sum(1 for node_id in nodes if versions.get(node_id) is not None
                   and self.listed(op, node_id, versions[node_id]) is None)

    def split(self, query: SearchRequest, expected: Mapping[str, str],
              versions: Mapping[str, str | None]) -> Split:
        """The answers that follow from what ``expected`` nodes listed, and whom to ask."""
        derive = _DERIVERS.get(query.op)
        if derive is None:
            return Split({}, dict(expected))
        split = Split({}, {})
        for node_id, address in expected.items():
            known, reply = derive(self, query, node_id, versions.get(node_id))
            if known:
                split.known[node_id] = reply
            else:
                split.ask[node_id] = address
        return split

    def forget_except(self, nodes: Mapping[str, str]) -> None:
        """Drop what is kept for nodes no longer registered."""
        for lists in self._lists.values():
            for node_id in set(lists) - set(nodes):
                del lists[node_id]


# (known, reply): the answer follows (reply None when it adds nothing), or it does not.
Derived = tuple[bool, NodeReply | None]
UNKNOWN: Derived = (False, None)
NOTHING: Derived = (True, None)


def _list(index: InventoryIndex, query: SearchRequest, node_id: str,
          version: str | None) -> Derived:
    names = index.listed(query.op, node_id, version)
    if names is None:
        return UNKNOWN
    return True, NodeReply.model_construct(node_id=node_id, version=version,
                                           **{LISTS[query.op]: list(names)})


def _has_model(index: InventoryIndex, query: SearchRequest, node_id: str,
               version: str | None) -> Derived:
    models = index.listed("list_models", node_id, version)
    if models is None:
        return UNKNOWN
    if query.model_id not in models:
        return NOTHING
    return True, NodeReply.model_construct(node_id=node_id, version=version, match=True)


def _search_tags(index: InventoryIndex, query: SearchRequest, node_id: str,
                 version: str | None) -> Derived:
    tags = index.listed("list_tags", node_id, version)
    if tags is None or tags.issuperset(query.tags or ()):
        return UNKNOWN  # unknown, or a candidate: only the node can say
    return NOTHING


_DERIVERS = {"list_models": _list, "list_tags": _list, "has_model": _has_model,
             "search_tags": _search_tags}
