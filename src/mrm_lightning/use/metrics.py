"""What ``mrm serve`` is doing, for operators: ``GET /metrics`` in Prometheus' text format, and
one structured access-log line per request.

Metrics (each app has its own registry, so two servers in one process never mix counts):
``mrm_requests_total{endpoint, method, status}``, ``mrm_request_seconds{endpoint}`` (a latency
histogram), ``mrm_reward_items_total{scored_by}`` (``profile`` or ``prior``: how often
personalization actually reached the policy), ``mrm_model_calls_total`` (encoder calls; with
batching far fewer than requests). Endpoints are route templates (``/users/{user}``), never
raw paths. Access-log lines (logger ``mrm_lightning.use.access``, JSON) hold the method, route,
status and duration: never a text, a user's judgement or a key.
"""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.responses import Response

access_log = logging.getLogger("mrm_lightning.use.access")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ServerMetrics:
    """The counters of one app, and the middleware that fills them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mrm_requests", "HTTP requests answered", ["endpoint", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mrm_request_seconds", "time to answer a request", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.items = Counter(
            "mrm_reward_items", "items scored, by what scored them", ["scored_by"],
            registry=self.registry,
        )  # fmt: skip
        self.model_calls = Counter(
            "mrm_model_calls", "model scoring calls (batches)", registry=self.registry
        )

    def count_items(self, personalized: list[bool]) -> None:
        hits = sum(personalized)
        if hits:
            self.items.labels("profile").inc(hits)
        if len(personalized) - hits:
            self.items.labels("prior").inc(len(personalized) - hits)

    def record(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, method, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)
        access_log.info(
            json.dumps(
                {
                    "method": method,
                    "endpoint": endpoint,
                    "status": status,
                    "ms": round(seconds * 1e3, 2),
                }
            )  # fmt: skip
        )

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """ASGI middleware: each HTTP request's route, status and time into ``metrics`` (a plain
    ASGI layer: it passes the body through untouched, limits and all)."""

    def __init__(self, app, metrics: ServerMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")  # set by the router on this same scope when matched
            endpoint = getattr(route, "path", None) or "unmatched"
            self.metrics.record(scope["method"], endpoint, status, time.perf_counter() - started)
