"""The runner's Prometheus metrics, served only when asked (`outpost runner start --metrics-listen HOST:PORT`).

Without that option the runner opens no listening socket at all (DESIGN's first promise) and never imports
this module. With it, one small HTTP endpoint on the runner's own event loop answers `GET /metrics`: no
thread, so the gauges read the runner's state between two of its steps, never halfway through one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, ProcessCollector, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from outpost.errors import OutpostError
from outpost.runner.client import CallObserver
from outpost.runner.job import BuildJob

if TYPE_CHECKING:
    from outpost.runner.agent import Runner

log = logging.getLogger("outpost.runner.metrics")
DEFAULT_HOST = "127.0.0.1"  # loopback unless told otherwise
MAX_REQUEST = 8192  # bytes of request line and headers read before an answer
READ_TIMEOUT = 10.0  # seconds a client gets to send its request


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT, [IPv6]:PORT or PORT alone (on loopback)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = DEFAULT_HOST, value
    host = host.strip("[]") or DEFAULT_HOST
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise OutpostError(f"--metrics-listen {value!r}: expected HOST:PORT, such as 127.0.0.1:9252")
    return host, int(port)


class RunnerMetrics(CallObserver):
    """Counts what the runner's protocol client tells it; reads the runner's builds and outboxes at scrape time."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.polls = Counter(
            "outpost_runner_polls", "Polls, by result: tasks, empty or failed.", ["result"], registry=registry
        )
        self.reports = Counter(
            "outpost_runner_reports",
            "Reports (logs, step states, the finish) sent, by result: sent or failed.",
            ["result"],
            registry=registry,
        )
        self.log_bytes = Counter(
            "outpost_runner_log_sent_bytes", "Build log bytes the control plane accepted.", registry=registry
        )
        self.renewals = Counter(
            "outpost_runner_lease_renewals",
            "Lease renewals (heartbeats), by result: ok or failed.",
            ["result"],
            registry=registry,
        )
        for result in ("tasks", "empty", "failed"):
            self.polls.labels(result)
        for result in ("sent", "failed"):
            self.reports.labels(result)
        for result in ("ok", "failed"):
            self.renewals.labels(result)
        ProcessCollector(registry=registry)
        self.runner: Runner | None = None
        registry.register(_RunnerState(self))

    # --- CallObserver ---

    def polled(self, result: str) -> None:
        self.polls.labels(result).inc()

    def reported(self, ok: bool, log_bytes: int) -> None:
        self.reports.labels("sent" if ok else "failed").inc()
        if ok:
            self.log_bytes.inc(log_bytes)

    def renewed(self, ok: bool) -> None:
        self.renewals.labels("ok" if ok else "failed").inc()

    # --- serving ---

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """Listens on host:port; the caller closes the server when the runner stops."""
        try:
            server = await asyncio.start_server(self._answer, host, port, reuse_address=True)
        except OSError as exc:
            raise OutpostError(f"--metrics-listen {host}:{port}: cannot listen: {exc.strerror}") from None
        bound = server.sockets[0].getsockname()
        log.info("metrics on http://%s:%d/metrics", *bound[:2])
        return server

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request per connection: GET /metrics, 404 for any other path, 405 for any other method."""
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path, version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
            if not version.startswith("HTTP/"):
                return  # not HTTP: hung up on, nothing said
            if method not in ("GET", "HEAD"):
                status, body, kind = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
            elif path.split("?", 1)[0] != "/metrics":
                status, body, kind = "404 Not Found", b"GET /metrics\n", "text/plain"
            else:
                status, body, kind = "200 OK", self.exposition(), CONTENT_TYPE_LATEST
            header = f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}\r\n"
            writer.write((header + "Connection: close\r\n\r\n").encode() + (body if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a client that sends no request, or a malformed one, is hung up on
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


class _RunnerState(Collector):
    def __init__(self, metrics: RunnerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        runner = self.metrics.runner
        if runner is None:
            return
        every = [job for job, _ in runner.jobs.values()]
        yield GaugeMetricFamily("outpost_runner_builds_running", "Builds this runner runs now.", len(every))
        jobs = [job for job in every if isinstance(job, BuildJob)]  # an engine pod's outbox is its own
        yield GaugeMetricFamily(
            "outpost_runner_slots_free", "Builds this runner could take now.", max(0, runner.free_slots)
        )
        yield GaugeMetricFamily(
            "outpost_runner_outbox_bytes",
            "Log bytes written to the builds' on-disk outboxes and not yet accepted by the control plane.",
            sum(job.outbox.unsent_bytes for job in jobs),
        )
        yield GaugeMetricFamily(
            "outpost_runner_outbox_events",
            "Step and build state changes in the outboxes not yet accepted by the control plane.",
            sum(job.outbox.unsent_events for job in jobs),
        )
