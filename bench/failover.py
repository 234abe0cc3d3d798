"""``python -m bench.failover``: how long the gateway is disturbed when a broker node dies.

Starts a private 3-node cluster (:mod:`bench.cluster`), the gateway on it
with quorum work queues and a fleet of SDK nodes (which fail over, unlike the
wire fleet), then drives steady ``/search`` and ``/join`` traffic and kills
one broker node (SIGKILL) mid-run. Every answer is classified: normal (a 200;
for a search, from every node it asked, with the expected answer) or not.

Figures, in seconds from the kill, for each route: ``first_normal`` (the
first normal answer), ``outage`` (the end of the last abnormal answer: from
then on, every answer was normal), and the abnormal answers by status. Node 0
holds the api's connection, node 1 the registry's (and the leader of the
registry's quorum queue, which the registry declared), node 2 the search
worker's and the search queue's leader; fleet process ``k`` starts on node ``k``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass

import orjson

from bench import report
from bench.cluster import private_cluster
from bench.http import RawClient
from bench.routes import Route, route
from bench.stack import LocalStack, StackConfig


@dataclass
class Answer:
    route: str
    started: float  # time.monotonic()
    ended: float
    status: str  # an HTTP status, or the exception's name
    normal: bool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.failover", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("--nodes", type=int, default=10, help="simulated grid nodes (SDK fleet)")
    p.add_argument("--kill", type=int, choices=(0, 1, 2), default=1, help="broker node to kill")
    p.add_argument("--clients", type=int, default=4, help="clients per route, in flight")
    p.add_argument("--before", type=float, default=5.0, help="seconds of traffic before the kill")
    p.add_argument("--after", type=float, default=15.0, help="seconds of traffic after it")
    p.add_argument("--timeout", type=float, default=10.0, help="client timeout per request")
    return p.parse_args(argv)


def normal(r: Route, k: int, status: int, headers: dict[str, str], body: bytes,
           nodes: int) -> bool:
    if status != 200:
        return False
    if r.search and headers.get("x-grid-nodes-answered") != headers.get(
            "x-grid-nodes-asked"):
        return False
    return r.check is None or r.check(k, orjson.loads(body), nodes)


async def client_loop(url: str, r: Route, number: int, nodes: int, stop: asyncio.Event,
                      answers: list[Answer], timeout_s: float) -> None:
    client, k = RawClient(url), number * 1_000_000
    try:
        while not stop.is_set():
            k += 1
            started = time.monotonic()
            try:
                async with asyncio.timeout(timeout_s):
                    response = await client.request(r.method, r.path, r.body(k, "failover"))
                status = str(response.status)
                ok = normal(r, k, response.status, response.headers, response.body, nodes)
            except Exception as exc:  # noqa: BLE001 - every failure is a data point
                status, ok = type(exc).__name__, False
            answers.append(Answer(r.name, started, time.monotonic(), status, ok))
    finally:
        await client.close()


def summarise(answers: list[Answer], killed_at: float) -> dict:
    """Figures relative to the kill (answers that ended before it count as before)."""
    after = [a for a in answers if a.ended >= killed_at]
    abnormal = [a for a in after if not a.normal]
    first = {name: min((a.ended - killed_at for a in after if a.route == name and a.normal),
                       default=None) for name in ("search", "join")}
    before = [a for a in answers if a.ended < killed_at]
    return {
        "answers": len(answers), "normal_before_kill": sum(a.normal for a in before),
        "abnormal_before_kill": sum(not a.normal for a in before), "after_kill": len(after),
        "first_normal_s": {k: None if v is None else round(v, 3) for k, v in first.items()},
        "outage_s": {name: round(max((a.ended - killed_at for a in abnormal
                                      if a.route == name), default=0.0), 3)
                     for name in ("search", "join")},
        "abnormal": dict(Counter(f"{a.route} {a.status}" for a in abnormal)),
        "max_latency_s": round(max((a.ended - a.started for a in answers), default=0.0), 3),
    }


async def run(args: argparse.Namespace) -> dict:
    async with private_cluster() as cluster:
        stack = LocalStack(StackConfig(amqp_url=cluster.url_list(), nodes=args.nodes,
                                       fleet_client="sdk", queue_type="quorum"))
        try:
            await stack.start()
            answers: list[Answer] = []
            stop = asyncio.Event()
            loops = [asyncio.create_task(client_loop(
                stack.url, route(name), n, args.nodes, stop, answers, args.timeout))
                for name in ("search", "join") for n in range(args.clients)]
            await asyncio.sleep(args.before)
            killed_at = time.monotonic()
            cluster.nodes[args.kill].kill()
            await asyncio.sleep(args.after)
            stop.set()
            await asyncio.gather(*loops)
        finally:
            await stack.stop()
    return {"killed_node": args.kill, "nodes": args.nodes, "clients_per_route": args.clients,
            "load_average": os.getloadavg(), **summarise(answers, killed_at)}


def main() -> None:
    args = parse_args()
    result = asyncio.run(run(args))
    path = report.results_path("failover")
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    path.write_text(text)
    print(text)
    print(f"results: {path}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
