"""The FastAPI application: ``create_app(settings)`` builds it, the lifespan owns the bus."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api import admin, errors, routes, status
from services.api import openapi as doc
from services.api.errors import JsonResponse
from services.api.gateway import Gateway
from services.api.status_board import StatusBoard
from shared.contracts import LIST_NODES, ListRequest, NodeList
from shared.errors import GridError
from shared.logs import request_id
from shared.metrics import LATENCY_BUCKETS
from shared.settings import ApiSettings

log = logging.getLogger("services.api")
REQUEST_ID = "x-request-id"


class Observe:
    """ASGI middleware: request id, one log line and one latency sample per request.

    Latency is labelled by route template (``/search``), never by raw path,
    so junk URLs cannot blow up the metric's cardinality.
    """

    def __init__(self, app: ASGIApp, metrics: CollectorRegistry) -> None:
        self.app = app
        self.latency = Histogram(
            "grid_http_request_seconds", "HTTP request latency by route and status.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=metrics,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(REQUEST_ID.encode(), b"").decode("latin-1")
        rid = given if 0 < len(given) <= 64 and given.isprintable() else uuid.uuid4().hex
        request_id.set(rid)
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (REQUEST_ID.encode(), rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", "unmatched")
            self.latency.labels(scope["method"], route, str(status)).observe(elapsed)
            log.info("request", extra={"method": scope["method"], "route": route,
                                       "status": status, "ms": round(elapsed * 1000, 2)})


class RegistrySize:
    """Registered and live node counts, read from the registry when /metrics is scraped."""

    def __init__(self, metrics: CollectorRegistry) -> None:
        self.nodes = Gauge("grid_registry_nodes", "Registered nodes.", registry=metrics)
        self.live = Gauge("grid_registry_live_nodes", "Registered nodes heard within the TTL.",
                          registry=metrics)

    async def refresh(self, gateway: Gateway) -> None:
        try:
            listed = await gateway.registry(LIST_NODES, ListRequest(include_offline=True),
                                            NodeList, deadline_s=1.0)
        except GridError:
            return  # keep the last values; the scrape still answers
        self.nodes.set(len(listed.nodes))
        self.live.set(sum(node.live for node in listed.nodes))


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """Build the API for ``settings`` (read from the environment when omitted)."""
    settings = settings or ApiSettings()
    metrics = CollectorRegistry()
    gateway = Gateway(settings, metrics)
    board = StatusBoard(gateway)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await board.close()
            await gateway.stop()

    app = FastAPI(
        title="Grid Gateway",
        version="0.1.0",
        summary="Find grid nodes, their models and their data in a federated ML network.",
        lifespan=lifespan,
        default_response_class=JsonResponse,
    )
    app.state.settings = settings
    app.state.gateway = gateway
    app.state.metrics = metrics
    app.state.registry_size = RegistrySize(metrics)
    app.state.status_board = board
    errors.install(app)
    app.include_router(routes.registry)
    app.include_router(routes.search)
    app.include_router(admin.admin)
    _operations(app)
    status.mount(app, board)
    app.add_middleware(Observe, metrics=metrics)
    return app


def _operations(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"], summary="The process is up.",
             responses={200: doc.answer("Up.", doc.STATUS, {"status": "ok"})})
    async def healthz() -> JsonResponse:
        return JsonResponse({"status": "ok"})

    @app.get("/readyz", tags=["operations"],
             summary="Broker connected and registry and search workers consuming.",
             responses={200: doc.answer("Ready.", doc.STATUS, {"status": "ready"}),
                        503: doc.answer("Not ready, and why.", doc.STATUS,
                                        {"status": "not ready",
                                         "reason": "no worker consumes grid.search"})})
    async def readyz(request: Request) -> JsonResponse:
        reason = request.app.state.gateway.readiness()
        if reason is not None:
            return JsonResponse({"status": "not ready", "reason": reason}, status_code=503)
        return JsonResponse({"status": "ready"})

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics.",
             response_class=Response,
             responses={200: {"description": "Prometheus text exposition format.",
                              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics(request: Request) -> Response:
        state = request.app.state
        await state.registry_size.refresh(state.gateway)
        return Response(generate_latest(state.metrics), media_type=CONTENT_TYPE_LATEST)
