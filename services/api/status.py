"""The operator status page: ``GET /`` (HTML), ``GET /status.json`` and a node's detail.

The page is a static skeleton and one script (``static/status.js``) that polls
``/status.json`` and re-renders. ``/status.json`` is bounded whatever the
network's size: counts, readiness, recent searches and one page of the node
table (filtered by id, model or tag). A node's models and tags are asked of
that node alone, when a viewer opens its row (``/status/nodes/{id}.json``).
What each part costs is in :mod:`services.api.status_board`.
"""

from __future__ import annotations

import asyncio
import html
from pathlib import Path
from string import Template
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel
from starlette.responses import HTMLResponse, JSONResponse, Response

from services.api import openapi as doc
from services.api.errors import ApiError, JsonResponse
from services.api.routes import require_reader
from services.api.status_board import Inventory, Matches, Nodes, StatusBoard
from services.api.status_table import TableNode, TableQuery, select

STATIC = Path(__file__).resolve().parent / "static"
SCRIPT_PATH = "/static/status.js"
NO_STORE = {"Cache-Control": "no-store"}


# --- what the routes answer -----------------------------------------------------------


class SummaryView(BaseModel):
    registered: int
    live: int
    offline: int
    # Heard on the bus within the TTL (a live node heard only through its join is not).
    heard: int
    # Announcing an inventory version (searches may answer for them from the index).
    versioned: int
    bridged: int
    # Where the node list comes from: this API process's membership view, or (while
    # the view is not in sync) the registry's list, read ``list_age_s`` ago.
    source: Literal["membership", "registry"]
    list_age_s: float
    # Why the node list could not be read (None: it was).
    error: str | None


class FilterSearchView(BaseModel):
    """The search behind a filter by model or tag."""

    asked: int
    answered: int
    error: str | None


class TableView(BaseModel):
    page: int
    per_page: int
    pages: int
    # Nodes that pass the filter, over every page.
    matching: int
    node: str | None
    model: str | None
    tag: list[str] | None
    state: str
    rows: list[TableNode]
    search: FilterSearchView | None


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
    # How often the page polls.
    refresh_s: float
    readiness: ReadinessView
    summary: SummaryView
    nodes: TableView
    recent_searches: list[RecentSearch]


class NamesView(BaseModel):
    # The first GRID_STATUS_MAX_NAMES names by name (None: the node did not answer).
    names: list[str] | None
    total: int | None


class NodeDetail(BaseModel):
    node: TableNode
    # False: not asked (the node is offline).
    asked: bool
    models: NamesView
    tags: NamesView
    # Why the lists are missing (None: the node answered both).
    note: str | None


# --- building them --------------------------------------------------------------------


def _summary(listed: Nodes) -> SummaryView:
    counts = listed.counts
    return SummaryView(**counts, offline=counts["registered"] - counts["live"],
                       source=listed.source, list_age_s=round(listed.age_s, 2),
                       error=listed.error)


def _table(listed: Nodes, query: TableQuery, matches: Matches) -> TableView:
    page = select(listed.nodes, query, matches.ids)
    search = (None if matches.ids is None
              else FilterSearchView(asked=matches.asked, answered=matches.answered,
                                    error=matches.error))
    return TableView(page=query.page, per_page=query.per_page, pages=page.pages,
                     matching=page.matching, node=query.node, model=query.model,
                     tag=query.tag, state=query.state, rows=list(page.rows),
                     search=search)


def _names(names: list[str] | None, limit: int) -> NamesView:
    if names is None:
        return NamesView(names=None, total=None)
    return NamesView(names=names[:limit], total=len(names))


def _detail(node: TableNode, inventory: Inventory | None, limit: int) -> NodeDetail:
    if inventory is None:
        return NodeDetail(node=node, asked=False, models=_names(None, 0),
                          tags=_names(None, 0), note="Offline: not asked.")
    note = inventory.error
    if note is None and (inventory.models is None or inventory.tags is None):
        note = "The node did not answer in time."
    return NodeDetail(node=node, asked=True,
                      models=_names(inventory.models, limit),
                      tags=_names(inventory.tags, limit), note=note)


class StatusPage:
    """The routes' answers, from the board."""

    def __init__(self, board: StatusBoard) -> None:
        self.board = board
        self.gateway = board.gateway
        self.settings = board.settings

    async def view(self, address: str, query: TableQuery) -> StatusView:
        listed, matches = await asyncio.gather(self.board.nodes(), self.board.matches(query))
        settings = self.settings
        return StatusView(
            name=settings.gateway_name or settings.namespace,
            address=settings.gateway_address or address,
            namespace=settings.namespace, node_ttl_s=settings.node_ttl_s,
            refresh_s=settings.status_cache_s, readiness=self._readiness(),
            summary=_summary(listed), nodes=_table(listed, query, matches),
            recent_searches=self._recent())

    async def detail(self, node_id: str) -> NodeDetail:
        listed = await self.board.nodes()
        node = next((node for node in listed.nodes if node.node_id == node_id), None)
        if node is None:
            raise ApiError(404, listed.error or "No node with this id is registered.")
        inventory = await self.board.inventory(node_id) if node.live else None
        return _detail(node, inventory, self.settings.status_max_names)

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


# --- routes ----------------------------------------------------------------------


def request_address(request: Request, limit: int = 256) -> str:
    """The API's address as this request reached it (scheme and Host header, unparsed)."""
    scheme = request.scope.get("scheme", "http")
    host = request.headers.get("host")
    if not host and request.scope.get("server"):
        host_name, port = request.scope["server"]
        host = f"{host_name}:{port}"
    return f"{scheme}://{host or 'localhost'}"[:limit]


TABLE_PARAMETERS = [
    {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000000,
                                                  "default": 1}},
    {"name": "per_page", "in": "query",
     "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
    {"name": "node", "in": "query", "description": "Part of the node id (any case).",
     "schema": {"type": "string", "minLength": 1, "maxLength": 128}},
    {"name": "model", "in": "query", "description": "Only nodes hosting this model.",
     "schema": {"type": "string", "minLength": 1, "maxLength": 512}},
    {"name": "tag", "in": "query", "description": "Only nodes holding data with every tag "
     "given (repeat the parameter for several).",
     "schema": {"type": "array", "minItems": 1, "maxItems": 16,
                "items": {"type": "string", "minLength": 1, "maxLength": 512}},
     "style": "form", "explode": True},
    {"name": "state", "in": "query",
     "schema": {"type": "string", "enum": ["all", "live", "offline"], "default": "all"}},
]


def mount(app: FastAPI, board: StatusBoard) -> None:
    """Serve the page, its data routes and its script on ``app``."""
    page = Template((STATIC / "status.html").read_text(encoding="utf-8"))
    script = (STATIC / "status.js").read_bytes()
    status = StatusPage(board)
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
        return HTMLResponse(body, headers=NO_STORE)

    @router.get("/status.json", summary="What the status page shows: counts, readiness, "
                "recent searches and one page of the node table.",
                # Documents the body as StatusView (the route answers its own JsonResponse).
                response_model=StatusView, response_class=JSONResponse,
                openapi_extra={"parameters": TABLE_PARAMETERS},
                responses={400: doc.error(
                    "A query parameter is wrong, or unknown (the message names it).",
                    "Invalid query parameter 'per_page': Input should be less than or equal "
                    "to 200.")},
                response_description="The gateway's status; never a 5xx: a part that could "
                                     "not be read says why.")
    async def status_data(request: Request) -> JsonResponse:
        query = TableQuery.parse(request.query_params.multi_items())
        view = await status.view(request_address(request), query)
        return JsonResponse(view.model_dump(mode="json"), headers=NO_STORE)

    @router.get("/status/nodes/{node_id}.json",
                summary="One node's detail: its state, and its models and tags as it answers "
                        "(asked of that node alone).",
                response_model=NodeDetail, response_class=JSONResponse,
                responses={404: doc.error("No node with this id is registered.",
                                          "No node with this id is registered.")})
    async def node_detail(node_id: str) -> JsonResponse:
        detail = await status.detail(node_id)
        return JsonResponse(detail.model_dump(mode="json"), headers=NO_STORE)

    @app.get(SCRIPT_PATH, include_in_schema=False)
    async def status_script() -> Response:
        return Response(script, media_type="text/javascript; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})

    app.include_router(router)

