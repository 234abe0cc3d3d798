"""The load generator: ``concurrency`` clients, each one request at a time on keep-alive.

A run has a warm-up phase (not recorded) and a measured phase; between them
every client is idle, so CPU counters read around the measured phase cover
exactly its requests (plus the fleet's background heartbeats).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from bench.http import Client, Response, make_client
from bench.routes import Route
from bench.stats import Samples


@dataclass(frozen=True)
class LoadSpec:
    route: Route
    concurrency: int
    duration_s: float | None = 10.0
    requests: int | None = None  # when set, a request count instead of a duration
    warmup_s: float = 1.0
    timeout_s: float = 30.0
    nodes: int | None = None  # fleet size, to check answers (None: not checked)
    token: str = "bench"  # makes /join ids unique
    client: str = "raw"
    # The gateway's admin token (a secure gateway's /join needs it).
    admin_token: str | None = None


class Load:
    def __init__(self, spec: LoadSpec, base_url: str) -> None:
        self.spec = spec
        self.clients: list[Client] = [make_client(spec.client, base_url, spec.admin_token)
                                      for _ in range(spec.concurrency)]
        self._numbers = itertools.count()
        self.samples = Samples()
        self.measure_started = 0.0

    async def warm_up(self) -> None:
        if self.spec.warmup_s > 0:
            await self._phase(self.spec.warmup_s, None, record=False)

    async def measure(self) -> tuple[Samples, float]:
        """Run the measured phase; returns the samples and its wall time."""
        self.samples = Samples()
        self.measure_started = time.perf_counter()
        await self._phase(self.spec.duration_s, self.spec.requests, record=True)
        return self.samples, time.perf_counter() - self.measure_started

    async def close(self) -> None:
        await asyncio.gather(*(client.close() for client in self.clients),
                             return_exceptions=True)

    async def _phase(self, duration_s: float | None, requests: int | None,
                     record: bool) -> None:
        deadline = time.perf_counter() + duration_s if duration_s else float("inf")
        budget = itertools.count() if requests else None

        def more() -> bool:
            if time.perf_counter() >= deadline:
                return False
            return budget is None or next(budget) < requests

        await asyncio.gather(*(self._worker(client, more, record) for client in self.clients))

    async def _worker(self, client: Client, more: Callable[[], bool], record: bool) -> None:
        route, spec = self.spec.route, self.spec
        while more():
            k = next(self._numbers)
            body = route.body(k, spec.token)
            started = time.perf_counter()
            try:
                async with asyncio.timeout(spec.timeout_s):
                    response = await client.request(route.method, route.path, body)
            except Exception as exc:  # noqa: BLE001 - every failure is a data point
                if record:
                    self._failed(exc, time.perf_counter() - started)
                continue
            if record:
                self._record(k, response, time.perf_counter() - started)

    def _failed(self, exc: Exception, latency_s: float) -> None:
        name = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
        self.samples.exceptions[name] += 1
        self.samples.latencies_s.append(latency_s)

    def _record(self, k: int, response: Response, latency_s: float) -> None:
        samples = self.samples
        samples.latencies_s.append(latency_s)
        samples.statuses[response.status] += 1
        asked = answered = None
        if self.spec.route.search:
            asked = _int(response.headers.get("x-grid-nodes-asked"))
            answered = _int(response.headers.get("x-grid-nodes-answered"))
            if asked is not None and answered is not None:
                samples.asked.append(asked)
                samples.answered.append(answered)
                if answered < asked and 200 <= response.status < 300:
                    samples.partial += 1
                if response.headers.get("x-grid-cache") == "hit":
                    samples.hits += 1
        if response.status == 200 and asked == answered:
            self._check(k, response.body)

    def _check(self, k: int, body: bytes) -> None:
        check, nodes = self.spec.route.check, self.spec.nodes
        if check is None or nodes is None:
            return
        self.samples.checked += 1
        try:
            ok = check(k, orjson.loads(body), nodes)
        except (orjson.JSONDecodeError, TypeError, AttributeError):
            ok = False
        if not ok:
            self.samples.mismatches += 1


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None
