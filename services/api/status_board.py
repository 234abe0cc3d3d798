"""What the status page shows, at a cost that does not grow with viewers or refreshes.

- The node list and the counts come from this API process's membership view
  (:mod:`shared.membership`, followed from the liveness owner's deltas): a
  refresh asks nobody. Only while the view is not in sync (at start, or after
  a lost delta) is the registry's list read, at most once per
  ``status_cache_s``, shared by every viewer.
- A filter by model or tag is a ``has_model`` / ``search_tags`` search, as
  ``/search-model`` and ``/search`` make: answered from the API's and the
  search worker's caches and the worker's index while nothing changed.
- A node's models and tags are a ``list_models`` / ``list_tags`` search for
  that node alone (``SearchRequest.nodes``), made when a viewer opens its
  detail: the search worker's index answers it for a node it has indexed, else
  the worker asks that node on its own queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from functools import cached_property
from typing import TypeVar

from services.api.gateway import Gateway
from services.api.status_table import (
    TableNode,
    TableQuery,
    from_membership,
    from_registry,
)
from shared.contracts import LIST_NODES, ListRequest, NodeList, NodeQuery, SearchRequest
from shared.errors import GridError

# How long a viewer waits for a new registry list before it is answered the previous one.
FRESH_WAIT_S = 1.0
T = TypeVar("T")


async def attempt(call: Awaitable[T]) -> T | GridError:
    try:
        return await call
    except GridError as exc:
        return exc


@dataclass(frozen=True)
class Nodes:
    """Every registered node, sorted by id, and where the list came from."""

    nodes: list[TableNode]
    source: str  # "membership" (this process's view) or "registry" (its list)
    age_s: float  # how old the list is
    error: str | None = None

    @cached_property
    def counts(self) -> dict[str, int]:
        """How many nodes are registered, live, heard, versioned and bridged (counted once
        per list: the membership's is kept until it changes)."""
        nodes = self.nodes
        return {"registered": len(nodes), "live": sum(node.live for node in nodes),
                "heard": sum(bool(node.heard) for node in nodes),
                "versioned": sum(node.version is not None for node in nodes),
                "bridged": sum(node.bridged for node in nodes)}


class RegistryList:
    """The registry's node list, read at most once per ``cache_s``; viewers share a read.

    A viewer waits at most ``FRESH_WAIT_S`` for a new read when there is an
    older one, and gets the older one if it is not ready by then.
    """

    def __init__(self, gateway: Gateway, cache_s: float) -> None:
        self.gateway = gateway
        self.cache_s = cache_s
        self.reads = 0
        self._last: tuple[float, NodeList | GridError] | None = None
        self._reading: asyncio.Task | None = None

    async def get(self) -> Nodes:
        last = self._last
        if last is None or time.monotonic() - last[0] >= self.cache_s:
            if self._reading is None:
                self._reading = asyncio.create_task(self._read())
                self._reading.add_done_callback(lambda _: setattr(self, "_reading", None))
            reading = self._reading
            if last is None:  # shielded: a viewer who leaves does not cancel the others' read
                await asyncio.shield(reading)
            else:
                await asyncio.wait({reading}, timeout=FRESH_WAIT_S)
        if (self._last or last) is None:
            return Nodes([], "registry", 0.0, "The node list could not be read.")
        at, listed = self._last or last
        age = time.monotonic() - at
        if isinstance(listed, GridError):
            return Nodes([], "registry", age, listed.message)
        return Nodes(from_registry(listed.nodes, age), "registry", age)

    async def _read(self) -> None:
        self.reads += 1
        listed = await attempt(self.gateway.registry(
            LIST_NODES, ListRequest(include_offline=True), NodeList))
        self._last = (time.monotonic(), listed)

    async def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()


@dataclass(frozen=True)
class Matches:
    """The node ids a filter's searches found (None: no search), and how they went."""

    ids: set[str] | None
    asked: int = 0
    answered: int = 0
    error: str | None = None


@dataclass(frozen=True)
class Inventory:
    """One node's models and tags, sorted (None: no answer)."""

    models: list[str] | None
    tags: list[str] | None
    error: str | None


class StatusBoard:
    """The status page's data: nodes, counts, filters, one node's detail."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.registry_list = RegistryList(gateway, self.settings.status_cache_s)
        self._listed: tuple[int, Nodes] = (-1, Nodes([], "membership", 0.0))

    async def nodes(self) -> Nodes:
        """Every registered node: from the membership view when in sync, else the registry."""
        if not self.gateway.live.ready:
            return await self.registry_list.get()
        membership = self.gateway.membership
        if self._listed[0] != membership.generation:  # sorted once per change
            self._listed = (membership.generation,
                            Nodes(from_membership(membership.nodes), "membership", 0.0))
        return self._listed[1]

    async def matches(self, query: TableQuery) -> Matches:
        """The nodes hosting ``query.model`` and holding data with every ``query.tag``."""
        searches = []
        if query.model is not None:
            searches.append(NodeQuery(op="has_model", model_id=query.model))
        if query.tag is not None:
            searches.append(NodeQuery(op="search_tags", tags=query.tag))
        if not searches:
            return Matches(None)
        results = await asyncio.gather(*(attempt(self.gateway.search(search, route=None))
                                         for search in searches))
        errors = [result.message for result in results if isinstance(result, GridError)]
        if errors:
            return Matches(set(), error=errors[0])
        found = [{node_id for node_id, _ in result.nodes} for result in results]
        return Matches(set.intersection(*found), asked=max(r.asked for r in results),
                       answered=min(r.answered for r in results))

    async def inventory(self, node_id: str) -> Inventory:
        """The node's models and its tags: a search for that node alone, of each list."""
        answers = await asyncio.gather(
            *(attempt(self.gateway.search(SearchRequest(op=op, nodes=[node_id]), route=None))
              for op in ("list_models", "list_tags")))
        errors = [answer.message for answer in answers if isinstance(answer, GridError)]
        if errors:
            return Inventory(None, None, errors[0])
        models, tags = (answer.by_node.get(node_id) for answer in answers)
        return Inventory(models, tags, None)

    async def close(self) -> None:
        await self.registry_list.close()
