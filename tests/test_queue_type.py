"""GRID_QUEUE_TYPE: quorum work queues serve like classic ones; a mismatch is refused plainly.

Runs on the test broker (one node: quorum queues with one member); the
cluster test (test_cluster.py) shows them replicated across three nodes.
"""

from __future__ import annotations

import aio_pika
import pytest

from services.registry.worker import RegistryWorker
from shared.settings import RegistrySettings
from shared.topology import Names, QueueMismatch
from tests.harness import Harness

QUORUM = {"queue_type": "quorum"}
ALICE = {"node-id": "alice", "node-address": "http://alice:5000"}


async def queue_type_of(amqp_url: str, queue: str, arguments: dict) -> bool:
    """Whether ``queue`` exists with exactly ``arguments`` (a passive check cannot tell)."""
    connection = await aio_pika.connect(amqp_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        try:
            await channel.declare_queue(queue, durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed:
            return False
        return True


async def test_the_gateway_serves_on_quorum_work_queues(
        harness: Harness, amqp_url: str, namespace: str) -> None:
    gateway = await harness.gateway(registry=QUORUM, search=QUORUM, **QUORUM)
    await harness.node(gateway, "bob", {"models": ["m"], "tensors": []})
    await gateway.wait_search_sees(1)
    response = await gateway.client.post("/join", json=ALICE)
    assert (response.status_code, response.json()) == (200, {"message": "Successfully Connected!"})
    response = await gateway.client.post("/search-model", json={"model_id": "m"})
    assert response.json() == [["bob", "http://bob:5000"]]
    names = Names(namespace)
    for queue in names.work_queues():
        assert await queue_type_of(amqp_url, queue, {
            "x-dead-letter-exchange": names.dead_letter_exchange, "x-queue-type": "quorum"})


async def test_a_worker_with_another_queue_type_is_refused_plainly(
        harness: Harness, settings) -> None:
    await harness.registry()  # classic work queues
    other = RegistryWorker(settings(RegistrySettings, **QUORUM))
    try:
        with pytest.raises(QueueMismatch, match="another GRID_QUEUE_TYPE"):
            await other.start()
    finally:
        await other.stop()
