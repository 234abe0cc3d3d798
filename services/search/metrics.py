"""What the search worker measures, on its own Prometheus registry."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from shared.metrics import LATENCY_BUCKETS, WorkerMetrics


class SearchMetrics(WorkerMetrics):
    """Searches by op, nodes asked and answered, dropped replies, coalescing, the cache."""

    def __init__(self) -> None:
        super().__init__("search")
        self.searches = Histogram(
            "grid_search_seconds", "Time from sending a query to its answer, by query op.",
            ["op"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.nodes = Counter("grid_search_nodes_total",
                             "Nodes asked, answered, and timed out across searches.",
                             ["outcome"], registry=self.registry)
        self.replies_dropped = Counter("grid_search_replies_dropped_total",
                                       "Node replies ignored, by reason.",
                                       ["reason"], registry=self.registry)
        self.coalesced = Counter("grid_search_coalesced_total",
                                 "Searches answered by an identical search already in flight.",
                                 registry=self.registry)
        self.overloaded = Counter("grid_search_overloaded_total",
                                  "Searches refused: no room in the node-query budget in time.",
                                  registry=self.registry)
        self.cache = Counter("grid_search_cache_total",
                             "Search look-ups in the answer cache: hit, miss, or uncacheable "
                             "(a live node reports no inventory version).",
                             ["outcome"], registry=self.registry)
