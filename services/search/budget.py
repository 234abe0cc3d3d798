"""How many node queries one search worker keeps in flight at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from shared.errors import Overloaded


class QueryBudget:
    """A weighted semaphore over node queries: a search of N nodes takes N of ``limit``.

    A search larger than the whole budget takes all of it, so it runs alone
    rather than never. Waiters are served in arrival order.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    @asynccontextmanager
    async def take(self, queries: int, within_s: float) -> AsyncIterator[None]:
        """Hold ``queries`` of the budget; Overloaded if none frees up within ``within_s``."""
        weight = min(queries, self.limit)
        if self._waiters or self.in_use + weight > self.limit:
            await self._wait(weight, within_s)
        else:
            self.in_use += weight
        try:
            yield
        finally:
            self.in_use -= weight
            self._wake()

    async def _wait(self, weight: int, within_s: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (weight, future)
        self._waiters.append(entry)
        try:
            async with asyncio.timeout(max(within_s, 0.0)):
                await future
        except BaseException as exc:
            if entry in self._waiters:
                self._waiters.remove(entry)
            if future.done() and not future.cancelled():
                self.in_use -= weight  # granted just as the wait gave up: give it back
            self._wake()  # whoever queued behind this one may fit now
            if isinstance(exc, TimeoutError):
                raise Overloaded() from None
            raise

    def _wake(self) -> None:
        while self._waiters:
            weight, future = self._waiters[0]
            if self.in_use + weight > self.limit:
                return
            self._waiters.pop(0)
            if not future.done():
                self.in_use += weight
                future.set_result(None)
