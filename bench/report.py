"""Showing results: the progress line, the tables, the target checks and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench.stats import RunResult

RESULTS_DIR = Path(__file__).resolve().parent / "results"
CPU_GROUPS = ("broker", "api", "registry", "search", "fleet", "client", "other", "machine")
# A run is flagged when processes outside the benchmark took more than this share of the CPU.
NOISY_SHARE = 0.25


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
            "cpu_model": model, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_at_start": os.getloadavg()}


def gateway_revision() -> str | None:
    """The checked-out commit, read from .git without running git."""
    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


class Progress:
    """One status line, rewritten in place with a carriage return."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.width = 0

    def update(self, text: str) -> None:
        self.stream.write("\r" + text.ljust(self.width))
        self.stream.flush()
        self.width = len(text)

    def done(self, text: str) -> None:
        self.update(text)
        self.stream.write("\n")
        self.stream.flush()
        self.width = 0


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _cpu_ms(result: RunResult, group: str) -> str:
    value = result.cpu_s_per_request.get(group)
    return "-" if value is None else f"{value * 1000:.2f}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}"


def noisy(result: RunResult) -> bool:
    other = result.cpu_s_per_request.get("other")
    machine = result.cpu_s_per_request.get("machine")
    return bool(other and machine and other > NOISY_SHARE * machine)


def _nodes(result: RunResult) -> str:
    if not result.nodes:
        return "-"
    return f"{result.nodes}" + (f"h{result.hung}" if result.hung else "") + result.fleet


HEADER = (f"{'target':<7} {'route':<16} {'N':>6} {'c':>3} {'req/s':>7} {'p50':>7} {'p90':>7} "
          f"{'p99':>7} {'max':>7} {'err':>4} {'part':>4} {'bad':>4} {'asked':>6} {'answ':>6} "
          f"{'hit%':>5} |"
          + " ".join(f"{g[:7]:>7}" for g in CPU_GROUPS) + "  !")


def row(result: RunResult) -> str:
    return (f"{result.target:<7} {result.route:<16} {_nodes(result):>6} {result.concurrency:>3} "
            f"{result.rps:>7.1f} {_num(result.p50_ms):>7} {_num(result.p90_ms):>7} "
            f"{_num(result.p99_ms):>7} {_num(result.max_ms):>7} {result.errors:>4} "
            f"{result.partial:>4} {result.mismatches:>4} {_num(result.asked_mean):>6} "
            f"{_num(result.answered_mean):>6} {_percent(result.hit_rate):>5} |"
            + " ".join(f"{_cpu_ms(result, g):>7}" for g in CPU_GROUPS)
            + ("  !" if noisy(result) else ""))


def table(results: list[RunResult]) -> str:
    lines = ["latency in ms | CPU ms per request (N 100h1: 100 nodes, one hung; 100nv: 100 "
             "nodes announcing no version)", HEADER,
             "-" * len(HEADER)]
    lines += [row(result) for result in results]
    if any(map(noisy, results)):
        lines.append(f"! other processes used more than {NOISY_SHARE:.0%} of the machine's CPU "
                     "during the run: its figures are not reliable")
    return "\n".join(lines)


def side_by_side(results: list[RunResult]) -> str:
    """Local gateway next to the compared one, for each (route, N, c)."""
    pairs: dict[tuple, dict[str, RunResult]] = {}
    for result in results:
        key = (result.route, result.nodes, result.hung, result.concurrency)
        pairs.setdefault(key, {})[result.target] = result
    head = (f"{'route':<16} {'N':>6} {'c':>3} | {'req/s':>8} {'p50':>8} {'p99':>8} {'err':>5} | "
            f"{'req/s':>8} {'p50':>8} {'p99':>8} {'err':>5}")
    lines = ["local gateway | compared gateway (latency in ms)", head, "-" * len(head)]
    for (name, _, _, c), both in pairs.items():
        cells = []
        for target in ("local", "compare"):
            r = both.get(target)
            cells.append("-".rjust(33) if r is None else
                         f"{r.rps:>8.1f} {_num(r.p50_ms):>8} {_num(r.p99_ms):>8} {r.errors:>5}")
        anyone = next(iter(both.values()))
        lines.append(f"{name:<16} {_nodes(anyone):>6} {c:>3} | {cells[0]} | {cells[1]}")
    return "\n".join(lines)


def _find(results: list[RunResult], route: str, nodes: int, c: int,
          fleet: str = "") -> RunResult | None:
    """The local run of ``route`` on a fleet of ``nodes`` without hung nodes."""
    for r in results:
        if ((r.target, r.route, r.nodes, r.concurrency, r.hung, r.fleet)
                == ("local", route, nodes, c, 0, fleet)):
            return r
    return None


def target_checks(results: list[RunResult], search_timeout_s: float) -> list[str]:
    """The project's performance targets, for the runs that measured them."""
    lines = []
    for route, nodes, c, fleet, field, op, limit in TARGETS:
        r = _find(results, route, nodes, c, fleet=fleet)
        if r is not None:
            value = getattr(r, field)
            ok = value is not None and (value <= limit if op == "<=" else value >= limit)
            lines.append(f"{'PASS' if ok else 'FAIL'}  {route} N={nodes}{fleet} c={c}: "
                         f"{field} {_num(value)} {op} {limit:g}")
    lines += _churn_checks(results)
    limit_ms = search_timeout_s * 1000 + 50
    for r in results:
        if r.target == "local" and r.hung and r.route == "search":
            ok = r.errors == 0 and r.max_ms is not None and r.max_ms <= limit_ms
            lines.append(f"{'PASS' if ok else 'FAIL'}  POST /search N={r.nodes} with {r.hung} "
                         f"hung, c={r.concurrency}: max {_num(r.max_ms)} ms <= {limit_ms:g}, "
                         f"errors {r.errors}")
    return lines


# (route, N, c, fleet, field, op, limit): "nv" fleets announce no version, so every
# search is a broadcast (the fan-out itself).
TARGETS = [
    ("search", 10, 1, "", "p50_ms", "<=", 5.0),
    ("search", 10, 16, "", "rps", ">=", 250.0),
    ("search", 100, 1, "nv", "p50_ms", "<=", 35.0),
    ("search", 100, 16, "nv", "rps", ">=", 30.0),
    ("search", 1000, 1, "nv", "p50_ms", "<=", 400.0),
    ("search-repeated", 100, 16, "", "rps", ">=", 2000.0),
    ("search-repeated", 100, 16, "", "p50_ms", "<=", 5.0),
    ("search-repeated", 1000, 16, "", "rps", ">=", 1000.0),
    ("search-distinct", 1000, 16, "", "rps", ">=", 25.0),
    # The scale preset (issue: ten thousand nodes).
    ("connected", 1000, 16, "", "rps", ">=", 3000.0),
    ("connected", 10000, 16, "", "rps", ">=", 1000.0),
    ("search", 10000, 16, "", "rps", ">=", 2000.0),
    ("search-model", 10000, 16, "", "rps", ">=", 1000.0),
    ("search-distinct", 10000, 16, "", "rps", ">=", 100.0),
]


def _churn_checks(results: list[RunResult]) -> list[str]:
    """search-churn no worse than searches that are all broadcasts, at the same N and c."""
    lines = []
    for churn in results:
        if churn.target != "local" or churn.route != "search-churn":
            continue
        fanout = _find(results, "search", churn.nodes, churn.concurrency, fleet="nv")
        if fanout is not None:
            ok = churn.rps >= fanout.rps
            lines.append(f"{'PASS' if ok else 'FAIL'}  search-churn N={churn.nodes} "
                         f"c={churn.concurrency}: rps {churn.rps:.1f} >= {fanout.rps:.1f} "
                         f"(search, every one a broadcast)")
    return lines


def results_path(label: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    return RESULTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}.json"


def write_json(path: Path, meta: dict[str, Any], results: list[RunResult]) -> None:
    """Written after every run, so an interrupted benchmark keeps what it measured."""
    document = {**meta, "results": [r.to_json() for r in results]}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
