"""A RabbitMQ cluster of one's own: a few :class:`PrivateBroker` nodes joined together.

Every node gets its own name, ports and data directory, and all share one
Erlang cookie, which is what lets them (and ``rabbitmqctl``) talk to each
other. The nodes start in parallel; then every node but the first leaves
its fresh one-node cluster and joins the first (``stop_app``,
``join_cluster``, ``start_app``), as an operator does by hand.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

from localbroker.node import START_S, PrivateBroker


class PrivateCluster:
    """``size`` clustered nodes under ``base``; ``close`` leaves none running."""

    def __init__(self, base: Path, size: int = 3) -> None:
        cookie = secrets.token_hex(16).upper()
        self.nodes = [PrivateBroker(base / f"node-{index}", cookie=cookie)
                      for index in range(size)]

    def url_list(self, first: int = 0) -> str:
        """``AMQP_URL`` naming every node, starting with node ``first`` (then the next ones).

        Giving each process a different ``first`` spreads the connections
        over the nodes, as a load balancer in front of a cluster would.
        """
        count = len(self.nodes)
        return ",".join(self.nodes[(first + step) % count].url for step in range(count))

    async def start(self, within: float = START_S) -> None:
        """Start every node, cluster them, and check that each sees all the others."""
        await asyncio.gather(*(node.start(within) for node in self.nodes))
        seed, others = self.nodes[0], self.nodes[1:]
        await asyncio.gather(*(node.ctl_ok("stop_app") for node in others))
        for node in others:  # one schema change at a time on the seed
            await node.ctl_ok("join_cluster", seed.node)
        await asyncio.gather(*(node.ctl_ok("start_app") for node in others))
        await asyncio.gather(*(node.wait_for_amqp(within) for node in others))
        running = await self.running_nodes(seed)
        if running != {node.node for node in self.nodes}:
            raise RuntimeError(f"the cluster did not form: running nodes {sorted(running)}")

    async def running_nodes(self, via: PrivateBroker) -> set[str]:
        """The nodes ``via`` sees running in its cluster."""
        output = await via.ctl_ok("cluster_status", "--formatter", "json")
        return set(json.loads(output[output.index("{"):])["running_nodes"])

    async def close(self) -> None:
        """Kill every node: their data is thrown away, so nothing needs a clean stop."""
        for node in self.nodes:
            node.kill()
