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
        """The nodes that listed every one of ``names`` (at some version)."""
        sets = sorted((self.holders.get(name, set()) for name in names), key=len)
        if not sets:
            return set()
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

    def listed(self, op: str, node_id: str, version: str | None) -> frozenset[str] | None:
        """What the node answered to ``op`` at ``version``; None if unknown."""
        return self._lists[op].listed(node_id, version)

    def unindexed(self, op: str, nodes: Mapping[str, str],
                  versions: Mapping[str, str | None]) -> int:
        """How many of ``nodes`` announce a version but have no ``op`` list at it."""
        return sum(1 for node_id in nodes if versions.get(node_id) is not None
                   and self.listed(op, node_id, versions[node_id]) is None)

    def split(self, query: SearchRequest, expected: Mapping[str, str],
              view: MembershipView) -> Split:
        """The answers that follow from what ``expected`` nodes listed, and whom to ask.

        ``expected``: the view's nodes, or those a search names (``SearchRequest.nodes``).
        """
        if expected is view.expected and query.op in _BY_NAME:
            return _BY_NAME[query.op](self, query, view)
        derive = _DERIVERS.get(query.op)
        if derive is None:
            return Split({}, dict(expected))
        split = Split({}, {})
        for node_id, address in expected.items():
            known, reply = derive(self, query, node_id, view.versions.get(node_id))
            if not known:
                split.ask[node_id] = address
            elif reply is not None:
                split.known[node_id] = reply
        return split

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

    def forget_except(self, nodes: Mapping[str, str]) -> None:
        """Drop what is kept for nodes no longer registered."""
        for lists in self._lists.values():
            for node_id in set(lists.at) - set(nodes):
                lists.drop(node_id)


def _has_model_by_name(index: InventoryIndex, query: SearchRequest,
                       view: MembershipView) -> Split:
    """The nodes listing the model at their version host it; every other indexed node does not."""
    stale = index.stale("list_models", view)
    holders = index._lists["list_models"].holders.get(query.model_id or "", set())
    versions = view.versions
    known = {node_id: NodeReply.model_construct(node_id=node_id, version=versions[node_id],
                                                match=True)
             for node_id in holders if node_id in view.expected and node_id not in stale}
    return Split(known, dict(stale))


def _search_tags_by_name(index: InventoryIndex, query: SearchRequest,
                         view: MembershipView) -> Split:
    """Ask the nodes listing every tag (only they can say) and those not indexed."""
    stale = index.stale("list_tags", view)
    ask = dict(stale)
    for node_id in index._lists["list_tags"].holding(query.tags or []):
        address = view.expected.get(node_id)
        if address is not None:
            ask[node_id] = address
    return Split({}, ask)


_BY_NAME = {"has_model": _has_model_by_name, "search_tags": _search_tags_by_name}

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
