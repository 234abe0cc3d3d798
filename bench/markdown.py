"""``python -m bench.markdown RESULTS.json``: a benchmark run as docs/performance.md's table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

CPU_GROUPS = ("broker", "api", "registry", "search", "fleet", "machine")
HEAD = ("route", "N", "c", "req/s", "p50", "p99", "max", "err", "part", "answered", "hit%",
        *CPU_GROUPS)


def nodes(result: dict) -> str:
    hung = f"h{result['hung']}" if result["hung"] else ""
    return f"{result['nodes']}{hung}{result.get('fleet', '')}"


def answered(result: dict) -> str:
    value = result.get("answered_mean")
    return "-" if value is None else f"{value:.1f}"


def hits(result: dict) -> str:
    value = result.get("hit_rate")
    return "-" if value is None else f"{value * 100:.0f}"


def row(result: dict) -> list[str]:
    cpu = result["cpu_s_per_request"]
    return [result["route"], nodes(result), str(result["concurrency"]), f"{result['rps']:.1f}",
            *(f"{result[key]:.1f}" for key in ("p50_ms", "p99_ms", "max_ms")),
            str(result["errors"]), str(result["partial"]), answered(result), hits(result),
            *(f"{cpu.get(group, 0.0) * 1000:.2f}" for group in CPU_GROUPS)]


def table(results: list[dict]) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(row(result)) + " |" for result in results]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m bench.markdown RESULTS.json")
    run = json.loads(Path(sys.argv[1]).read_text())
    print(table([result for result in run["results"] if result["target"] == "local"]))


if __name__ == "__main__":
    main()
