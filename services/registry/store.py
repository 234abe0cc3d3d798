"""The durable node store: SQLite by default, PostgreSQL for a ``postgresql://`` URL.

Uniqueness of node ids is the database's job (a primary key), so any number
of registry workers can share one store. Each row remembers the id of the
join request that created it: a redelivered join finds its own row and
succeeds again instead of reporting a conflict.

A join carries its caller's deadline. Its insert waits for the database no
longer than that, and it is rolled back rather than committed once the deadline
is (nearly) past: the caller has been told 503 by then and will retry, and a
join that landed anyway would turn that retry into a wrong 409.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import asyncpg

from services.registry.enrolled import ENROLLED_SCHEMA, PostgresEnrolled, SqliteEnrolled
from shared.errors import Conflict, DeadlineExceeded, NotFound, StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
# A join is not committed later than this before its deadline: the reply still
# has to reach the caller before it gives up.
COMMIT_MARGIN_S = 0.05
# The longest a statement waits for the database when the request has no deadline.
DEFAULT_WAIT_S = 5.0


def time_left(deadline: float | None) -> float:
    """Seconds a store call may still wait for the database (at least a little)."""
    if deadline is None:
        return DEFAULT_WAIT_S
    return max(deadline - COMMIT_MARGIN_S - time.time(), 0.001)


def too_late(deadline: float | None) -> bool:
    return deadline is not None and time.time() > deadline - COMMIT_MARGIN_S


TOO_LATE = "the join was rolled back: its caller's deadline passed"

SCHEMA = """
CREATE TABLE IF NOT EXISTS nodes (
    node_id      TEXT PRIMARY KEY,
    node_address TEXT NOT NULL,
    joined_at    DOUBLE PRECISION NOT NULL,
    join_request TEXT NOT NULL
)
"""


class NodeStore(ABC):
    """What the registry needs from its database."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def add(self, node_id: str, node_address: str, request_id: str,
                  deadline: float | None = None) -> bool:
        """Register a node. True if this request created it (now or on an earlier delivery).

        Raises Conflict when another request registered the id, DeadlineExceeded
        (and registers nothing) when ``deadline`` (epoch seconds) passes first.
        """

    @abstractmethod
    async def remove(self, node_id: str, node_address: str) -> None:
        """Delete a node registered with this address; NotFound otherwise."""

    @abstractmethod
    async def nodes(self) -> list[tuple[str, str]]:
        """Every registered (node_id, node_address), sorted by id."""


def open_store(database_url: str, schema: str = "public") -> NodeStore:
    """Pick the store for a URL: ``sqlite:///path`` or ``postgresql://...``."""
    if database_url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(database_url, schema)
    if database_url.startswith("sqlite:///"):
        return SqliteStore(database_url.removeprefix("sqlite:///"))
    raise ValueError(f"unsupported GRID_DATABASE_URL: {database_url.split(':', 1)[0]}://...")


class SqliteStore(SqliteEnrolled, NodeStore):
    """A SQLite file, used from one thread; several processes may share the file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            if self._db is None:
                raise StoreUnavailable("the node store is closed")
            return fn(self._db)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, call)
        except sqlite3.Error as exc:
            log.error("sqlite error", extra={"error": str(exc)})
            raise StoreUnavailable(f"node store error: {exc}") from None

    async def open(self) -> None:
        def connect() -> None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=DEFAULT_WAIT_S, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(SCHEMA)
            db.execute(ENROLLED_SCHEMA)
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._thread, connect)

    async def close(self) -> None:
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        self._thread.shutdown(wait=False)

    async def add(self, node_id: str, node_address: str, request_id: str,
                  deadline: float | None = None) -> bool:
        def add(db: sqlite3.Connection) -> bool:
            # Wait for another writer's lock no longer than the caller waits.
            db.execute(f"PRAGMA busy_timeout = {int(time_left(deadline) * 1000)}")
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO nodes VALUES (?, ?, ?, ?)",
                    (node_id, node_address, time.time(), request_id),
                )
                if cursor.rowcount == 1:
                    if too_late(deadline):
                        raise DeadlineExceeded(TOO_LATE)
                    db.execute("COMMIT")
                    return True
                row = db.execute(
                    "SELECT join_request FROM nodes WHERE node_id = ?", (node_id,)
                ).fetchone()
                db.execute("ROLLBACK")
                return row is not None and row[0] == request_id
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            finally:
                db.execute(f"PRAGMA busy_timeout = {int(DEFAULT_WAIT_S * 1000)}")

        if not await self._run(add):
            raise Conflict()
        return True

    async def remove(self, node_id: str, node_address: str) -> None:
        def remove(db: sqlite3.Connection) -> int:
            return db.execute(
                "DELETE FROM nodes WHERE node_id = ? AND node_address = ?",
                (node_id, node_address),
            ).rowcount

        if await self._run(remove) == 0:
            raise NotFound()

    async def nodes(self) -> list[tuple[str, str]]:
        return await self._run(
            lambda db: db.execute(
                "SELECT node_id, node_address FROM nodes ORDER BY node_id"
            ).fetchall()
        )


class PostgresStore(PostgresEnrolled, NodeStore):
    """A PostgreSQL database through an asyncpg pool; reconnects by itself."""

    def __init__(self, url: str, schema: str = "public") -> None:
        self.url = url
        self.schema = schema
        self._pool: asyncpg.Pool | None = None
        self._ready = False

    async def open(self) -> None:
        self._pool = asyncpg.create_pool(
            self.url,
            min_size=0,
            max_size=10,
            timeout=3,
            command_timeout=5,
            server_settings={"search_path": self.schema},
        )
        await self._pool
        try:
            await self._ensure_schema()
        except StoreUnavailable as exc:
            # The worker still starts: requests answer "store unavailable"
            # until the database is back.
            log.warning("database not ready", extra={"error": exc.message})

    async def _ensure_schema(self) -> None:
        if self._ready:
            return

        async def create(conn: asyncpg.Connection) -> None:
            for attempt in range(3):  # another worker may create it at the same instant
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                    await conn.execute(SCHEMA)
                    await conn.execute(ENROLLED_SCHEMA)
                    return
                except asyncpg.UniqueViolationError:
                    if attempt == 2:
                        raise

        await self._with(create, ensure=False)
        self._ready = True

    async def _with(self, fn: Callable[[asyncpg.Connection], Awaitable[T]],
                    ensure: bool = True) -> T:
        if self._pool is None:
            raise StoreUnavailable("the node store is closed")
        if ensure:
            await self._ensure_schema()
        try:
            async with self._pool.acquire(timeout=3) as conn:
                return await fn(conn)
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError, asyncpg.CannotConnectNowError) as exc:
            log.error("database unavailable", extra={"error": str(exc)})
            raise StoreUnavailable("the node store is unavailable") from None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), timeout=5)
            except TimeoutError:
                pool.terminate()

    async def add(self, node_id: str, node_address: str, request_id: str,
                  deadline: float | None = None) -> bool:
        async def add(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                created = await conn.fetchval(
                    "INSERT INTO nodes VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (node_id) DO NOTHING RETURNING node_id",
                    node_id, node_address, time.time(), request_id,
                    timeout=time_left(deadline),
                )
                if created is not None:
                    if too_late(deadline):
                        raise DeadlineExceeded(TOO_LATE)  # rolls the insert back
                    return True
                owner = await conn.fetchval(
                    "SELECT join_request FROM nodes WHERE node_id = $1", node_id,
                    timeout=time_left(deadline),
                )
                return owner == request_id

        if not await self._with(add):
            raise Conflict()
        return True

    async def remove(self, node_id: str, node_address: str) -> None:
        async def remove(conn: asyncpg.Connection) -> str:
            return await conn.execute(
                "DELETE FROM nodes WHERE node_id = $1 AND node_address = $2",
                node_id, node_address,
            )

        if await self._with(remove) == "DELETE 0":
            raise NotFound()

    async def nodes(self) -> list[tuple[str, str]]:
        async def fetch(conn: asyncpg.Connection) -> list[tuple[str, str]]:
            rows = await conn.fetch("SELECT node_id, node_address FROM nodes ORDER BY node_id")
            return [(row[0], row[1]) for row in rows]

        return await self._with(fetch)
