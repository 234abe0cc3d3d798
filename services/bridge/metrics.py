"""What the bridge measures: HTTP calls by route and outcome, broadcasts, replies, heartbeats."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS, WorkerMetrics

# Outcomes of one HTTP call to a node.
OK = "ok"                # a valid answer
MALFORMED = "malformed"  # answered, but not JSON or not the route's shape
STATUS = "status"        # answered with an HTTP status that is no answer (500, 400, ...)
TIMEOUT = "timeout"      # no whole answer within the deadline
REFUSED = "refused"      # could not connect
ERROR = "error"          # the connection broke midway, or the address is no URL


class BridgeMetrics(WorkerMetrics):
    def __init__(self) -> None:
        super().__init__("bridge")
        self.calls = Counter("grid_bridge_calls_total",
                             "HTTP calls to bridged nodes, by route and outcome.",
                             ["route", "outcome"], registry=self.registry)
        self.call_seconds = Histogram("grid_bridge_call_seconds",
                                      "Time of one HTTP call to a node, by route and outcome.",
                                      ["route", "outcome"], buckets=LATENCY_BUCKETS,
                                      registry=self.registry)
        self.broadcasts = Counter("grid_bridge_broadcasts_total",
                                  "Broadcasts taken from the bridge queue, by outcome.",
                                  ["outcome"], registry=self.registry)
        self.replies = Counter("grid_bridge_replies_total",
                               "Node replies sent on behalf of bridged nodes.",
                               registry=self.registry)
        self.heartbeats = Counter("grid_bridge_heartbeats_total",
                                  "Heartbeats sent on behalf of bridged nodes.",
                                  registry=self.registry)

    def observe_call(self, route: str, outcome: str, seconds: float) -> None:
        self.calls.labels(route, outcome).inc()
        self.call_seconds.labels(route, outcome).observe(seconds)

    def count_nodes(self, bridged: Callable[[], int], answering: Callable[[], int]) -> None:
        """Gauges read at scrape time: nodes spoken for, and those of them live."""
        Gauge("grid_bridge_nodes", "Registered HTTP-only nodes this bridge speaks for.",
              registry=self.registry).set_function(bridged)
        Gauge("grid_bridge_live_nodes",
              "Bridged nodes heard within the TTL (the ones broadcasts call).",
              registry=self.registry).set_function(answering)
