"""HTTP calls to the nodes: one pooled client, every call bounded, every failure counted."""

from __future__ import annotations

import asyncio
import time

import httpx
import orjson

from services.bridge import metrics as outcomes
from services.bridge.answers import Malformed, NodeCall, answered_ok, call_for, reply_for
from services.bridge.metrics import BridgeMetrics
from shared.contracts import NodeQuery, NodeReply
from shared.settings import BridgeSettings

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class NodeCaller:
    """Asks nodes over HTTP, as the original gateway did, through one connection pool."""

    def __init__(self, settings: BridgeSettings, metrics: BridgeMetrics) -> None:
        pool = settings.bridge_http_pool
        self.http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            timeout=settings.bridge_call_timeout_s,
            # Node addresses are taken as they are: no proxy from the environment, no redirect.
            trust_env=False, follow_redirects=False,
            headers={"User-Agent": "grid-bridge"})
        self.cap_s = settings.bridge_call_timeout_s
        self.max_bytes = settings.bridge_max_answer_bytes
        self.metrics = metrics

    async def close(self) -> None:
        await self.http.aclose()

    async def ask(self, node_id: str, address: str, query: NodeQuery,
                  within_s: float) -> NodeReply | None:
        """The node's answer to ``query`` as a NodeReply, None without a valid one in time."""
        call = call_for(query)
        started = time.perf_counter()
        outcome, reply = outcomes.OK, None
        try:
            status, body = await self.fetch(call, address, within_s)
            if answered_ok(status, query):
                reply = reply_for(node_id, query, status, body)
            else:
                outcome = outcomes.STATUS
        except Exception as exc:  # noqa: BLE001 - a node's failure never breaks the bridge
            outcome = outcome_of(exc)
        self.metrics.observe_call(call.path, outcome, time.perf_counter() - started)
        return reply

    async def fetch(self, call: NodeCall, address: str, within_s: float) -> tuple[int, bytes]:
        """Status and body of one call, the whole of it within ``within_s`` (and the cap)."""
        within_s = max(min(within_s, self.cap_s), 0.001)
        content = None if call.body is None else orjson.dumps(call.body)
        async with asyncio.timeout(within_s):
            async with self.http.stream(call.method, call.url(address), content=content,
                                        headers=JSON_HEADERS if content else None,
                                        timeout=within_s) as response:
                return response.status_code, await self._read(response)

    async def _read(self, response: httpx.Response) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > self.max_bytes:
                raise Malformed(f"answer over {self.max_bytes} bytes")
        return bytes(body)


def outcome_of(exc: Exception) -> str:
    """The metric outcome of a failed call."""
    if isinstance(exc, Malformed):
        return outcomes.MALFORMED
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return outcomes.TIMEOUT
    if isinstance(exc, httpx.ConnectError):
        return outcomes.REFUSED
    return outcomes.ERROR
