"""The control plane's Prometheus metrics (served by api/metrics.py at GET /metrics) and the middleware that
observes every request.

Counters and histograms count what this process saw: with several replicas, sum them. Gauges about the
database (queue depth, builds running, runners online) describe the whole installation, read when Prometheus
scrapes with store/fleet.py's two grouped queries and kept for a second, so scrapes in a burst cost one read:
with several replicas take their max, not their sum. Gauges about this process (polls held, the database
pool) are read from memory at scrape time.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from outpost.logformat import BUILD_ID
from outpost.server.models import Build
from outpost.server.security import now
from outpost.server.store import fleet
from outpost.wire import FINAL_BUILD_STATUSES

if TYPE_CHECKING:
    from outpost.server.services import Services

READ_EVERY = 1.0  # seconds a scrape's database read serves later scrapes
REMEMBERED = 10_000  # finished builds remembered, so a build told twice as finished counts once
DISPATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
WEBHOOK_OUTCOMES = ("build", "filtered", "ignored", "pending", "rejected", "replay")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
BUILD_PATH = re.compile(r"/builds/([0-9a-f]{32})(?:/|$)")  # a build id in a path (API, runner protocol, UI)


class ServerMetrics:
    """One per app: its own registry, so several apps in one process (tests) never share a count."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.builds_finished = Counter(
            "outpost_builds_finished", "Builds that reached a final status, by status.", ["status"], registry=registry
        )
        self.dispatch_latency = Histogram(
            "outpost_dispatch_latency_seconds",
            "From a build's creation to its first claim by a runner (time waiting in the queue included).",
            buckets=DISPATCH_BUCKETS,
            registry=registry,
        )
        self.log_bytes = Counter(
            "outpost_log_received_bytes", "Build log bytes received from runners.", registry=registry
        )
        self.webhooks = Counter(
            "outpost_webhook_deliveries", "Webhook deliveries answered, by outcome.", ["outcome"], registry=registry
        )
        self.http_requests = Counter(
            "outpost_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_duration = Histogram(
            "outpost_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route template (long polls wait by design).",
            ["method", "route"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )
        for status in sorted(FINAL_BUILD_STATUSES):  # present at 0, so rate() has a start
            self.builds_finished.labels(status)
        for outcome in WEBHOOK_OUTCOMES:
            self.webhooks.labels(outcome)
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        registry.register(_Live(self))
        self.services: Services | None = None  # set once the app has started
        self.runtimes: list[fleet.RuntimeCounts] = []
        self._read_at = -READ_EVERY
        self._reading = asyncio.Lock()
        self._finished: OrderedDict[str, None] = OrderedDict()

    # --- told by the code that sees it happen ---

    def build_changed(self, build: Build) -> None:
        """A build change was committed (Wakeups.build_changed): count it once if it finished."""
        if build.status not in FINAL_BUILD_STATUSES or build.id in self._finished:
            return
        self._finished[build.id] = None
        if len(self._finished) > REMEMBERED:
            self._finished.popitem(last=False)
        self.builds_finished.labels(build.status).inc()

    def claimed(self, build: Build) -> None:
        """A runner claimed the build. A requeued build's wait is not dispatch latency: only first claims."""
        if build.requeues == 0 and build.claimed_at is not None:
            self.dispatch_latency.observe(max(0.0, build.claimed_at - build.created_at))

    # --- scrape time ---

    async def refresh(self) -> None:
        """Reads the database gauges unless a read less than READ_EVERY seconds old can serve."""
        services = self.services
        if services is None:
            return
        async with self._reading:
            if time.monotonic() - self._read_at < READ_EVERY:
                return
            settings = services.settings
            online_since = now() - (settings.poll_timeout + settings.heartbeat_interval + 5)  # as the API's
            async with services.tx() as session:
                self.runtimes = await fleet.runtime_counts(session, online_since)
            self._read_at = time.monotonic()


class _Live(Collector):
    """The gauges read at scrape time: from the last database read, the dispatcher and the pool."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        labels = ["account", "runtime"]
        queued = GaugeMetricFamily("outpost_queue_depth", "Builds waiting in the queue, by runtime.", labels=labels)
        running = GaugeMetricFamily(
            "outpost_builds_running", "Builds claimed by or running on a runner, by runtime.", labels=labels
        )
        online = GaugeMetricFamily(
            "outpost_runners_online", "Runners heard from within a poll and a heartbeat, by runtime.", labels=labels
        )
        for row in self.metrics.runtimes:
            queued.add_metric([row.account, row.runtime], row.queued)
            running.add_metric([row.account, row.runtime], row.running)
            online.add_metric([row.account, row.runtime], row.runners_online)
        yield from (queued, running, online)
        services = self.metrics.services
        if services is None:
            return
        yield GaugeMetricFamily("outpost_polls_held", "Runner polls this process holds open.", services.wakeups.polls)
        yield GaugeMetricFamily(
            "outpost_polls_waiting",
            "Held polls waiting for work (not looking at the database).",
            services.wakeups.idle_polls,
        )
        pool = services.engine.sync_engine.pool
        size, checked_out = getattr(pool, "size", None), getattr(pool, "checkedout", None)
        if callable(size) and callable(checked_out):
            yield GaugeMetricFamily("outpost_db_pool_size", "Connections the database pool keeps.", size())
            yield GaugeMetricFamily(
                "outpost_db_pool_checked_out", "Database connections in use right now.", checked_out()
            )


class Observe:
    """ASGI middleware: counts and times every HTTP request by its route template (never its raw path, so an
    unknown path cannot grow the metrics), and names the build a request concerns on its log lines."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        found = BUILD_PATH.search(scope["path"])
        token = BUILD_ID.set(found.group(1)) if found else None
        try:
            await self.app(scope, receive, sending)
        finally:
            if token is not None:
                BUILD_ID.reset(token)
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = getattr(scope.get("route"), "path", None) or "unmatched"  # set by the router once matched
            self.metrics.http_requests.labels(method, route, str(status)).inc()
            self.metrics.http_duration.labels(method, route).observe(time.perf_counter() - started)
