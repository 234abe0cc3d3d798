"""A gateway in secure mode on a private managed broker, and its enrolled nodes.

Shared by the hostile-node and enrollment tests. Each test gets its own
namespace and node ids with a suffix of its own (broker users are broker-wide),
and every broker user it made is deleted after it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika

from services.client import AsyncGridClient, NodeCredentials
from shared.brokeradmin import BrokerAdmin
from shared.settings import RegistrySettings
from shared.topology import Names, delete_namespace
from tests.harness import Gateway, Harness
from tests.private_broker import require_rabbitmq_scripts
from tests.secure.managed_broker import ManagedBroker

ADMIN = "operator-s3cret"
FAST = {"node_ttl_s": 2.0, "heartbeat_s": 0.3}


def start_managed_broker(base: Path) -> Iterator[ManagedBroker]:
    """Start a managed private broker for a test module; stop it after."""
    import asyncio

    require_rabbitmq_scripts()
    broker = ManagedBroker(base)
    try:
        asyncio.run(broker.start())
        yield broker
    finally:
        asyncio.run(broker.close())


@dataclass
class Secure:
    """A secure gateway, its operator client and what a test enrolled."""

    broker: ManagedBroker
    harness: Harness
    names: Names
    suffix: str
    gateway: Gateway | None = None
    operator: AsyncGridClient | None = None

    def id(self, name: str) -> str:
        """A node id of this test's own (broker users are shared by the module's tests)."""
        return f"{name}-{self.suffix}"

    async def start(self, workers: dict | None = None, **api: object) -> Gateway:
        """API, registry and search worker (``workers``: settings of both workers)."""
        workers = {**FAST, **(workers or {})}
        self.gateway = await self.harness.gateway(
            registry=workers, search={**workers, "search_timeout_s": 1.0},
            **{"admin_token": ADMIN, **api})
        self.operator = AsyncGridClient(self.gateway.api.url, token=ADMIN)
        self.harness._stoppers.append(self.operator.aclose)
        return self.gateway

    async def enroll(self, name: str, address: str | None = None,
                     bridged: bool = False) -> NodeCredentials:
        return await self.operator.enroll(self.id(name), address, bridged)

    async def node(self, credentials: NodeCredentials, inventory: dict, **overrides: object):
        return await self.harness.node(
            self.gateway, credentials.node_id, inventory, amqp_url=credentials.amqp_url,
            node_token=credentials.token, **overrides)


async def secure_harness(broker: ManagedBroker, tmp_path: Path) -> AsyncIterator[Secure]:
    """A harness whose every process runs in secure mode on ``broker``."""
    namespace = f"t-{uuid.uuid4().hex[:10]}"

    def make(cls: type, **overrides: object) -> object:
        base = {"amqp_url": broker.url, "namespace": namespace, "log_level": "WARNING",
                "node_auth": True}
        if cls is RegistrySettings:
            base.update(database_url=f"sqlite:///{tmp_path / 'registry.sqlite3'}",
                        broker_admin_url=broker.admin_url)
        return cls(**{**base, **overrides})

    harness = Harness(make)
    secure = Secure(broker, harness, Names(namespace), uuid.uuid4().hex[:6])
    try:
        yield secure
    finally:
        try:
            await harness.close()
        finally:
            await _clean(broker, secure)


async def _clean(broker: ManagedBroker, secure: Secure) -> None:
    """Delete the test's broker users and namespace."""
    admin = BrokerAdmin(broker.admin_url)
    try:
        for row in (await admin._call("GET", "/users")).json():
            if row["name"].endswith(secure.suffix):
                await admin.delete_user(row["name"])
    finally:
        await admin.close()
    connection = await aio_pika.connect(broker.url, timeout=5)
    async with connection:
        await delete_namespace(await connection.channel(), secure.names)
