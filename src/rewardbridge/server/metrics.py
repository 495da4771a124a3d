"""The server's Prometheus metrics, on a registry of its own (``GET /metrics``)."""

from __future__ import annotations


class Metrics:
    """Requests, errors and latency per route label; batch sizes, conversations scored, and the
    conversations of abandoned requests that were never scored."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("rewardbridge_requests", "HTTP requests", ["route", "status"], registry=self.registry)
        self.errors = Counter("rewardbridge_errors", "requests answered with an error", ["route", "status"], registry=self.registry)
        self.latency = Histogram("rewardbridge_request_latency_seconds", "request latency", ["route"], registry=self.registry)
        self.batch_size = Histogram(
            "rewardbridge_batch_size", "conversations per scorer call", registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
        )
        self.conversations = Counter("rewardbridge_conversations", "conversations scored", registry=self.registry)
        self.abandoned = Counter(
            "rewardbridge_abandoned_conversations", "conversations of requests whose client left, never scored", registry=self.registry,
        )
        self.body_bytes = Gauge("rewardbridge_body_bytes_in_flight", "request body bytes held (--max-body-bytes-in-flight)",
                                registry=self.registry)
        self._children: dict[tuple[str, int], tuple] = {}

    def count(self, route: str, status: int, seconds: float) -> None:
        """One answered request (the labelled children are looked up once per route and status)."""
        children = self._children.get((route, status))
        if children is None:
            code = str(status)
            children = (self.requests.labels(route, code), self.latency.labels(route),
                        self.errors.labels(route, code) if status >= 400 else None)
            self._children[(route, status)] = children
        requests, latency, errors = children
        requests.inc()
        latency.observe(seconds)
        if errors is not None:
            errors.inc()

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
