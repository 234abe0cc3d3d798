"""A private RabbitMQ node with the management plugin, for enrollment and hostile-node tests.

Like every private broker (:mod:`localbroker`), it has its own name, ports and
data directory and listens on 127.0.0.1 only; the plugin is enabled for this
node alone (its own ``enabled_plugins`` file), on a free port of its own.
Its ``guest`` user is an administrator, and guest may log in from 127.0.0.1,
so the management API is reached as ``http://guest:guest@127.0.0.1:<port>``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from localbroker import PrivateBroker, free_ports
from localbroker.node import START_S


class ManagedBroker(PrivateBroker):
    """A :class:`PrivateBroker` serving the management HTTP API too."""

    def __init__(self, base: Path) -> None:
        super().__init__(base)
        (self.management_port,) = free_ports(1)
        (base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (base / "rabbitmq.conf").write_text(
            f"management.tcp.port = {self.management_port}\n"
            "management.tcp.ip = 127.0.0.1\n")
        self.admin_url = f"http://guest:guest@127.0.0.1:{self.management_port}"

    async def start(self, within: float = START_S) -> None:
        """Start, and wait until both AMQP and the management API answer."""
        started = time.monotonic()
        await super().start(within)
        await self.wait_for_management(within - (time.monotonic() - started))

    async def wait_for_management(self, within: float) -> None:
        deadline = time.monotonic() + max(within, 5.0)
        url = f"http://127.0.0.1:{self.management_port}/api/overview"
        async with httpx.AsyncClient(auth=("guest", "guest"), timeout=2) as http:
            while True:
                try:
                    if (await http.get(url)).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or not self.running:
                    raise RuntimeError(f"management API not up:\n{self.output_tail()}")
                await asyncio.sleep(0.2)

    def user_url(self, user: str, password: str) -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/"
