"""One private broker with the management plugin for every secure-mode test, and a gateway
in secure mode on it for each test (see :mod:`tests.secure.gateway`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.secure.gateway import Secure, secure_harness, start_managed_broker
from tests.secure.managed_broker import ManagedBroker


@pytest.fixture(scope="package")
def managed_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ManagedBroker]:
    yield from start_managed_broker(tmp_path_factory.mktemp("managed-broker"))


@pytest.fixture
async def secure(managed_broker: ManagedBroker, tmp_path: Path) -> AsyncIterator[Secure]:
    async for value in secure_harness(managed_broker, tmp_path):
        yield value
