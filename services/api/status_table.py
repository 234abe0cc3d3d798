"""The status page's node table: its query parameters, its rows, one page of them.

The rows come from the API process's membership view (or, while the view is
not in sync, from the registry's list); a filter by id is a substring match on
them, a filter by model or tag is the set of node ids a search answered, and
the page is a slice of the sorted result. Nothing here asks anyone anything.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.api.errors import ApiError
from shared.contracts import ModelId, NodeRecord, NodeState, Tag

# The most rows one page may hold: /status.json stays small whatever the network's size.
MAX_PER_PAGE = 200
DEFAULT_PER_PAGE = 50
# The most tags one filter may name.
MAX_FILTER_TAGS = 16


class TableQuery(BaseModel):
    """``/status.json``'s query parameters: which nodes, and which page of them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    page: int = Field(default=1, ge=1, le=1_000_000)
    per_page: int = Field(default=DEFAULT_PER_PAGE, ge=1, le=MAX_PER_PAGE)
    # Part of the node id, any case.
    node: str | None = Field(default=None, min_length=1, max_length=128)
    # Nodes hosting this model (a has_model search).
    model: ModelId | None = None
    # Nodes holding data that carries every one of these tags (a search_tags search).
    tag: list[Tag] | None = Field(default=None, min_length=1, max_length=MAX_FILTER_TAGS)
    state: Literal["all", "live", "offline"] = "all"

    @classmethod
    def parse(cls, params: Iterable[tuple[str, str]]) -> TableQuery:
        """From the request's query string; a 400 naming the parameter when it is wrong."""
        given: dict[str, str | list[str]] = {}
        for name, value in params:
            if name == "tag":
                given.setdefault("tag", []).append(value)  # type: ignore[union-attr]
            elif name in given:
                raise ApiError(400, f"Invalid query parameter '{name}': given twice.")
            else:
                given[name] = value
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            raise ApiError(400, _explain(exc)) from None

    @property
    def searched(self) -> bool:
        """True when the filter needs a search (by model or tag)."""
        return self.model is not None or self.tag is not None


def _explain(exc: ValidationError) -> str:
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "query"
    if error["type"] == "extra_forbidden":
        known = ", ".join(TableQuery.model_fields)
        return f"Unknown query parameter '{name}' (known: {known})."
    return f"Invalid query parameter '{name}': {error['msg']}."


@dataclass(frozen=True, slots=True)
class TableNode:
    """One node as the table lists it (a row of ``/status.json``)."""

    node_id: str
    node_address: str
    live: bool
    # Heard on the bus within the TTL: searches wait for it (None: not known).
    heard: bool | None
    # The inventory version the node announces (None: none, or not known).
    version: str | None
    bridged: bool
    # Seconds since the node was last heard: known only when the list came from the
    # registry (the membership view keeps states, not times); None: not known, or never.
    last_seen_s: float | None


def from_membership(states: Mapping[str, NodeState]) -> list[TableNode]:
    """The membership view's nodes, sorted by id (the view has no last-heard times)."""
    return [TableNode(state.node_id, state.node_address, state.live, state.heard,
                      state.version, state.bridged, None)
            for _, state in sorted(states.items())]


def from_registry(records: Iterable[NodeRecord], age_s: float) -> list[TableNode]:
    """The registry's list, sorted by id; ``age_s``: how old the list is."""
    return [TableNode(record.node_id, record.node_address, record.live, None, None,
                      record.bridged,
                      None if record.heartbeat_age_s is None
                      else round(record.heartbeat_age_s + age_s, 1))
            for record in sorted(records, key=lambda record: record.node_id)]


@dataclass(frozen=True)
class Page:
    rows: list[TableNode]
    matching: int  # nodes that pass the filter, over every page
    pages: int


def select(nodes: list[TableNode], query: TableQuery,
           matches: Collection[str] | None) -> Page:
    """The page of ``nodes`` that passes ``query``; ``matches``: the ids a search found."""
    part = query.node.lower() if query.node else None
    chosen = [node for node in nodes
              if (query.state == "all" or node.live == (query.state == "live"))
              and (part is None or part in node.node_id.lower())
              and (matches is None or node.node_id in matches)]
    first = (query.page - 1) * query.per_page
    pages = max(1, -(-len(chosen) // query.per_page))
    return Page(chosen[first:first + query.per_page], len(chosen), pages)
