"""Test harness: a real RabbitMQ and PostgreSQL, a namespace per test, services in-process.

The broker comes from testcontainers where a Docker engine exists, else from
``AMQP_URL`` (default: the local broker). A broker or database that cannot
be reached fails the run loudly: nothing is skipped.
"""

from __future__ import annotations

import asyncio
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

import aio_pika
import asyncpg
import httpx
import pytest

from shared.settings import ApiSettings, NodeSettings, RegistrySettings, SearchSettings
from shared.topology import Names, delete_namespace
from tests.harness import Gateway, Harness

LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _run(coroutine_fn: Callable[[], Awaitable[None]]) -> None:
    """Run a coroutine to completion from sync code, even inside a running loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine_fn()).result()


def _container_broker() -> tuple[str, object] | None:
    """A throwaway RabbitMQ from testcontainers, or None without a Docker engine."""
    try:
        with warnings.catch_warnings():  # testcontainers warns on import
            warnings.simplefilter("ignore", DeprecationWarning)
            from docker.errors import DockerException
            from testcontainers.community.rabbitmq import RabbitMqContainer
    except ImportError:
        return None
    try:
        container = RabbitMqContainer("rabbitmq:3.13-alpine")
        container.start()
    except DockerException:
        return None
    params = container.get_connection_params()
    url = f"amqp://guest:guest@{params.host}:{params.port}/"
    return url, container


@pytest.fixture(scope="session")
def amqp_url() -> str:
    """The broker every test uses; probed once, failing the run if unreachable."""
    container = None
    url = os.environ.get("AMQP_URL")
    if not url:
        found = _container_broker()
        url, container = found if found else (LOCAL_AMQP, None)

    async def probe() -> None:
        connection = await aio_pika.connect(url, timeout=5)
        await connection.close()

    try:
        _run(probe)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"RabbitMQ at {url} is unreachable ({exc!r}); start it with "
                    "'rabbitmq-server -detached' or set AMQP_URL", pytrace=False)
    yield url
    if container is not None:
        container.stop()


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("GRID_TEST_POSTGRES_URL", LOCAL_POSTGRES)

    async def probe() -> None:
        connection = await asyncpg.connect(url, timeout=5)
        await connection.close()

    try:
        _run(probe)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {url} is unreachable ({exc!r}); start it or set "
                    "GRID_TEST_POSTGRES_URL", pytrace=False)
    return url


@pytest.fixture
async def namespace(amqp_url: str) -> AsyncIterator[str]:
    """A namespace of the test's own; its durable queues and exchanges are removed after."""
    ns = f"t-{uuid.uuid4().hex[:10]}"
    yield ns
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        await delete_namespace(await connection.channel(), Names(ns))


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[tuple[str, str]]:
    """(url, schema) of an empty store: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'registry.sqlite3'}", "public"
        return
    url = request.getfixturevalue("postgres_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield url, schema
    connection = await asyncpg.connect(url, timeout=5)
    try:
        await connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await connection.close()


@pytest.fixture
def settings(amqp_url: str, namespace: str, tmp_path, bus_fast_path: str
             ) -> Callable[..., object]:
    """Build any service's settings for this test's broker and namespace."""

    def make(cls: type, **overrides: object) -> object:
        base = {"amqp_url": amqp_url, "namespace": namespace, "log_level": "WARNING"}
        base["bus_fast_path"] = bus_fast_path
        if cls is RegistrySettings:
            base["database_url"] = f"sqlite:///{tmp_path / 'registry.sqlite3'}"
        return cls(**{**base, **overrides})

    return make


@pytest.fixture
async def harness(settings) -> AsyncIterator[Harness]:
    """Starts services and nodes in-process on demand and stops all of them after the test."""
    harness = Harness(settings)
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture
async def gateway(harness: Harness) -> Gateway:
    """API + one registry + one search worker, on SQLite, ready."""
    return await harness.gateway()


@pytest.fixture
def client(gateway: Gateway) -> httpx.AsyncClient:
    return gateway.client


# --- the bus's two I/O paths (docs/fast-paths.md) --------------------------------------

BUS_PATHS = {"fast": "true", "stock": "false"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_bus_paths: run the test on the bus's fast paths "
                            "and again on stock aio-pika/aiormq (GRID_BUS_FAST_PATH=false)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked ``both_bus_paths`` run once per bus path: ``[fast]`` and ``[stock]``."""
    if ("bus_fast_path" in metafunc.fixturenames
            and metafunc.definition.get_closest_marker("both_bus_paths")):
        metafunc.parametrize("bus_fast_path", list(BUS_PATHS.values()), ids=list(BUS_PATHS))


@pytest.fixture
def bus_fast_path() -> str:
    """The bus path of this test's services: the environment's (default: the fast paths)."""
    return os.environ.get("GRID_BUS_FAST_PATH", "true")


__all__ = ["ApiSettings", "NodeSettings", "RegistrySettings", "SearchSettings"]
