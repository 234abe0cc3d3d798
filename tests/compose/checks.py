"""What the compose tests look at: the broker's management API, metrics inside containers,
the PostgreSQL container, and a load of distinct searches."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.compose.stack import Stack

CREDENTIALS = ("grid", "grid")  # the compose file's broker user
METRICS_PROBE = ("import sys,urllib.request as u;"
                 "sys.stdout.write(u.urlopen(sys.argv[1],timeout=5).read().decode())")


def management(stack: Stack, variable: str) -> httpx.Client:
    """A client of the management API published on the host port ``variable`` names."""
    return httpx.Client(base_url=stack.url(variable), auth=CREDENTIALS, timeout=10)


def consumers(client: httpx.Client, queue: str) -> int:
    """How many consumers the broker counts on ``queue`` of the default vhost."""
    response = client.get(f"/api/queues/%2F/{queue}")
    response.raise_for_status()
    return response.json().get("consumers", 0)  # absent until the first stats after a start


def metric_total(text: str, name: str) -> float:
    """The sum of every sample of ``name`` (all labels) in Prometheus text."""
    total = 0.0
    for line in text.splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] == name:
            total += float(value)
    return total


def container_metric(stack: Stack, container: str, port: int, name: str) -> float:
    """A metric's total as a container serves it on its own 127.0.0.1:``port``/metrics."""
    text = stack.exec(container, "python", "-c", METRICS_PROBE,
                      f"http://127.0.0.1:{port}/metrics")
    return metric_total(text, name)


def psql(stack: Stack, sql: str) -> list[str]:
    """Rows (one string each) of a query run in the postgres container as the grid user."""
    (container,) = stack.ids("postgres")
    return stack.exec(container, "psql", "-U", "grid", "-d", "grid", "-Atc", sql).splitlines()


class SearchLoad:
    """Distinct searches (an unknown model each: the answer is []) sent without pause by a
    few threads until stopped; every outcome is kept: a status code or an exception's name."""

    def __init__(self, base_url: str, threads: int = 4) -> None:
        self.base_url = base_url
        self.outcomes: Counter[str] = Counter()
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=threads)
        self._futures = [self._pool.submit(self._run) for _ in range(threads)]

    def count(self) -> int:
        with self._lock:
            return sum(self.outcomes.values())

    def stop(self) -> Counter[str]:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=60)
        self._pool.shutdown()
        return self.outcomes

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self._stop.is_set():
                self._record(client)

    def _record(self, client: httpx.Client) -> None:
        model = f"absent-{uuid.uuid4().hex}"
        try:
            response = client.post("/search-model", json={"model_id": model})
            outcome = str(response.status_code)
            if response.status_code == 200 and response.json() != []:
                self.wrong.append(f"{model}: {response.text}")
        except httpx.HTTPError as exc:
            outcome = type(exc).__name__
        with self._lock:
            self.outcomes[outcome] += 1
