"""The routes the load generator drives: how to build request ``k`` and check its answer.

Request bodies vary with ``k`` so that concurrent searches are distinct (the
search worker coalesces identical ones); ``search-identical`` sends one body
on purpose, to show that coalescing. ``search`` cycles through 64 bodies;
``search-distinct`` never sends the same body twice (nothing to cache), with
the same answers as ``search``. ``search-repeated`` cycles through a few
bodies, which the search worker answers from its cache once it has seen
them; ``search-churn`` does the same while the fleet changes an inventory
every 100 ms, so that the cache keeps being invalidated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from bench import inventory as inv

# Distinct bodies of search-repeated and search-churn.
REPEATED_QUERIES = 8
BodyFn = Callable[[int, str], bytes | None]
# (request number, decoded answer, fleet size) -> answer is right
CheckFn = Callable[[int, Any, int], bool]


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    body: BodyFn
    check: CheckFn | None = None
    # A search route: it has X-Grid-Nodes-Asked/Answered headers.
    search: bool = False
    # Runs while the fleet changes inventories (only against a fleet the benchmark started).
    churn: bool = False


def _no_body(_: int, __: str) -> None:
    return None


def _search_body(k: int, _: str) -> bytes:
    return orjson.dumps({"query": inv.search_query(k)})


def _distinct_body(k: int, _: str) -> bytes:
    return orjson.dumps({"query": inv.distinct_query(k)})


def _repeated_body(k: int, _: str) -> bytes:
    return orjson.dumps({"query": inv.search_query(k % REPEATED_QUERIES)})


def _identical_body(_: int, __: str) -> bytes:
    return orjson.dumps({"query": inv.search_query(1)})


def _model_body(k: int, _: str) -> bytes:
    return orjson.dumps({"model_id": inv.model_query(k)})


def _encrypted_body(k: int, _: str) -> bytes:
    return orjson.dumps({"model_id": inv.encrypted_query(k)})


def _join_body(k: int, token: str) -> bytes:
    node = f"join-{token}-{k}"
    return orjson.dumps({"node-id": node, "node-address": f"http://{node}.bench:5000"})


def _check_pairs(k: int, answer: Any, nodes: int) -> bool:
    return answer == inv.pairs_of_class(k, nodes)


def _check_repeated(k: int, answer: Any, nodes: int) -> bool:
    return answer == inv.pairs_of_class(k % REPEATED_QUERIES, nodes)


def _check_identical(_: int, answer: Any, nodes: int) -> bool:
    return answer == inv.pairs_of_class(1, nodes)


def _check_tags(_: int, answer: Any, nodes: int) -> bool:
    return answer == inv.all_tags(nodes)


def _check_models(_: int, answer: Any, nodes: int) -> bool:
    return answer == inv.all_models(nodes)


def _check_encrypted(k: int, answer: Any, nodes: int) -> bool:
    host = inv.first_encrypted_host(k, nodes)
    return answer == {} if host is None else host in answer and "nodes" in answer


def _check_join(_: int, answer: Any, __: int) -> bool:
    return answer == {"message": "Successfully Connected!"}


def _check_connected(_: int, answer: Any, nodes: int) -> bool:
    listed = answer.get("grid-nodes", ()) if isinstance(answer, dict) else ()
    return inv.fleet_ids(nodes) <= set(listed)


ROUTES: dict[str, Route] = {route.name: route for route in (
    Route("search", "POST", "/search", _search_body, _check_pairs, search=True),
    Route("search-identical", "POST", "/search", _identical_body, _check_identical,
          search=True),
    Route("search-distinct", "POST", "/search", _distinct_body, _check_pairs, search=True),
    Route("search-repeated", "POST", "/search", _repeated_body, _check_repeated, search=True),
    Route("search-churn", "POST", "/search", _repeated_body, _check_repeated, search=True,
          churn=True),
    # The memory soak: distinct searches under inventory churn (answers move: not checked).
    Route("soak", "POST", "/search", _distinct_body, search=True, churn=True),
    Route("tags", "GET", "/search-available-tags", _no_body, _check_tags, search=True),
    Route("models", "GET", "/search-available-models", _no_body, _check_models, search=True),
    Route("search-model", "POST", "/search-model", _model_body, _check_pairs, search=True),
    Route("search-encrypted", "POST", "/search-encrypted-model", _encrypted_body,
          _check_encrypted, search=True),
    Route("join", "POST", "/join", _join_body, _check_join),
    Route("connected", "GET", "/connected-nodes", _no_body, _check_connected),
    Route("choose-host", "GET", "/choose-model-host", _no_body),
)}

# Joins grow the registry, which /connected-nodes lists: they run last.
ORDER = ["search", "search-distinct", "search-repeated", "search-churn", "soak", "tags", "models",
         "search-model", "search-encrypted", "connected", "choose-host", "search-identical",
         "join"]


def route(name: str) -> Route:
    try:
        return ROUTES[name]
    except KeyError:
        raise ValueError(f"unknown route {name!r} (known: {', '.join(ROUTES)})") from None
