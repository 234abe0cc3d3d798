"""Steady HTTP traffic for fault tests: clients sending searches and joins back to back.

Every request's outcome is recorded (status, body, headers, how long it
took, or the exception when there was no answer), so that a test can check
afterwards that each was answered, in time and correctly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Outcome:
    kind: str  # "search" or "join"
    started: float  # time.monotonic()
    seconds: float
    status: int | None = None  # None: no HTTP answer at all
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    error: str = ""
    request: Any = None  # the search's tags, or the joining node's id


@dataclass(frozen=True)
class Search:
    """A tag search and the answer it must get when every node it asked has answered."""

    tags: list[str]
    expected: list[list[str]]


class Traffic:
    """``searchers`` + ``joiners`` clients, each with one connection, until ``stop``."""

    def __init__(self, base_url: str, searches: list[Search], searchers: int, joiners: int,
                 timeout_s: float) -> None:
        self.base_url = base_url
        self.searches = searches
        self.timeout_s = timeout_s
        self.outcomes: list[Outcome] = []
        self._counts = (searchers, joiners)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._join_ids = (f"j{uuid.uuid4().hex[:6]}-{n}" for n in itertools.count())

    def start(self) -> None:
        searchers, joiners = self._counts
        self._tasks = [asyncio.create_task(self._client(self._search, n))
                       for n in range(searchers)]
        self._tasks += [asyncio.create_task(self._client(self._join, n)) for n in range(joiners)]

    async def stop(self) -> list[Outcome]:
        """Let the requests in flight finish (each bounded by the timeout), then stop."""
        self._stop.set()
        await asyncio.wait_for(asyncio.gather(*self._tasks), self.timeout_s + 5)
        return self.outcomes

    def answered_ok_since(self, since: float, kind: str) -> int:
        return sum(1 for o in self.outcomes
                   if o.kind == kind and o.started >= since and o.status == 200)

    async def _client(self, send: Callable[[httpx.AsyncClient, int], Any], number: int) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=self.base_url, timeout=self.timeout_s,
                                     limits=limits) as client:
            for sequence in itertools.count(number):
                if self._stop.is_set():
                    return
                await send(client, sequence)

    async def _search(self, client: httpx.AsyncClient, sequence: int) -> None:
        search = self.searches[sequence % len(self.searches)]
        await self._record("search", search.tags, client.post("/search",
                                                              json={"query": search.tags}))

    async def _join(self, client: httpx.AsyncClient, _: int) -> None:
        node_id = next(self._join_ids)
        body = {"node-id": node_id, "node-address": f"http://{node_id}:5000"}
        await self._record("join", node_id, client.post("/join", json=body))

    async def _record(self, kind: str, request: Any, sending: Any) -> None:
        outcome = Outcome(kind, time.monotonic(), 0.0, request=request)
        try:
            response = await sending
        except httpx.HTTPError as exc:
            outcome.error = f"{type(exc).__name__}: {exc}"
        else:
            outcome.status = response.status_code
            outcome.headers = dict(response.headers)
            with contextlib.suppress(ValueError):
                outcome.body = response.json()
        outcome.seconds = time.monotonic() - outcome.started
        self.outcomes.append(outcome)
