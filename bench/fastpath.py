"""``python -m bench.fastpath``: the bus's fast paths against stock aio-pika/aiormq, A/B.

Runs ``python -m bench`` once per ``GRID_BUS_FAST_PATH`` value, the values
back to back in each round (so that a change in the machine's load hits them
alike), for several rounds, then prints the median of each figure per value
side by side. Every other argument goes to ``python -m bench`` unchanged::

    python -m bench.fastpath --rounds 3 --modes false,reader,writer,true -- \\
        --nodes 100,1000 --concurrency 16 --routes search-distinct --duration 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FIGURES = ("rps", "p50_ms", "p99_ms")
CPU = ("api", "search", "fleet", "broker")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.fastpath", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="runs of every mode")
    p.add_argument("--modes", default="false,true", help="GRID_BUS_FAST_PATH values to compare")
    p.add_argument("bench_args", nargs=argparse.REMAINDER, help="-- then python -m bench's")
    return p


def run_once(mode: str, bench_args: list[str], out: Path) -> list[dict]:
    """One ``python -m bench`` with ``GRID_BUS_FAST_PATH=mode``; its results."""
    env = {**os.environ, "GRID_BUS_FAST_PATH": mode}
    print(f"--- GRID_BUS_FAST_PATH={mode} ({os.getloadavg()[0]:.2f} load)", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "bench", *bench_args, "--output", str(out)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())["results"]


def row(runs: list[dict]) -> list[str]:
    """Median figures of the runs of one mode, route and fleet size."""
    cells = [f"{statistics.median(r[key] for r in runs):.1f}" for key in FIGURES]
    cells += [f"{statistics.median(r['cpu_s_per_request'][p] for r in runs) * 1000:.2f}"
              for p in CPU]
    return cells


def table(collected: dict[tuple, list[dict]]) -> str:
    """Markdown: one line per route, fleet size and mode, medians of every round."""
    head = ["route", "N", "c", "GRID_BUS_FAST_PATH", "runs", "req/s", "p50 ms", "p99 ms",
            *(f"{p} CPU ms/req" for p in CPU)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (route, nodes, concurrency, mode), runs in sorted(collected.items()):
        cells = [route, str(nodes), str(concurrency), mode, str(len(runs)), *row(runs)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    bench_args = [a for a in args.bench_args if a != "--"]
    collected: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_no in range(args.rounds):
            for mode in args.modes.split(","):
                out = Path(tmp) / f"{round_no}-{mode}.json"
                for result in run_once(mode, bench_args, out):
                    key = (result["route"], result["nodes"], result["concurrency"], mode)
                    collected.setdefault(key, []).append(result)
    print(table(collected))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
