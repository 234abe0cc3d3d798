"""Running the scenarios: start a stack (or use a given URL), measure each run, stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import cpu, report, scale
from bench.load import Load, LoadSpec
from bench.plan import RunSpec, Scenario
from bench.routes import route
from bench.stack import SECURE_ADMIN_TOKEN, HttpFleet, LocalStack, StackConfig
from bench.stats import RunResult, percentile, summarise
from shared.settings import NodeSettings


@dataclass
class Target:
    name: str  # local, target or compare
    url: str
    nodes: int | None  # fleet size (a label unless ``check``)
    hung: int
    pids: dict[str, list[int]] = field(default_factory=dict)
    check: bool = False  # answers are known: this benchmark started the fleet
    churn: Callable[[bool], None] | None = None  # starts / stops the fleet's inventory churn
    fleet: str = ""  # how the table marks the fleet (Scenario.fleet)


QUIET_CORES = 0.1  # "quiet": other processes busy less than this many cores


@dataclass
class Session:
    """One invocation: options, where results go, what was measured so far."""

    args: argparse.Namespace
    warmup_s: float
    path: Path
    meta: dict[str, Any]
    results: list[RunResult] = field(default_factory=list)
    progress: report.Progress = field(default_factory=report.Progress)

    def cpu_groups(self, target: Target) -> dict[str, list[int]]:
        # Every node of a cluster counts as the broker.
        return {**target.pids, "broker": cpu.brokers_of(self.args.amqp_url),
                "client": [os.getpid()]}

    def add(self, result: RunResult) -> None:
        self.results.append(result)
        report.write_json(self.path, self.meta, self.results)


async def run_scenario(session: Session, scenario: Scenario) -> None:
    args = session.args
    stack: LocalStack | None = None
    http_fleet: HttpFleet | None = None
    try:
        targets = []
        if args.target_url:
            targets.append(Target("target", args.target_url, None, 0))
        else:
            stack = await start_stack(session, scenario)
            targets.append(Target("local", stack.url, scenario.nodes, scenario.hang,
                                  stack.pid_groups(), check=True, churn=stack.churn,
                                  fleet=scenario.fleet))
            await idle_baseline(session, scenario, targets[0])
        if args.compare_url and not scenario.hang:
            if args.compare_fleet == "http" and scenario.nodes:
                http_fleet = await start_http_fleet(session, scenario)
            targets.append(Target("compare", args.compare_url, scenario.nodes or None, 0))
        for run in scenario.runs:
            for target in targets:
                if route(run.route).churn and target.churn is None:
                    continue  # another gateway's nodes cannot be made to churn
                session.add(await measure(session, target, run))
                if args.preset == "soak" and target.check:
                    session.meta.setdefault("rss_series", []).append(
                        scale.rss_mb(session.cpu_groups(target)))
        if stack is not None and args.preset == "scale":
            await liveness_probe(session, scenario, stack)
    finally:
        if http_fleet is not None:
            await http_fleet.stop()
        if stack is not None:
            session.progress.update(f"[{scenario.label}] stopping the gateway and the fleet")
            await stack.stop()
            kept = f"; logs kept in {stack.kept_logs}" if stack.kept_logs else ""
            session.progress.done(f"[{scenario.label}] stopped{kept}")


async def start_http_fleet(session: Session, scenario: Scenario) -> HttpFleet:
    fleet = HttpFleet(session.args.compare_url, scenario.nodes)
    session.progress.update(f"[{scenario.label}] joining {scenario.nodes} HTTP nodes to "
                            f"{session.args.compare_url}")
    await fleet.start()
    session.progress.done(f"[{scenario.label}] {scenario.nodes} HTTP nodes joined to the "
                          f"compared gateway")
    return fleet


async def start_stack(session: Session, scenario: Scenario) -> LocalStack:
    args = session.args
    config = StackConfig(
        amqp_url=args.amqp_url, nodes=scenario.nodes, hang=scenario.hang,
        search_workers=args.search_workers, fleet_processes=args.fleet_processes,
        fleet_connections=args.fleet_connections, fleet_client=args.fleet_client,
        fleet_versions=scenario.versions,
        join_concurrency=args.join_concurrency,
        keep_logs=args.keep_logs, queue_type="quorum" if args.cluster > 1 else None,
        secure_admin_url=args.secure)
    stack = LocalStack(config)
    session.progress.update(f"[{scenario.label}] starting the gateway and "
                            f"{len(config.fleet_split())} fleet process(es)")
    started = time.perf_counter()
    try:
        await stack.start()
    except BaseException:
        await stack.stop()
        raise
    session.meta.setdefault("join_s", {})[scenario.label] = round(stack.fleet_start_s, 2)
    session.meta.setdefault("join_cpu_s", {})[scenario.label] = stack.join_cpu_s
    spent = ", ".join(f"{name} {seconds:g}" for name, seconds in stack.join_cpu_s.items())
    session.progress.done(
        f"[{scenario.label}] ready in {time.perf_counter() - started:.1f} s "
        f"(namespace {stack.namespace}; fleet joined in {stack.fleet_start_s:.1f} s; "
        f"CPU s while joining: {spent})")
    return stack


async def idle_baseline(session: Session, scenario: Scenario, target: Target) -> None:
    """CPU the stack burns with no requests (heartbeats, polling), in ms per second."""
    seconds = session.args.idle
    if seconds <= 0:
        return
    groups = session.cpu_groups(target)
    session.progress.update(f"[{scenario.label}] measuring idle CPU for {seconds:g} s")
    before = cpu.snapshot(groups)
    await asyncio.sleep(seconds)
    after = cpu.snapshot(groups)
    rates = {name: None if value is None else round(value * 1000 / seconds, 2)
             for name, value in cpu.per_request(before, after, 1).items()}
    session.meta.setdefault("idle_cpu_ms_per_s", {})[scenario.label] = rates
    session.meta.setdefault("rss_mb", {})[scenario.label] = scale.rss_mb(groups)
    shown = ", ".join(f"{name} {value}" for name, value in rates.items() if value is not None)
    session.progress.done(f"[{scenario.label}] idle CPU, ms per second: {shown}")


async def liveness_probe(session: Session, scenario: Scenario, stack: LocalStack) -> None:
    """One node of our own: killed, how soon it is offline; changed, how soon it is found."""
    session.progress.update(f"[{scenario.label}] liveness: a node killed, a node changed")
    ttl = NodeSettings().node_ttl_s
    probe = await scale.liveness(session.args.amqp_url, stack.namespace, stack.url, ttl)
    session.meta.setdefault("liveness", {})[scenario.label] = probe
    session.progress.done(f"[{scenario.label}] killed node offline after "
                          f"{probe['offline_s']} s (TTL {ttl:g} s); inventory change found "
                          f"{probe['stale_ms']} ms after its announcement")


def _spec(session: Session, target: Target, run: RunSpec) -> LoadSpec:
    args = session.args
    return LoadSpec(route=route(run.route), concurrency=run.concurrency,
                    duration_s=run.duration_s, requests=run.requests,
                    warmup_s=session.warmup_s, timeout_s=args.timeout,
                    nodes=target.nodes if target.check else None,
                    token=secrets.token_hex(4), client=args.client,
                    admin_token=SECURE_ADMIN_TOKEN if args.secure else None)


async def measure(session: Session, target: Target, run: RunSpec) -> RunResult:
    label = f"[{target.name} {run.route} N={target.nodes or '-'} c={run.concurrency}]"
    load = Load(_spec(session, target, run), target.url)
    groups = session.cpu_groups(target)
    await settle(session, groups, label)
    churn = target.churn if route(run.route).churn else None
    if churn is not None:
        churn(True)
    try:
        session.progress.update(f"{label} warming up")
        await load.warm_up()
        before = cpu.snapshot(groups)
        ticker = asyncio.create_task(_tick(session.progress, label, load))
        try:
            samples, elapsed = await load.measure()
        finally:
            ticker.cancel()
        after = cpu.snapshot(groups)
    finally:
        if churn is not None:
            churn(False)
        await load.close()
    result = summarise(samples, elapsed,
                       cpu.per_request(before, after, len(samples.latencies_s)),
                       target=target.name, route=run.route, nodes=target.nodes,
                       hung=target.hung, concurrency=run.concurrency, fleet=target.fleet)
    session.progress.done(f"{label} {result.requests} req, {result.rps:.1f} req/s, "
                          f"p50 {result.p50_ms} ms, p99 {result.p99_ms} ms, "
                          f"errors {result.errors}, wrong answers {result.mismatches}")
    return result


async def settle(session: Session, groups: dict[str, list[int]], label: str) -> None:
    """With ``--settle S``, wait up to S seconds for other processes to leave the CPU alone."""
    deadline = time.monotonic() + session.args.settle
    while time.monotonic() < deadline:
        before = cpu.snapshot(groups)
        await asyncio.sleep(1.0)
        other = cpu.per_request(before, cpu.snapshot(groups), 1).get("other") or 0.0
        if other < QUIET_CORES:
            return
        session.progress.update(f"{label} waiting for a quiet machine: other processes "
                                f"busy {other:.2f} cores")


async def _tick(progress: report.Progress, label: str, load: Load) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            await asyncio.sleep(0.5)
            samples = load.samples
            seconds = time.perf_counter() - load.measure_started
            count = len(samples.latencies_s)
            p50 = percentile(sorted(samples.latencies_s), 50)
            progress.update(f"{label} {seconds:5.1f} s  {count} req  "
                            f"{count / seconds:7.1f} req/s  "
                            f"p50 {'-' if p50 is None else f'{p50 * 1000:.1f}'} ms  "
                            f"errors {samples.errors}")
