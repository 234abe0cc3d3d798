"""What one measured run produced, and the numbers derived from it."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Samples:
    """Raw observations of one run (kept small: the client shares the machine)."""

    latencies_s: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    exceptions: Counter = field(default_factory=Counter)
    asked: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    partial: int = 0  # 2xx search answers from fewer nodes than were asked
    hits: int = 0  # search answers from the search worker's cache (X-Grid-Cache: hit)
    checked: int = 0
    mismatches: int = 0

    @property
    def errors(self) -> int:
        bad = sum(n for status, n in self.statuses.items() if not 200 <= status < 300)
        return bad + sum(self.exceptions.values())


def percentile(ordered: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 3)


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


@dataclass
class RunResult:
    target: str
    route: str
    nodes: int | None
    hung: int
    concurrency: int
    fleet: str  # "" or "nv": nodes that announce no inventory version
    requests: int
    elapsed_s: float
    rps: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    mean_ms: float | None
    errors: int
    statuses: dict[str, int]
    exceptions: dict[str, int]
    partial: int
    checked: int
    mismatches: int
    asked_mean: float | None
    answered_mean: float | None
    hit_rate: float | None  # share of search answers from the cache
    cpu_s_per_request: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarise(samples: Samples, elapsed_s: float, cpu: dict[str, float | None],
              **labels: Any) -> RunResult:
    ordered = sorted(samples.latencies_s)
    count = len(ordered)
    return RunResult(
        **labels,
        requests=count,
        elapsed_s=round(elapsed_s, 3),
        rps=round(count / elapsed_s, 2) if elapsed_s > 0 else 0.0,
        p50_ms=_ms(percentile(ordered, 50)),
        p90_ms=_ms(percentile(ordered, 90)),
        p99_ms=_ms(percentile(ordered, 99)),
        max_ms=_ms(ordered[-1] if ordered else None),
        mean_ms=_ms(sum(ordered) / count if count else None),
        errors=samples.errors,
        statuses={str(k): v for k, v in sorted(samples.statuses.items())},
        exceptions=dict(samples.exceptions),
        partial=samples.partial,
        checked=samples.checked,
        mismatches=samples.mismatches,
        asked_mean=_mean(samples.asked),
        answered_mean=_mean(samples.answered),
        hit_rate=round(samples.hits / len(samples.asked), 3) if samples.asked else None,
        cpu_s_per_request={k: None if v is None else round(v, 6) for k, v in cpu.items()},
    )
