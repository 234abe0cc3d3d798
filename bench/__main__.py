"""``python -m bench``: benchmark the grid gateway (see bench/README.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from bench import plan, report, scale
from bench.cluster import private_cluster
from bench.runner import Session, run_scenario
from shared.settings import SearchSettings, split_amqp_urls


def _meta(argv: list[str], scenarios: list[plan.Scenario]) -> dict:
    return {"started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": argv,
            "machine": report.machine(), "gateway_revision": report.gateway_revision(),
            "search_timeout_s": SearchSettings().search_timeout_s,
            "scenarios": [s.label for s in scenarios]}


def _label(args) -> str:
    if args.preset:
        return args.preset
    return "target" if args.target_url else "custom"


async def main(argv: list[str]) -> int:
    args = plan.parser().parse_args(argv)
    scenarios, warmup = plan.build(args)
    path = Path(args.output) if args.output else report.results_path(_label(args))
    task = asyncio.current_task()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    async with _broker(args):
        session = Session(args, warmup, path, _meta(argv, scenarios))
        session.meta["broker"] = _broker_label(args)
        try:
            for scenario in scenarios:
                await run_scenario(session, scenario)
        finally:
            finish(session)
    return 0


@contextlib.asynccontextmanager
async def _broker(args) -> AsyncIterator[None]:
    """With ``--cluster N``, N private nodes for the session, their URLs in ``args.amqp_url``."""
    if not args.cluster:
        yield
        return
    print(f"starting {args.cluster} private RabbitMQ node(s) ...", file=sys.stderr)
    async with private_cluster(args.cluster) as cluster:
        args.amqp_url = cluster.url_list()
        yield


def _broker_label(args) -> str:
    if args.cluster > 1:
        return f"private {args.cluster}-node cluster, quorum work queues"
    if args.cluster == 1:
        return "private single node, classic work queues"
    return f"{len(split_amqp_urls(args.amqp_url))} address(es) from --amqp-url"


def finish(session: Session) -> None:
    if not session.results:
        return
    print()
    print(report.table(session.results))
    if session.args.compare_url:
        print()
        print(report.side_by_side(session.results))
    sizes = scale.growth(session.meta)
    if sizes:
        print("\n" + "\n".join(sizes))
    checks = report.target_checks(session.results, session.meta["search_timeout_s"])
    checks += scale.checks(session.meta)
    if checks:
        print("\ntargets:\n" + "\n".join(checks))
    print(f"\nresults: {session.path}")


def run() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        sys.exit(runner(main(sys.argv[1:])))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\ninterrupted: everything started was stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    run()
