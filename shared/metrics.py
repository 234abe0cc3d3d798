"""Prometheus metrics: one registry per process (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class WorkerMetrics:
    """What every worker measures: the requests it handled, by operation and outcome."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        self.messages = Histogram(
            "grid_worker_message_seconds",
            "Time to handle one request message, by operation and outcome.",
            ["service", "op", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.poison = Counter(
            "grid_worker_poison_messages_total",
            "Messages rejected to the dead-letter queue.",
            ["service"],
            registry=self.registry,
        )
        self.refused = Counter(
            "grid_worker_refused_requests_total",
            "Requests dead-lettered unanswered: not from one of the gateway's broker users "
            "(secure mode).",
            ["service", "op"],
            registry=self.registry,
        )
        self.service = service

    def observe_message(self, op: str, outcome: str, seconds: float) -> None:
        self.messages.labels(self.service, op or "-", outcome).observe(seconds)
        if outcome == "poison":
            self.poison.labels(self.service).inc()
        elif outcome == "refused":
            self.refused.labels(self.service, op or "-").inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        """Expose /metrics on ``port`` (0: off)."""
        if port:
            start_http_server(port, addr=host, registry=self.registry)
