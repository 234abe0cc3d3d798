"""What to run: command-line options and presets, turned into scenarios of runs.

A scenario is one gateway plus one fleet (N nodes, some maybe hung); its
runs are (route, concurrency, duration or request count), in route order
(joins last, since they grow the registry that /connected-nodes lists).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from bench.routes import ORDER, route

DEFAULT_ROUTES = "search,tags,search-model,join,connected"


@dataclass(frozen=True)
class RunSpec:
    route: str
    concurrency: int
    duration_s: float | None
    requests: int | None = None


@dataclass
class Scenario:
    nodes: int
    hang: int = 0
    runs: list[RunSpec] = field(default_factory=list)
    # False: the fleet announces no inventory version, so every search is a broadcast.
    versions: bool = True

    @property
    def label(self) -> str:
        if not self.nodes:
            return "external gateway"
        return (f"N={self.nodes}" + (f" hung={self.hang}" if self.hang else "")
                + ("" if self.versions else " unversioned"))

    @property
    def fleet(self) -> str:
        """How the results table marks the fleet: ``nv`` for unversioned nodes."""
        return "" if self.versions else "nv"


def _csv_ints(text: str) -> list[int]:
    values = [int(part) for part in text.split(",") if part.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _csv_routes(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    try:
        for name in names:
            route(name)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return names


def _connections(text: str) -> int | str:
    if text == "per-node":
        return text
    try:
        return _csv_ints(text)[0]
    except (argparse.ArgumentTypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a positive integer or per-node, "
                                         f"got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench",
                                description="Benchmark the grid gateway's HTTP API.")
    p.add_argument("--preset", choices=["quick", "full", "scale", "soak"],
                   help="a predefined matrix (overrides --nodes/--routes/--concurrency)")
    p.add_argument("--scale-sizes", type=_csv_ints, default=list(SCALE_SIZES),
                   help="fleet sizes of --preset scale (default 100,1000,10000)")
    p.add_argument("--nodes", type=_csv_ints, default=[10, 100], help="fleet sizes, e.g. 10,100")
    p.add_argument("--concurrency", type=_csv_ints, default=[1, 16], help="e.g. 1,16")
    p.add_argument("--routes", type=_csv_routes, default=_csv_routes(DEFAULT_ROUTES),
                   help=f"comma-separated, from: {', '.join(ORDER)}")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--requests", type=int, help="requests per run (instead of --duration)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per run")
    p.add_argument("--idle", type=float, default=2.0,
                   help="seconds of idle CPU measured after each stack starts (0: skip)")
    p.add_argument("--settle", type=float, default=0.0,
                   help="before each run, wait up to this many seconds for other processes "
                        "to use less than 0.1 core")
    p.add_argument("--timeout", type=float, default=30.0, help="client timeout per request")
    p.add_argument("--hang", type=int, default=0, help="hung nodes in each fleet")
    p.add_argument("--search-workers", type=int, default=1, help="search worker processes")
    p.add_argument("--fleet-processes", type=int, default=0,
                   help="fleet processes (0: one per 250 nodes, at least 2)")
    p.add_argument("--fleet-connections", type=_connections, default=2,
                   help="AMQP connections (sdk) or channels (wire) per fleet process, or "
                        "per-node: one connection per simulated node (wire), as real nodes have")
    p.add_argument("--fleet-versions", choices=["on", "off"], default="on",
                   help="off: the nodes announce no inventory version, so every search is "
                        "a broadcast (the search worker cannot cache)")
    p.add_argument("--fleet-client", choices=["wire", "sdk"], default="wire",
                   help="the simulated nodes' AMQP client: bench.wire, or the node SDK")
    p.add_argument("--secure", metavar="BROKER_ADMIN_URL", default=None,
                   help="secure mode (GRID_NODE_AUTH): the registry enrolls every simulated "
                        "node through this management API URL, each node runs with its own "
                        "broker user and connection; needs --fleet-client sdk")
    p.add_argument("--join-concurrency", type=int, default=8,
                   help="nodes joining at once, per fleet process")
    p.add_argument("--client", choices=["raw", "httpx"], default="raw",
                   help="HTTP client of the load generator")
    p.add_argument("--amqp-url", default="amqp://guest:guest@localhost:5672/",
                   help="the broker; several comma-separated URLs for a cluster's nodes")
    p.add_argument("--cluster", type=int, nargs="?", const=3, default=0, metavar="N",
                   help="start N private RabbitMQ nodes (default 3; needs rabbitmq-server), "
                        "clustered, and run the gateway on them instead of --amqp-url: quorum "
                        "work queues, or classic with N = 1 (a single-node baseline)")
    p.add_argument("--target-url", help="benchmark this gateway instead of starting one")
    p.add_argument("--compare-url", help="also benchmark this gateway, side by side")
    p.add_argument("--compare-fleet", choices=["none", "http"], default="none",
                   help="http: give the compared gateway the same fleet as HTTP-only nodes "
                        "(bench.httpfleet), joined to it for each fleet size")
    p.add_argument("--output", help="results file (default: bench/results/<time>-<label>.json)")
    p.add_argument("--keep-logs", action="store_true", help="keep the services' log files")
    return p


def ordered_runs(routes: list[str], concurrencies: list[int], duration: float | None,
                 requests: int | None) -> list[RunSpec]:
    ranked = sorted(routes, key=lambda name: ORDER.index(name))
    return [RunSpec(name, c, duration, requests) for name in ranked for c in concurrencies]


def custom(args: argparse.Namespace) -> list[Scenario]:
    duration = None if args.requests else args.duration
    runs = ordered_runs(args.routes, args.concurrency, duration, args.requests)
    return [Scenario(nodes, args.hang, list(runs), versions=args.fleet_versions == "on")
            for nodes in args.nodes]


# The scale preset: the main routes at each size, and what liveness costs idle.
SCALE_SIZES = (100, 1000, 10000)
SCALE_ROUTES = ["search", "search-distinct", "search-model", "connected"]
SCALE_FLEET_PROCESSES = 4


def scale_preset(sizes: list[int]) -> tuple[list[Scenario], float]:
    """N = 100, 1,000, 10,000: idle CPU and RSS, join storm, the main routes at c = 16."""
    runs = ordered_runs(SCALE_ROUTES, [16], 5.0, None)
    return [Scenario(nodes, 0, list(runs)) for nodes in sizes], 1.0


SOAK_NODES, SOAK_MINUTES = 1000, 10


def soak_preset() -> tuple[list[Scenario], float]:
    """Ten one-minute runs of distinct searches under churn: RSS after each (minute 1 vs 10)."""
    return [Scenario(SOAK_NODES, 0, [RunSpec("soak", 16, 60.0)] * SOAK_MINUTES)], 1.0


def preset(name: str) -> tuple[list[Scenario], float]:
    """Scenarios of a preset, and its warm-up seconds."""
    quick = name == "quick"
    duration = 3.0 if quick else 10.0
    sizes = (10, 100) if quick else (10, 100, 1000)
    scenarios = [Scenario(nodes, 0, _preset_runs(nodes, duration)) for nodes in sizes]
    # The fan-out itself: nodes that announce no version are asked every time.
    scenarios += [Scenario(nodes, 0, ordered_runs(["search"], [1, 16], duration, None),
                           versions=False) for nodes in sizes if nodes >= 100]
    hung_runs = [RunSpec("search", 1, None, 3 if quick else 10),
                 RunSpec("search", 16, 4.0 if quick else duration)]
    scenarios.append(Scenario(100, 1, hung_runs))
    return scenarios, (0.5 if quick else 1.0)


def _preset_runs(nodes: int, duration: float) -> list[RunSpec]:
    runs = ordered_runs([*DEFAULT_ROUTES.split(","), "search-distinct"], [1, 16], duration,
                        None)
    extra = []
    if nodes >= 100:  # the cache: a few queries cycling, and the same under inventory churn
        extra += [RunSpec("search-repeated", 16, duration), RunSpec("search-churn", 16, duration)]
    if nodes == 100:  # coalescing: identical vs distinct searches, 32 in flight
        extra += [RunSpec("search-identical", 32, duration),
                  RunSpec("search-distinct", 32, duration)]
    first_join = next(i for i, run in enumerate(runs) if run.route == "join")
    runs[first_join:first_join] = extra
    return runs


def for_target(scenarios: list[Scenario]) -> list[Scenario]:
    """Another gateway has no fleet to size or hang: one scenario, runs deduplicated."""
    runs: list[RunSpec] = []
    for scenario in scenarios:
        if not scenario.hang:
            runs += [run for run in scenario.runs if run not in runs]
    return [Scenario(0, 0, runs)]


def build(args: argparse.Namespace) -> tuple[list[Scenario], float]:
    if args.preset == "scale":
        scenarios, warmup = scale_preset(args.scale_sizes)
        args.fleet_processes = args.fleet_processes or SCALE_FLEET_PROCESSES
        args.idle = max(args.idle, 10.0)
    elif args.preset == "soak":
        scenarios, warmup = soak_preset()
        args.fleet_processes = args.fleet_processes or SCALE_FLEET_PROCESSES
    elif args.preset:
        scenarios, warmup = preset(args.preset)
    else:
        scenarios, warmup = custom(args), args.warmup
    if args.target_url:
        scenarios = for_target(scenarios)
    return scenarios, warmup
