"""Enrolled nodes in the node store: each node's token hash, and how it was enrolled.

The same table on SQLite and PostgreSQL; the mixins below add its statements
to the two stores of :mod:`services.registry.store` (only the placeholders
differ). A token is kept only as its hash (:func:`shared.auth.token_hash`).
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

import asyncpg

ENROLLED_SCHEMA = """
CREATE TABLE IF NOT EXISTS enrolled (
    node_id      TEXT PRIMARY KEY,
    token_hash   TEXT NOT NULL UNIQUE,
    bridged      BOOLEAN NOT NULL,
    node_address TEXT NOT NULL,
    enrolled_at  DOUBLE PRECISION NOT NULL
)
"""
UPSERT = ("INSERT INTO enrolled VALUES ({}, {}, {}, {}, {}) ON CONFLICT (node_id) DO UPDATE "
          "SET token_hash = excluded.token_hash, bridged = excluded.bridged, "
          "node_address = excluded.node_address, enrolled_at = excluded.enrolled_at")
SELECT = "SELECT node_id, node_address, bridged, enrolled_at FROM enrolled ORDER BY node_id"


@dataclass(frozen=True)
class Enrollment:
    """One enrolled node, as the store keeps it (without its token hash)."""

    node_id: str
    node_address: str
    bridged: bool
    enrolled_at: float


class SqliteEnrolled:
    """The enrolled table on SQLite (mixed into SqliteStore, which supplies ``_run``)."""

    async def enroll(self, node_id: str, hashed: str, bridged: bool, address: str) -> None:
        """Enroll a node, or rotate its token (the old one stops working at once)."""
        await self._run(lambda db: db.execute(UPSERT.format(*"?????"), (
            node_id, hashed, bridged, address, time.time())))

    async def revoke(self, node_id: str) -> bool:
        """Forget the node's enrollment and registration. False if it was not enrolled."""
        def revoke(db: sqlite3.Connection) -> int:
            with db:  # one transaction
                db.execute("BEGIN IMMEDIATE")
                db.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,))
                return db.execute("DELETE FROM enrolled WHERE node_id = ?", (node_id,)).rowcount

        return await self._run(revoke) == 1

    async def enrolled(self) -> list[Enrollment]:
        rows = await self._run(lambda db: db.execute(SELECT).fetchall())
        return [Enrollment(row[0], row[1], bool(row[2]), row[3]) for row in rows]

    async def token_owner(self, hashed: str) -> str | None:
        """The node whose token has this hash, None if none (never issued, or revoked)."""
        row = await self._run(lambda db: db.execute(
            "SELECT node_id FROM enrolled WHERE token_hash = ?", (hashed,)).fetchone())
        return None if row is None else row[0]


class PostgresEnrolled:
    """The enrolled table on PostgreSQL (mixed into PostgresStore, which supplies ``_with``)."""

    async def enroll(self, node_id: str, hashed: str, bridged: bool, address: str) -> None:
        await self._with(lambda conn: conn.execute(
            UPSERT.format("$1", "$2", "$3", "$4", "$5"),
            node_id, hashed, bridged, address, time.time()))

    async def revoke(self, node_id: str) -> bool:
        async def revoke(conn: asyncpg.Connection) -> str:
            async with conn.transaction():
                await conn.execute("DELETE FROM nodes WHERE node_id = $1", node_id)
                return await conn.execute("DELETE FROM enrolled WHERE node_id = $1", node_id)

        return await self._with(revoke) == "DELETE 1"

    async def enrolled(self) -> list[Enrollment]:
        rows = await self._with(lambda conn: conn.fetch(SELECT))
        return [Enrollment(row[0], row[1], row[2], row[3]) for row in rows]

    async def token_owner(self, hashed: str) -> str | None:
        return await self._with(lambda conn: conn.fetchval(
            "SELECT node_id FROM enrolled WHERE token_hash = $1", hashed))
