"""``--cluster [N]``: the benchmark's own RabbitMQ nodes (3 by default, clustered), for a session.

The nodes come from :mod:`localbroker` (the test suite's private nodes), so
the machine's shared broker is never touched. The gateway then runs with
quorum work queues and every node's address, each process starting on
another node (see :func:`bench.stack.starting_at`); with one node, classic
queues: the single-node baseline, on the same footing as the cluster. Every node is killed
when the session ends, and by the ``atexit`` hook of :mod:`bench.procs` if
the benchmark itself dies.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from bench import procs
from localbroker import PrivateCluster

NODES = 3


@contextlib.asynccontextmanager
async def private_cluster(nodes: int = NODES) -> AsyncIterator[PrivateCluster]:
    """A running cluster in a temporary directory, removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="grid-bench-cluster-"))
    cluster = PrivateCluster(base, nodes)
    try:
        await cluster.start()
        # Each node leads a process group of its own: the atexit hook kills it.
        procs.LIVE.update(node.process.pid for node in cluster.nodes if node.process)
        yield cluster
    finally:
        await cluster.close()
        for node in cluster.nodes:
            if node.process is not None:
                procs.LIVE.discard(node.process.pid)
        shutil.rmtree(base, ignore_errors=True)
