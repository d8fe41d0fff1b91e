"""The runner's side of protocol v1: one method per endpoint, errors turned into our own.

Only outgoing HTTP(S): httpx honours HTTPS_PROXY, NO_PROXY and SSL_CERT_FILE from the environment.
"""

from __future__ import annotations

import asyncio
import base64
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from outpost import __version__
from outpost.errors import LeaseLost, ProtocolError
from outpost.wire import (
    LEASE_HEADER,
    PREFIX,
    REPORT_CONTENT_TYPE,
    REPORTS_IN_FLIGHT_HEADER,
    ArtifactAccepted,
    BuildFinished,
    BuildStarted,
    ClusterCheckAnswer,
    GitQueryAnswer,
    HeartbeatResponse,
    JUnitReport,
    LateLogs,
    LogAppend,
    PollRequest,
    PollResponse,
    RegisterRequest,
    RegisterResponse,
    Report,
    ReportAccepted,
    RunBuildTask,
    StepReport,
    StepUpdate,
    encode_report,
)

T = TypeVar("T")


class Unreachable(ProtocolError):
    """The control plane could not be reached or answered 5xx: try again later (after `retry_after` seconds,
    if it said so: a 503 from an overloaded control plane)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Refused(ProtocolError):
    """The control plane refused the request for good (4xx other than fencing)."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{status}: {message}")


class TooLarge(Refused):
    """413: the control plane takes fewer log bytes a request than we sent (its OUTPOST_MAX_LOG_CHUNK was lowered
    after this runner registered, or a replica has another). `max_bytes`: what it says it takes, if it says."""

    def __init__(self, message: str, max_bytes: int | None) -> None:
        self.max_bytes = max_bytes
        super().__init__(413, message)


class Revoked(ProtocolError):
    """The control plane refused the runner token or a job token (401): this runner was revoked. Not a lost
    lease to work around: the runner stops every build, removes their folders and exits."""


class OffsetGap(ProtocolError):
    def __init__(self, stream: str, expected: int) -> None:
        self.stream, self.expected = stream, expected
        super().__init__(f"the control plane expects offset {expected} of log {stream!r}")


class Backoff:
    """Exponential backoff with full jitter, capped."""

    def __init__(self, first: float = 0.2, cap: float = 10.0) -> None:
        self.first, self.cap, self.attempt = first, cap, 0

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.first * 2**self.attempt)
        self.attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    async def sleep(self) -> None:
        await asyncio.sleep(self.next_delay())


async def retrying(call: Callable[[], Awaitable[T]], *, deadline: float | None = None) -> T:
    """Repeats `call` while the control plane is unreachable, until `deadline` (loop time), if any."""
    backoff = Backoff()
    loop = asyncio.get_running_loop()
    while True:
        try:
            return await call()
        except Unreachable:
            delay = backoff.next_delay()
            if deadline is not None and loop.time() + delay > deadline:
                raise
            await asyncio.sleep(delay)


class CallObserver:
    """Told how the client's calls went (runner/metrics.py counts them); this base listens to nothing."""

    def polled(self, result: str) -> None:
        """A poll brought `tasks`, came back `empty`, or `failed`."""

    def reported(self, ok: bool, log_bytes: int) -> None:
        """A report (or late logs) with `log_bytes` bytes of log was accepted, or not."""

    def renewed(self, ok: bool) -> None:
        """A heartbeat renewed the lease, or not."""


class ProtocolClient:
    def __init__(
        self, url: str, *, transport: httpx.AsyncBaseTransport | None = None, observer: CallObserver | None = None
    ) -> None:
        self.observer = observer or CallObserver()
        self.url = url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.url + PREFIX,
            timeout=httpx.Timeout(15.0, read=20.0),
            headers={"User-Agent": f"outpost-runner/{__version__}"},
            transport=transport,
            trust_env=True,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
        )
        self._max_tasks = True  # the control plane takes `max_tasks` in a poll (until it refuses it)
        self.raw_reports = True  # reports carry log bytes raw (until the control plane refuses one)
        self.reports_in_flight = 1  # reports of one build the control plane takes at once (its answers say)
        self.started_in_reports = True  # a build's first report carries its `started` (until one is refused)
        # Log bytes a report may carry, once a 413 said fewer than the registration did (Outbox._shrink).
        self.max_report_bytes: int | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, *, fenced: bool = False, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise Unreachable(f"{method} {path}: {response.status_code}", _retry_after(response))
        if response.status_code == 401 and "Authorization" in kwargs.get("headers", {}):
            raise Revoked(_message(response))  # a runner or job token refused (registration sends none)
        if fenced and response.status_code in (404, 409):
            raise LeaseLost(_message(response))
        if response.status_code == 416:
            body = response.json()
            raise OffsetGap(str(body.get("stream", "")), int(body["expected_offset"]))
        if response.status_code == 413:
            raise TooLarge(_message(response), _max_bytes(response))
        if response.status_code >= 400:
            raise Refused(response.status_code, _message(response))
        return response

    # --- runner-scoped calls ---

    async def register(self, request: RegisterRequest) -> RegisterResponse:
        response = await self._send("POST", "/register", json=request.model_dump())
        return RegisterResponse.model_validate(response.json())

    async def poll(self, runner_token: str, request: PollRequest) -> PollResponse:
        """One poll. `max_tasks` is dropped for good if the control plane refuses it (the previous version)."""
        if not self._max_tasks:
            request = request.model_copy(update={"max_tasks": None})
        try:
            try:
                response = await self._poll(runner_token, request)
            except Refused as exc:
                if exc.status != 422 or request.max_tasks is None or "max_tasks" not in str(exc):
                    raise
                self._max_tasks = False
                response = await self._poll(runner_token, request.model_copy(update={"max_tasks": None}))
        except ProtocolError:
            self.observer.polled("failed")
            raise
        answer = PollResponse() if response.status_code == 204 else PollResponse.model_validate(response.json())
        self.observer.polled("tasks" if answer.all() else "empty")
        return answer

    async def _poll(self, runner_token: str, request: PollRequest) -> httpx.Response:
        return await self._send(
            "POST",
            "/poll",
            json=request.model_dump(exclude_none=True),
            headers=_bearer(runner_token),
            timeout=httpx.Timeout(15.0, read=request.wait + 15.0),
        )

    async def answer_git_query(self, runner_token: str, query_id: str, answer: GitQueryAnswer) -> None:
        await self._send(
            "POST",
            f"/git-queries/{query_id}/answer",
            content=answer.model_dump_json(exclude_none=True),
            headers={**_bearer(runner_token), "Content-Type": "application/json"},
        )

    async def answer_cluster_check(self, runner_token: str, query_id: str, answer: ClusterCheckAnswer) -> None:
        await self._send(
            "POST",
            f"/cluster-checks/{query_id}/answer",
            content=answer.model_dump_json(exclude_none=True),
            headers={**_bearer(runner_token), "Content-Type": "application/json"},
        )

    # --- build-scoped calls: authenticated by the job token, fenced by the lease ---

    def _job_headers(self, task: RunBuildTask) -> dict[str, str]:
        return {**_bearer(task.job_token), LEASE_HEADER: task.lease_id}

    async def heartbeat(self, task: RunBuildTask) -> HeartbeatResponse:
        try:
            response = await self._send(
                "POST", f"/builds/{task.build_id}/heartbeat", fenced=True, headers=self._job_headers(task)
            )
        except ProtocolError:
            self.observer.renewed(False)
            raise
        self.observer.renewed(True)
        return HeartbeatResponse.model_validate(response.json())

    async def started(self, task: RunBuildTask, message: BuildStarted) -> None:
        await self._send(
            "POST",
            f"/builds/{task.build_id}/started",
            fenced=True,
            json=message.model_dump(),
            headers=self._job_headers(task),
        )

    async def report(
        self,
        task: RunBuildTask,
        logs: list[tuple[str, int, bytes]],
        steps: list[tuple[str, StepUpdate]],
        finish: BuildFinished | None = None,
        started: BuildStarted | None = None,
    ) -> dict[str, int]:
        """`started` (the build's first report), log appends (stream, offset, bytes), step updates and the finish,
        applied all or nothing."""
        if started is not None and not self.started_in_reports:
            await self.started(task, started)
            started = None
        reported = [StepReport(name=name, update=update) for name, update in steps]
        if self.raw_reports:  # the log bytes as they are, after a JSON head (wire.ReportHead)
            content, kind = encode_report(logs, reported, finish, started), REPORT_CONTENT_TYPE
        else:
            body = Report(
                started=started,
                logs=[LogAppend(stream=s, offset=o, data=base64.b64encode(d).decode()) for s, o, d in logs],
                steps=reported,
                finish=finish,
            )
            content, kind = body.model_dump_json(exclude_none=True).encode(), "application/json"
        try:
            response = await self._reporting(
                logs,
                "POST",
                f"/builds/{task.build_id}/report",
                fenced=True,
                content=content,
                headers={**self._job_headers(task), "Content-Type": kind},
            )
        except Refused as exc:
            if exc.status != 422:
                raise
            # A control plane from before `started` in reports refuses the field (422): `POST /started` from then
            # on. One from before raw reports reads every report as JSON and answers a raw one 422: JSON from then
            # on. The first report of a build may meet both, one after the other.
            if started is not None:
                self.started_in_reports = False
            elif self.raw_reports:
                self.raw_reports = False
            else:
                raise
            return await self.report(task, logs, steps, finish, started)
        self.reports_in_flight = _in_flight(response)
        return ReportAccepted.model_validate(response.json()).sizes

    async def annotations(self, task: RunBuildTask, report: JUnitReport) -> None:
        """The test cases of a step's JUnit reports (replacing what it sent before)."""
        await self._send(
            "POST",
            f"/builds/{task.build_id}/annotations",
            fenced=True,
            content=report.model_dump_json(exclude_none=True),
            headers={**self._job_headers(task), "Content-Type": "application/json"},
        )

    async def upload_artifact(
        self, task: RunBuildTask, step: str, path: str, file: Path, size: int
    ) -> ArtifactAccepted:
        """A file a step marked, streamed from disk as the raw body with its length declared (the control plane
        writes it to disk as it comes and refuses it past its limit before reading it)."""

        async def chunks() -> AsyncIterator[bytes]:
            with file.open("rb") as source:
                while chunk := source.read(256 * 1024):
                    yield chunk

        response = await self._send(
            "PUT",
            f"/artifacts/{task.build_id}",
            fenced=True,
            params={"step": step, "path": path},
            content=chunks(),
            headers={
                **self._job_headers(task),
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
            },
            timeout=httpx.Timeout(15.0, read=120.0, write=120.0),
        )
        return ArtifactAccepted.model_validate(response.json())

    async def late_logs(self, task: RunBuildTask, logs: list[tuple[str, int, bytes]]) -> dict[str, int]:
        """Log bytes of a build whose lease expired: each stream's size afterwards (409 is `Refused` here)."""
        body = LateLogs(logs=[LogAppend(stream=s, offset=o, data=base64.b64encode(d).decode()) for s, o, d in logs])
        response = await self._reporting(
            logs,
            "POST",
            f"/builds/{task.build_id}/late-logs",
            content=body.model_dump_json(),
            headers={**self._job_headers(task), "Content-Type": "application/json"},
        )
        return ReportAccepted.model_validate(response.json()).sizes

    async def _reporting(self, logs: list[tuple[str, int, bytes]], *args: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self._send(*args, **kwargs)
        except ProtocolError:
            self.observer.reported(False, 0)
            raise
        self.observer.reported(True, sum(len(data) for _, _, data in logs))
        return response


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _in_flight(response: httpx.Response) -> int:
    """What a report's answer says about reports in flight: one from a control plane that says nothing."""
    value = response.headers.get(REPORTS_IN_FLIGHT_HEADER, "1")
    return max(1, int(value)) if value.isdigit() else 1


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by the control plane); None if absent or odd."""
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    return min(max(seconds, 0.0), 300.0)


def _max_bytes(response: httpx.Response) -> int | None:
    """The `max_bytes` of a 413's body, if it is a positive whole number."""
    try:
        value = response.json().get("max_bytes")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("message") or body)
    return str(body)
