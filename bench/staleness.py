"""How long searches still give the old answer after a node changes its inventory version.

``python -m bench.staleness`` starts a gateway (api, registry, search worker) and a small
fleet as subprocesses on the real broker (:class:`bench.stack.LocalStack`), and one probe
node in this process with the node SDK. Each run, while clients send the same ``/search``
over and over (an answer the gateway caches), the probe node gains or loses the one tag
the search asks for (``GridNode.update_inventory``: the new answer at once, and a
heartbeat out of turn announcing the new version). A search sent after that moment which
still gives the old answer is *stale*; the window is from the change to the sending of
the last stale search. An observer queue on ``<ns>.events`` times when the announcing
heartbeat and the liveness owner's membership delta carrying the new version pass
through the broker, which splits the window into its hops.

Options: ``--runs``, ``--clients`` (searches in flight), ``--load`` (more clients sending
``/search-encrypted-model`` with a new model id each time: a broadcast to every node,
never cached), ``--nodes`` (fleet size). See docs/protocol.md, "Inventory versions".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import statistics
import time
from dataclasses import dataclass, field

import aio_pika

from bench.http import RawClient
from bench.stack import LocalStack, StackConfig
from services.node.inventory import Inventory, Tensor
from services.node.sdk import GridNode
from shared import codec
from shared.bus import Bus
from shared.contracts import Heartbeat, MembershipDelta
from shared.settings import NodeSettings
from shared.topology import DELTA_KEY, HEARTBEAT_KEY, Names

PROBE_ID = "stale-probe"
PROBE_TAG = "#stale-probe"
SEARCH_BODY = json.dumps({"query": [PROBE_TAG]}).encode()
# How long the new answer must hold before a run ends, and the bound on a run.
SETTLED_S = 0.3
RUN_BOUND_S = 5.0


def inventory(tagged: bool) -> Inventory:
    """The probe's inventory: with or without the tag the search asks for."""
    return Inventory(models=["stale-probe-model"],
                     tensors=[Tensor(id="probe", tags=[PROBE_TAG] if tagged else ["#other"])])


@dataclass(frozen=True)
class Answer:
    sent: float
    received: float
    matched: bool  # the probe node is in the answer
    cached: bool  # X-Grid-Cache: hit


@dataclass
class Observer:
    """Times the probe's heartbeats and the membership deltas as they pass the broker."""

    beats: list[tuple[float, str | None]] = field(default_factory=list)
    deltas: list[tuple[float, str | None]] = field(default_factory=list)

    async def start(self, bus: Bus, names: Names) -> None:
        channel = await bus.channel()
        exchange = await channel.declare_exchange(names.events_exchange, passive=True)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(exchange, HEARTBEAT_KEY.format(node_id=PROBE_ID))
        await queue.bind(exchange, DELTA_KEY)
        await queue.consume(self._on_message, no_ack=True)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.perf_counter()
        if message.routing_key == DELTA_KEY:
            delta = codec.decode(MembershipDelta, message.body)
            for state in delta.nodes:
                if state.node_id == PROBE_ID:
                    self.deltas.append((now, state.version))
        else:
            self.beats.append((now, codec.decode(Heartbeat, message.body).version))

    @staticmethod
    def first(events: list[tuple[float, str | None]], after: float, version: str) -> float | None:
        return next((at for at, seen in events if at >= after and seen == version), None)


async def search_forever(client: RawClient, answers: list[Answer]) -> None:
    while True:
        sent = time.perf_counter()
        response = await client.request("POST", "/search", SEARCH_BODY)
        received = time.perf_counter()
        matched = any(pair[0] == PROBE_ID for pair in json.loads(response.body))
        answers.append(Answer(sent, received, matched,
                              response.headers.get("x-grid-cache") == "hit"))


async def load_forever(client: RawClient) -> None:
    """Uncached searches that reach every node: ``encrypted_model`` for a new model id."""
    for n in itertools.count():
        body = json.dumps({"model_id": f"load-{os.getpid()}-{n}"}).encode()
        await client.request("POST", "/search-encrypted-model", body)


async def settle(client: RawClient, tagged: bool) -> None:
    """Until the search gives the current answer from a cache (bounded)."""
    deadline = time.monotonic() + RUN_BOUND_S
    while time.monotonic() < deadline:
        response = await client.request("POST", "/search", SEARCH_BODY)
        matched = any(pair[0] == PROBE_ID for pair in json.loads(response.body))
        if matched == tagged and response.headers.get("x-grid-cache") == "hit":
            return
        await asyncio.sleep(0.02)
    raise RuntimeError("the search never settled on a cached answer")


def stale_window(answers: list[Answer], changed: float, old: bool) -> tuple[list[Answer], float]:
    """The searches sent after the change that gave the old answer, and the window they span."""
    stale = [a for a in answers if a.sent >= changed and a.matched == old]
    return stale, max((a.sent - changed for a in stale), default=0.0)


async def one_run(node: GridNode, observer: Observer, clients: list[RawClient],
                  tagged: bool) -> dict:
    """Flip the probe's tag while ``clients`` search; what was stale, and when each hop passed."""
    await settle(clients[0], tagged)
    answers: list[Answer] = []
    tasks = [asyncio.create_task(search_forever(client, answers)) for client in clients]
    try:
        await asyncio.sleep(random.uniform(0.05, 0.15))  # a random phase against heartbeats
        new = inventory(not tagged)
        changed = time.perf_counter()
        await node.update_inventory(new)
        deadline = changed + RUN_BOUND_S
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
            since = time.perf_counter() - SETTLED_S
            recent = [a for a in answers if a.sent >= since]
            if since > changed and recent and all(a.matched != tagged for a in recent):
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    stale, window = stale_window(answers, changed, tagged)
    beat = Observer.first(observer.beats, changed, new.version())
    delta = Observer.first(observer.deltas, changed, new.version())
    return {"stale": len(stale), "stale_cached": sum(a.cached for a in stale),
            "window_ms": window * 1000, "searches": len(answers),
            "heartbeat_ms": None if beat is None else (beat - changed) * 1000,
            "delta_ms": None if delta is None else (delta - changed) * 1000,
            "last_stale_answered_ms": max(((a.received - changed) * 1000 for a in stale),
                                          default=0.0)}


def summary(runs: list[dict]) -> str:
    def stats(key: str) -> str:
        values = sorted(r[key] for r in runs if r[key] is not None)
        if not values:
            return f"{key}: none"
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        return (f"{key}: median {statistics.median(values):.1f}, p90 {p90:.1f}, "
                f"max {values[-1]:.1f}")
    with_stale = sum(1 for r in runs if r["stale"])
    return "\n".join([f"runs {len(runs)}, with a stale answer {with_stale}, stale answers "
                      f"{sum(r['stale'] for r in runs)} ({sum(r['stale_cached'] for r in runs)}"
                      f" from a cache)", stats("window_ms"), stats("heartbeat_ms"),
                      stats("delta_ms")])


async def main(args: argparse.Namespace) -> None:
    stack = LocalStack(StackConfig(amqp_url=args.amqp_url, nodes=args.nodes))
    await stack.start()
    settings = NodeSettings(amqp_url=args.amqp_url, namespace=stack.namespace,
                            gateway_url=stack.url)
    tagged = True
    node = GridNode(settings, PROBE_ID, "http://stale-probe.bench:5000", inventory(tagged))
    observer_bus = Bus(settings, "bench-staleness-observer")
    clients = [RawClient(stack.url) for _ in range(args.clients)]
    loaders = [RawClient(stack.url) for _ in range(args.load)]
    load_tasks: list[asyncio.Task] = []
    try:
        await observer_bus.connect()
        observer = Observer()
        await observer.start(observer_bus, Names(stack.namespace))
        await node.start()
        load_tasks = [asyncio.create_task(load_forever(client)) for client in loaders]
        runs = []
        for number in range(args.runs):
            run = await one_run(node, observer, clients, tagged)
            tagged = not tagged
            runs.append(run)
            print(f"run {number + 1:2d}: " + ", ".join(
                f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in run.items()),
                flush=True)
        print(summary(runs))
    finally:
        for task in load_tasks:
            task.cancel()
        await asyncio.gather(*load_tasks, return_exceptions=True)
        for client in clients + loaders:
            with contextlib.suppress(Exception):
                await client.close()
        await node.stop(leave=True)
        await observer_bus.close()
        await stack.stop()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.staleness", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--amqp-url", default=os.environ.get(
        "AMQP_URL", "amqp://guest:guest@localhost:5672/"))
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--clients", type=int, default=4, help="searches in flight")
    p.add_argument("--load", type=int, default=0,
                   help="clients sending uncached broadcast searches meanwhile")
    p.add_argument("--nodes", type=int, default=10, help="simulated nodes besides the probe")
    return p


if __name__ == "__main__":
    asyncio.run(main(parser().parse_args()))
