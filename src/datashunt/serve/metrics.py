"""Prometheus metrics of one service (a registry of its own, so several apps never collide)."""

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """Requests by endpoint and status, items and chat completions by route, the share sent to the
    large model, latency, cost, cache hits and upstream errors."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "datashunt_requests", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.routes = Counter(
            "datashunt_routed_items",
            "Items (classify) and completions (chat) by route",
            ["endpoint", "route"],
            registry=r,
        )
        self.large_share = Gauge(
            "datashunt_large_share", "Share of items so far sent past the first stage", ["endpoint"], registry=r
        )
        self.latency = Histogram(
            "datashunt_request_seconds", "Time to answer a request", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.batch_items = Histogram(
            "datashunt_model_batch_items",
            "Items per call of the model (micro-batches)",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=r,
        )
        self.cost = Counter(
            "datashunt_cost", "Money spent on large-model calls (the backends' price units)", registry=r
        )
        self.cache_hits = Counter("datashunt_cache_hits", "Large-model answers served from the call cache", registry=r)
        self.upstream_errors = Counter(
            "datashunt_upstream_errors", "Failed calls to a large model or upstream", registry=r
        )
        self._seen, self._large = {}, {}

    def routed(self, endpoint: str, routes, sent_on) -> None:
        """Count the routes of answered items (``sent_on``: which went past the first stage) and
        update the large share."""
        for route, sent in zip(routes, sent_on):
            self.routes.labels(endpoint, route).inc()
            self._seen[endpoint] = self._seen.get(endpoint, 0) + 1
            self._large[endpoint] = self._large.get(endpoint, 0) + bool(sent)
        if self._seen.get(endpoint):
            self.large_share.labels(endpoint).set(self._large[endpoint] / self._seen[endpoint])

    def render(self) -> bytes:
        return generate_latest(self.registry)
