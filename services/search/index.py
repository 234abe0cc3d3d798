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

Cost: the index keeps, for each name, the nodes that listed it, and for each
view of the network the nodes whose lists are not at their current version
(worked out once per change). A ``has_model`` or ``search_tags`` search then
costs in proportion to the nodes that hold the model or the tags and the
nodes not indexed, not to every node: at 10,000 indexed nodes a tag search
matching 150 of them touches those 150. The list searches answer a name list
made of every node's and cost O(nodes) (their answers are cached).
"""

from __future__ import annotations

from collections.abc import Mapping

from shared.contracts import NodeReply, SearchRequest
from shared.membership import MembershipView

# The ops whose answer the index keeps, and the reply field each fills.
LISTS = {"list_models": "models", "list_tags": "tags"}


class Split:
    """A search's nodes: the answers known without asking (only those that add something:
    a node known to add nothing is in neither), and the nodes to ask."""

    __slots__ = ("known", "ask")

    def __init__(self, known: dict[str, NodeReply], ask: dict[str, str]) -> None:
        self.known = known
        self.ask = ask


class NameLists:
    """What the nodes answered to one list op: each node's names at a version, and each
    name's nodes (whatever version they listed it at)."""

    def __init__(self) -> None:
        self.at: dict[str, tuple[str, frozenset[str]]] = {}
        self.holders: dict[str, set[str]] = {}
        self.revision = 0  # moves on with every change, for what is worked out from it

    def keep(self, node_id: str, version: str, names: frozenset[str]) -> None:
        old = self.at.get(node_id)
        if old == (version, names):
            return
        self.drop(node_id)
        self.at[node_id] = (version, names)
        for name in names:
            self.holders.setdefault(name, set()).add(node_id)
        self.revision += 1

    def drop(self, node_id: str) -> None:
        old = self.at.pop(node_id, None)
        if old is None:
            return
        for name in old[1]:
            holders = self.holders.get(name)
            if holders is not None:
                holders.discard(node_id)
                if not holders:
                    del self.holders[name]
        self.revision += 1

    def listed(self, node_id: str, version: str | None) -> frozenset[str] | None:
        if version is None:
            return None
        known = self.at.get(node_id)
        return known[1] if known is not None and known[0] == version else None

    def holding(self, names: list[str]) -> set[str]:
        """The nodes that listed every one of ``names`` (at some version; no names: all)."""
        sets = sorted((self.holders.get(name, set()) for name in names), key=len)
        if not sets:
            return set(self.at)
        return set(sets[0]).intersection(*sets[1:])


class InventoryIndex:
    """Each node's models and tags, with the version they were answered at."""

    def __init__(self) -> None:
        self._lists = {op: NameLists() for op in LISTS}
        # (op, view generation, lists revision) -> the view's nodes whose op list is not at
        # their current version: the nodes a search cannot answer for.
        self._stale: dict[str, tuple[tuple[int, int], dict[str, str]]] = {}

    def learn(self, op: str, reply: NodeReply) -> None:
        """Keep a list a node answered, if it names the version it is from."""
        field = LISTS.get(op)
        if field is not None and reply.version is not None:
            self._lists[op].keep(reply.node_id, reply.version,
                                 frozenset(getattr(reply, field) or ()))

    def unindexed(self, op: str, view: MembershipView) -> int:
        """How many of the view's nodes announce a version but have no ``op`` list at it."""
        return sum(1 for node_id in self.stale(op, view) if view.versions[node_id] is not None)

    def split(self, query: SearchRequest, expected: Mapping[str, str],
              view: MembershipView) -> Split:
        """The answers that follow from what ``expected`` nodes listed, and whom to ask.

        ``expected``: the view's nodes, or those a search names (``SearchRequest.nodes``).
        """
        split = _SPLITS.get(query.op)
        if split is None:
            return Split({}, dict(expected))
        return split(self, query, expected, view)

    def stale(self, op: str, view: MembershipView) -> dict[str, str]:
        """The view's nodes whose ``op`` list is not known at their current version."""
        lists = self._lists[op]
        key = (view.generation, lists.revision)
        kept = self._stale.get(op)
        if kept is not None and kept[0] == key:
            return kept[1]
        versions = view.versions
        stale = {node_id: address for node_id, address in view.expected.items()
                 if lists.listed(node_id, versions[node_id]) is None}
        self._stale[op] = (key, stale)
        return stale

    def unknown(self, op: str, expected: Mapping[str, str],
                view: MembershipView) -> dict[str, str]:
        """The nodes of ``expected`` whose ``op`` list is not known at their version: to ask."""
        stale = self.stale(op, view)
        if expected is view.expected:
            return dict(stale)
        return {node_id: address for node_id, address in expected.items() if node_id in stale}

    def forget_except(self, nodes: Mapping[str, str]) -> None:
        """Drop what is kept for nodes no longer registered."""
        for lists in self._lists.values():
            for node_id in set(lists.at) - set(nodes):
                lists.drop(node_id)


def _lists(index: InventoryIndex, query: SearchRequest, expected: Mapping[str, str],
           view: MembershipView) -> Split:
    """Every node's list as it gave it at its version; the others are asked."""
    ask = index.unknown(query.op, expected, view)
    at, field, versions = index._lists[query.op].at, LISTS[query.op], view.versions
    known = {node_id: NodeReply.model_construct(node_id=node_id, version=versions[node_id],
                                                **{field: list(at[node_id][1])})
             for node_id in expected if node_id not in ask}
    return Split(known, ask)


def _has_model(index: InventoryIndex, query: SearchRequest, expected: Mapping[str, str],
               view: MembershipView) -> Split:
    """The nodes listing the model at their version host it; every other indexed node does not."""
    ask = index.unknown("list_models", expected, view)
    holders = index._lists["list_models"].holders.get(query.model_id or "", ())
    versions = view.versions
    known = {node_id: NodeReply.model_construct(node_id=node_id, version=versions[node_id],
                                                match=True)
             for node_id in holders if node_id in expected and node_id not in ask}
    return Split(known, ask)


def _search_tags(index: InventoryIndex, query: SearchRequest, expected: Mapping[str, str],
                 view: MembershipView) -> Split:
    """Ask the nodes listing every tag (only they can say) and those not indexed."""
    ask = index.unknown("list_tags", expected, view)
    for node_id in index._lists["list_tags"].holding(query.tags or []):
        address = expected.get(node_id)
        if address is not None:
            ask[node_id] = address
    return Split({}, ask)


_SPLITS = {"list_models": _lists, "list_tags": _lists, "has_model": _has_model,
           "search_tags": _search_tags}
