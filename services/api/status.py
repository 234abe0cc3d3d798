"""The operator status page: ``GET /`` (HTML), ``GET /status.json`` (what it shows).

The page is a static skeleton and one script (``static/status.js``) that polls
``/status.json`` and re-renders. Viewers never cost a broadcast each: the look
at the network behind the data (the registry's node list and one search per
kind of name) is taken at most once per ``status_cache_s`` per API process,
and viewers who ask while one is being taken share it.
"""

from __future__ import annotations

import asyncio
import html
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel
from starlette.responses import HTMLResponse, JSONResponse, Response

from services.api import openapi as doc
from services.api.errors import JsonResponse
from services.api.gateway import Gateway
from services.api.routes import require_reader
from shared.contracts import (
    LIST_NODES,
    ListRequest,
    NodeList,
    NodeRecord,
    SearchRequest,
    SearchResult,
)
from shared.errors import GridError

STATIC = Path(__file__).resolve().parent / "static"
SCRIPT_PATH = "/static/status.js"
# How long a viewer waits for a new look before it is answered the previous one.
FRESH_WAIT_S = 1.0
T = TypeVar("T")
log = logging.getLogger(__name__)


# --- what /status.json answers ------------------------------------------------------


class NodeView(BaseModel):
    node_id: str
    node_address: str
    # Seconds since the node was last heard (None: never).
    last_seen_s: float | None
    # None: the node did not answer the status page's search (offline, or too slow).
    models: list[str] | None
    tags: list[str] | None
    # How many names the node answered; the lists above hold at most
    # GRID_STATUS_MAX_NAMES of them (the first by name).
    models_total: int | None = None
    tags_total: int | None = None


class NodesView(BaseModel):
    live: list[NodeView]
    offline: list[NodeView]
    # Why the registry could not list the nodes (None: it did).
    error: str | None


class InventoryView(BaseModel):
    """The status page's own searches for every live node's models and tags."""

    asked: int
    answered: int
    error: str | None


class ReadinessView(BaseModel):
    ready: bool
    reason: str | None
    broker_connected: bool
    # Consumers on each work queue, as last counted by the API.
    consumers: dict[str, int]


class RecentSearch(BaseModel):
    route: str
    op: str
    at: float
    latency_ms: float
    asked: int
    answered: int
    outcome: str


class StatusView(BaseModel):
    name: str
    address: str
    namespace: str
    node_ttl_s: float
    # How old the node list and inventories are, and how often they are refreshed.
    refreshed_s_ago: float
    refresh_s: float
    readiness: ReadinessView
    nodes: NodesView
    inventory: InventoryView
    recent_searches: list[RecentSearch]


# --- the shared look at the network --------------------------------------------------


@dataclass(frozen=True)
class Look:
    """One look at the network; a call that failed holds its error instead."""

    at: float  # time.monotonic() when it was taken
    nodes: NodeList | GridError
    models: SearchResult | GridError
    tags: SearchResult | GridError


async def _attempt(call: Awaitable[T]) -> T | GridError:
    try:
        return await call
    except GridError as exc:
        return exc


class StatusBoard:
    """Takes looks at the network for the status page, at most one per ``status_cache_s``."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.looks_taken = 0
        self._last: Look | None = None
        self._taking: asyncio.Task[Look] | None = None

    async def look(self) -> Look:
        """The last look if fresh, else a new one (viewers asking meanwhile share it).

        A viewer waits at most ``FRESH_WAIT_S`` for a new look when there is an
        older one, and gets the older one (the page shows its age) if it is not
        ready by then: a slow worker never holds the page. Only without any look
        yet does a viewer wait for the first, within the RPC deadline.
        """
        last = self._last
        if last is not None and time.monotonic() - last.at < self.settings.status_cache_s:
            return last
        if self._taking is None:
            self._taking = asyncio.create_task(self._take())
            self._taking.add_done_callback(self._taken)
        taking = self._taking
        if last is None:
            # Shielded: a viewer who goes away does not cancel the look others wait for.
            return await asyncio.shield(taking)
        await asyncio.wait({taking}, timeout=FRESH_WAIT_S)
        return self._last or last

    async def _take(self) -> Look:
        self.looks_taken += 1
        nodes, models, tags = await asyncio.gather(
            _attempt(self.gateway.registry(LIST_NODES, ListRequest(include_offline=True),
                                           NodeList)),
            _attempt(self._names("list_models")),
            _attempt(self._names("list_tags")))
        self._last = Look(time.monotonic(), nodes, models, tags)
        return self._last

    def _taken(self, task: asyncio.Task[Look]) -> None:
        self._taking = None
        if not task.cancelled() and task.exception() is not None:
            log.error("the status page's look at the network failed", exc_info=task.exception())

    async def _names(self, op: str) -> SearchResult:
        return await self.gateway.search(SearchRequest(op=op, per_node=True), route=None)

    async def close(self) -> None:
        if self._taking is not None:
            self._taking.cancel()

    async def view(self, address: str) -> StatusView:
        look = await self.look()
        settings = self.settings
        return StatusView(
            name=settings.gateway_name or settings.namespace,
            address=settings.gateway_address or address,
            namespace=settings.namespace,
            node_ttl_s=settings.node_ttl_s,
            refreshed_s_ago=round(time.monotonic() - look.at, 2),
            refresh_s=settings.status_cache_s,
            readiness=self._readiness(),
            nodes=_nodes_view(look, settings.status_max_names),
            inventory=_inventory_view(look),
            recent_searches=self._recent(),
        )

    def _readiness(self) -> ReadinessView:
        reason = self.gateway.readiness()
        return ReadinessView(ready=reason is None, reason=reason,
                             broker_connected=self.gateway.bus.ready,
                             consumers=dict(self.gateway.consumers))

    def _recent(self) -> list[RecentSearch]:
        """Newest first."""
        return [RecentSearch(route=record.route, op=record.op, at=record.at,
                             latency_ms=round(record.latency_s * 1000, 2), asked=record.asked,
                             answered=record.answered, outcome=record.outcome)
                for record in reversed(self.gateway.recent_searches)]


def _nodes_view(look: Look, limit: int) -> NodesView:
    if isinstance(look.nodes, GridError):
        return NodesView(live=[], offline=[], error=look.nodes.message)
    age = time.monotonic() - look.at
    nodes = sorted(look.nodes.nodes, key=lambda node: node.node_id)
    return NodesView(live=[_node_view(node, look, age, limit) for node in nodes if node.live],
                     offline=[_node_view(node, look, age, limit)
                              for node in nodes if not node.live],
                     error=None)


def _node_view(node: NodeRecord, look: Look, age: float, limit: int) -> NodeView:
    def names(result: SearchResult | GridError) -> list[str] | None:
        if not node.live or isinstance(result, GridError):
            return None
        return result.by_node.get(node.node_id)

    seen = None if node.heartbeat_age_s is None else round(node.heartbeat_age_s + age, 1)
    models, tags = names(look.models), names(look.tags)
    return NodeView(node_id=node.node_id, node_address=node.node_address, last_seen_s=seen,
                    models=_first(models, limit), tags=_first(tags, limit),
                    models_total=_total(models), tags_total=_total(tags))


def _first(names: list[str] | None, limit: int) -> list[str] | None:
    """At most ``limit`` names: one node with a huge inventory must not swell the page."""
    return names if names is None or len(names) <= limit else names[:limit]


def _total(names: list[str] | None) -> int | None:
    return None if names is None else len(names)


def _inventory_view(look: Look) -> InventoryView:
    results = [look.models, look.tags]
    errors = [result.message for result in results if isinstance(result, GridError)]
    answers = [result for result in results if not isinstance(result, GridError)]
    return InventoryView(asked=max((result.asked for result in answers), default=0),
                         answered=min((result.answered for result in answers), default=0),
                         error=errors[0] if errors else None)


# --- routes ----------------------------------------------------------------------


def request_address(request: Request, limit: int = 256) -> str:
    """The API's address as this request reached it (scheme and Host header, unparsed)."""
    scheme = request.scope.get("scheme", "http")
    host = request.headers.get("host")
    if not host and request.scope.get("server"):
        host_name, port = request.scope["server"]
        host = f"{host_name}:{port}"
    return f"{scheme}://{host or 'localhost'}"[:limit]


def mount(app: FastAPI, board: StatusBoard) -> None:
    """Serve the page, its data route and its script on ``app``."""
    page = Template((STATIC / "status.html").read_text(encoding="utf-8"))
    script = (STATIC / "status.js").read_bytes()
    router = APIRouter(tags=["status"], dependencies=[Depends(require_reader)],
                       responses={401: doc.READ_UNAUTHORIZED})

    @router.get("/", summary="The operator status page (HTML; it polls /status.json).",
                response_class=HTMLResponse,
                responses={200: {"description": "The page.",
                                 "content": {"text/html": {"schema": {"type": "string"}}}}})
    async def status_page(request: Request) -> HTMLResponse:
        settings = board.settings
        body = page.substitute(
            name=html.escape(settings.gateway_name or settings.namespace),
            address=html.escape(settings.gateway_address or request_address(request)),
            script=SCRIPT_PATH)
        return HTMLResponse(body, headers={"Cache-Control": "no-store"})

    @router.get("/status.json", summary="What the status page shows: nodes, their models "
                "and tags, readiness, recent searches.",
                # Documents the body as StatusView (the route answers its own JsonResponse).
                response_model=StatusView, response_class=JSONResponse,
                response_description="The gateway's status; never a 5xx: a part that could "
                                     "not be read says why.")
    async def status_data(request: Request) -> JsonResponse:
        view = await board.view(request_address(request))
        return JsonResponse(view.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    @app.get(SCRIPT_PATH, include_in_schema=False)
    async def status_script() -> Response:
        return Response(script, media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    app.include_router(router)
